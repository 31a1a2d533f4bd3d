"""Distribution distances between a reference and a current snapshot, computed from Spark counts.

- Population stability index: sum over bins of (c - r) * ln(c / r), with proportions floored
  at 1e-4 so empty bins stay finite. Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 shifted.
- Jensen-Shannon distance (base 2, so in [0, 1]): the square root of the JS divergence.
Numeric columns are binned at the reference's quantiles (`monitor.bins`), so each reference bin
holds about the same share and a shift shows up as mass moving between bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon

FLOOR = 1e-4


@dataclass(frozen=True)
class Check:
    """One drift check: PSI and Jensen-Shannon distance between reference and current, and whether it alerts."""
    name: str
    kind: str          # data | feature | prediction | model
    psi: float
    js: float
    alert: bool
    detail: str = ""


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    p = counts / total if total else np.full(len(counts), 1 / max(len(counts), 1))
    return np.clip(p, FLOOR, None) / np.clip(p, FLOOR, None).sum()


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two histograms over the same bins."""
    r, c = _proportions(np.asarray(reference, float)), _proportions(np.asarray(current, float))
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, 0..1) between two histograms over the same bins."""
    r, c = np.asarray(reference, float), np.asarray(current, float)
    if r.sum() == 0 or c.sum() == 0:
        return 0.0 if r.sum() == c.sum() else 1.0
    return float(jensenshannon(r / r.sum(), c / c.sum(), base=2))


def categorical_counts(reference: DataFrame, current: DataFrame, column: Column | str
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts per category (union of both sides' categories, NULL as `(null)`)."""
    value = F.coalesce((F.col(column) if isinstance(column, str) else column).cast("string"), F.lit("(null)"))
    ref = {r[0]: r[1] for r in reference.groupBy(value.alias("v")).count().collect()}
    cur = {r[0]: r[1] for r in current.groupBy(value.alias("v")).count().collect()}
    labels = sorted(set(ref) | set(cur))
    return labels, np.array([ref.get(k, 0) for k in labels]), np.array([cur.get(k, 0) for k in labels])


def numeric_counts(reference: DataFrame, current: DataFrame, column: str, bins: int
                   ) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Counts per reference-quantile bin (edges returned; the outer bins are open)."""
    probs = [i / bins for i in range(1, bins)]
    edges = sorted(set(reference.approxQuantile(column, probs, 0.001)))

    def counts(df: DataFrame) -> np.ndarray:
        x = F.col(column).cast("double")
        bucket = F.lit(0)
        for edge in edges:
            bucket = bucket + (x > F.lit(edge)).cast("int")
        got = {r[0]: r[1] for r in df.filter(x.isNotNull()).groupBy(bucket.alias("b")).count().collect()}
        return np.array([got.get(i, 0) for i in range(len(edges) + 1)])

    return edges, counts(reference), counts(current)


def compare(name: str, kind: str, reference: np.ndarray, current: np.ndarray, psi_threshold: float,
            js_threshold: float) -> Check:
    """A named check of two histograms, alerting when PSI or JS distance crosses its threshold."""
    p, j = psi(reference, current), js_distance(reference, current)
    return Check(name, kind, p, j, p > psi_threshold or j > js_threshold,
                 f"reference n={int(np.sum(reference))}, current n={int(np.sum(current))}")
