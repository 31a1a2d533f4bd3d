"""Drift: found on a planted shift, not on a resample of the same data."""

from __future__ import annotations

import numpy as np

from recsys.monitor.drift import categorical_counts, compare, js_distance, numeric_counts, psi


def _frame(spark, values, countries):
    return spark.createDataFrame([(float(v), c) for v, c in zip(values, countries, strict=True)],
                                 "plays double, country string")


def test_shift_is_flagged_and_a_resample_is_not(spark):
    rng = np.random.default_rng(4)
    n = 4000
    countries = ["DE", "FR", "US", "SE"]
    reference = _frame(spark, rng.lognormal(3, 1, n), rng.choice(countries, n, p=[.4, .3, .2, .1]))
    resample = _frame(spark, rng.lognormal(3, 1, n), rng.choice(countries, n, p=[.4, .3, .2, .1]))
    shifted = _frame(spark, rng.lognormal(3.6, 1, n), rng.choice(countries, n, p=[.1, .2, .3, .4]))
    for column, counts in (("plays", lambda a, b: numeric_counts(a, b, "plays", 10)),
                           ("country", lambda a, b: categorical_counts(a, b, "country"))):
        _, r, same = counts(reference, resample)
        _, r2, moved = counts(reference, shifted)
        stable, drifted = compare(column, "data", r, same, 0.2, 0.1), compare(column, "data", r2, moved, 0.2, 0.1)
        assert not stable.alert and stable.psi < 0.05, stable
        assert drifted.alert and drifted.psi > 0.2, drifted


def test_distances_on_known_distributions():
    assert psi([50, 50], [50, 50]) == 0.0 and js_distance([1, 0], [0, 1]) == 1.0
    # PSI of (0.5, 0.5) -> (0.7, 0.3): 0.2 ln(1.4) + (-0.2) ln(0.6)
    assert abs(psi([50, 50], [70, 30]) - (0.2 * np.log(1.4) - 0.2 * np.log(0.6))) < 1e-3
    assert np.isfinite(psi([10, 0], [5, 5]))  # an empty reference bin stays finite
