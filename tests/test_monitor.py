"""Drift: found on a planted shift, not on a resample of the same data; the event mix compared over
the windows the gold builds read."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
from pyspark.sql import functions as F

from recsys import lake
from recsys.monitor.build import compared_events
from recsys.monitor.drift import categorical_counts, compare, js_distance, numeric_counts, psi
from recsys.tables import GOLD_BUILDS, SILVER_EVENTS
from tests.conftest import declared_frame


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


def test_the_event_mix_compares_the_builds_windows_so_history_does_not_dilute_a_shift(spark, cfg):
    """60 days of 1 like in 10 events, then 10 days of 6: the mix moved, and the two 10-day windows
    the builds read show it; all of silver at the two versions hides it behind the 60 days before.
    """
    cfg = dataclasses.replace(cfg, gold=dataclasses.replace(cfg.gold, feature_window_days=10))
    path, start = SILVER_EVENTS.path(cfg.lake), datetime(2026, 10, 1)

    def days(first: int, n: int, likes: int):
        rows = [(f"e{d}-{i}", "like" if i < likes else "play", start + timedelta(days=d, hours=12))
                for d in range(first, first + n) for i in range(10)]
        frame = spark.createDataFrame(rows, "event_id string, event_type string, event_time timestamp")
        return declared_frame(frame.withColumn("event_date", F.to_date("event_time")), SILVER_EVENTS)

    versions = []
    for first, n, likes in ((0, 60, 1), (60, 10, 6)):
        lake.append(days(first, n, likes), path)
        versions.append(lake.current_version(spark, path))
    builds = [(f"b{i}", start + timedelta(days=60 + 10 * i), start, {"silver/events": v}, {"gold/interactions": 1 + i})
              for i, v in enumerate(versions)]
    lake.append(spark.createDataFrame(builds, GOLD_BUILDS.schema), GOLD_BUILDS.path(cfg.lake))
    ref, cur = ({"gold/interactions": 1 + i, "silver/events": v} for i, v in enumerate(versions))

    def mix(reference, current):
        _, r, c = categorical_counts(reference, current, "event_type")
        return compare("event_type_mix", "data", r, c, cfg.monitor.psi_threshold, cfg.monitor.js_threshold)

    events_ref, events_cur, read = compared_events(spark, cfg, ref, cur)
    assert read == "the builds' windows [2026-11-20 00:00, 2026-11-30 00:00) and [2026-11-30 00:00, 2026-12-10 00:00)"
    windows, whole = mix(events_ref, events_cur), mix(*(lake.read(spark, path, version=v) for v in versions))
    assert (events_ref.count(), events_cur.count()) == (100, 100)
    assert windows.alert and windows.psi > 1.0, windows
    assert not whole.alert and whole.psi < 0.05, whole
