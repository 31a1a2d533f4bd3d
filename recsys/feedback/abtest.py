"""A/B statistics on click-through: small numbers in, a decision out (scipy, no Spark).

- CTR per variant with a Wilson score interval (good near 0 and with few impressions);
- the difference treatment - control with a two-proportion z-test (pooled standard error for
  the test, unpooled for the interval);
- sample-ratio mismatch: a chi-square test of assigned users against the configured split; a
  p-value below `srm_alpha` means the assignment or logging is broken and the result is void;
- the minimum detectable effect: the absolute CTR difference this much traffic detects with
  power `power` at level `alpha` (two-sided), given the control's CTR.
Impressions are treated as independent trials; they cluster by user, so intervals are somewhat
optimistic when a few users see many impressions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class VariantStats:
    """Impressions, clicks and CTR of one variant, with its Wilson interval."""
    variant: str
    users: int
    impressions: int
    clicks: int
    ctr: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class AbResult:
    """A two-variant CTR comparison: difference with interval, z-test, sample-ratio check, detectable effect."""
    control: str
    treatment: str
    variants: list[VariantStats]
    difference: float          # treatment CTR - control CTR
    diff_ci_low: float
    diff_ci_high: float
    z: float
    p_value: float
    significant: bool
    srm_chi2: float
    srm_p_value: float
    srm: bool                  # sample-ratio mismatch detected: do not trust the result
    mde: float                 # absolute CTR difference detectable with this traffic
    alpha: float


def wilson(clicks: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a click-through rate at level `alpha`; (0, 1) with no impressions."""
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = clicks / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def two_proportions(c1: int, n1: int, c2: int, n2: int, alpha: float = 0.05
                    ) -> tuple[float, float, float, float, float]:
    """(p2 - p1, z, two-sided p-value, CI low, CI high) for the second proportion against the first."""
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se if se > 0 else 0.0
    p_value = 2 * stats.norm.sf(abs(z))
    se_diff = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = float(stats.norm.ppf(1 - alpha / 2)) * se_diff
    return p2 - p1, z, float(p_value), p2 - p1 - half, p2 - p1 + half


def sample_ratio(observed: Mapping[str, int], shares: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square statistic and p-value of observed counts against expected shares."""
    names = sorted(shares)
    total = sum(observed.get(n, 0) for n in names)
    if total == 0:
        return 0.0, 1.0
    weight = sum(shares.values())
    expected = [total * shares[n] / weight for n in names]
    chi2, p = stats.chisquare([observed.get(n, 0) for n in names], expected)
    return float(chi2), float(p)


def minimum_detectable_effect(p: float, n1: int, n2: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest absolute CTR difference detectable with these sample sizes, level and power."""
    if n1 == 0 or n2 == 0:
        return float("inf")
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return z * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


def analyze(counts: Mapping[str, tuple[int, int, int]], shares: Mapping[str, float], control: str, treatment: str,
            alpha: float = 0.05, power: float = 0.8, srm_alpha: float = 0.001) -> AbResult:
    """`counts`: variant -> (users, impressions, clicks); `shares`: variant -> configured share."""
    variants = []
    for name in sorted(counts):
        users, n, c = counts[name]
        low, high = wilson(c, n, alpha)
        variants.append(VariantStats(name, users, n, c, c / n if n else 0.0, low, high))
    (_, n1, c1), (_, n2, c2) = counts[control], counts[treatment]
    diff, z, p_value, low, high = two_proportions(c1, n1, c2, n2, alpha) if n1 and n2 else (0.0, 0.0, 1.0, 0.0, 0.0)
    chi2, srm_p = sample_ratio({k: v[0] for k, v in counts.items()}, shares)
    mde = minimum_detectable_effect(c1 / n1 if n1 else 0.0, n1, n2, alpha, power)
    return AbResult(control, treatment, variants, diff, low, high, z, p_value, p_value < alpha, chi2, srm_p,
                    srm_p < srm_alpha, mde, alpha)
