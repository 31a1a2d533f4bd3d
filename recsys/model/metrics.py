"""Ranking metrics at K, computed in Spark from recommendations and held-out truth.

Per user with at least one held-out item, then averaged over those users:
- precision@K = hits / K; recall@K = hits / |relevant|; hit rate = [hits > 0]
- NDCG@K = sum(hit_i / log2(i + 1)) / sum_{i <= min(|relevant|, K)} 1 / log2(i + 1)
- MAP@K = sum(precision@i * hit_i) / min(|relevant|, K)
Coverage = distinct recommended items / catalog size. Users without recommendations count as
all misses. Ranks are 1-based.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys.frames import ordered_list

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")


def _require(df: DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; has {df.columns}")


def _log2(x: Column) -> Column:
    return F.log2(x.cast("double"))


def _hits(recs: DataFrame, truth: DataFrame, k: int, user: str, item: str, rank: str) -> DataFrame:
    """(user, `_rel` = the held-out set, `_hits` = 1/0 per recommended position up to `k`) for
    every user in `truth`; users without recommendations get an empty `_hits`.
    """
    _require(recs, (user, item, rank), "recommendations")
    _require(truth, (user, item), "truth")
    ranked = recs.filter(F.col(rank) <= k).groupBy(user).agg(
        ordered_list(F.col(rank), {"i": F.col(item)}).alias("_recs"))
    relevant = truth.groupBy(user).agg(F.collect_set(item).alias("_rel"))
    items = F.coalesce(F.col("_recs.i"), F.array())
    return relevant.join(ranked, on=user, how="left").select(
        user, "_rel", F.transform(items, lambda x: F.array_contains("_rel", x).cast("int")).alias("_hits"))


def _sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def _gains(hits: Column) -> Column:
    """Discounted gain per position: hit_i / log2(i + 1), positions 1-based."""
    return F.transform(hits, lambda x, i: x / _log2(i + 2))


def ideal_dcg(n: Column) -> Column:
    """DCG of `n` hits in the first `n` places."""
    return _sum(F.transform(F.sequence(F.lit(1), n), lambda i: 1 / _log2(i + 1)))


def per_user_metrics(recs: DataFrame, truth: DataFrame, k: int, *, user: str = "user", item: str = "item",
                     rank: str = "rank") -> DataFrame:
    """One row per user in `truth` with precision, recall, ndcg, map and hit_rate at `k`."""
    h = F.col("_hits")
    n_hits = _sum(h)
    n_rel = F.size("_rel")
    ideal = F.least(n_rel, F.lit(k))
    return _hits(recs, truth, k, user, item, rank).select(
        user,
        (n_hits / F.lit(k)).alias("precision"),
        (n_hits / n_rel).alias("recall"),
        (_sum(_gains(h)) / ideal_dcg(ideal)).alias("ndcg"),
        (_average_precision(h) / ideal).alias("map"),
        (n_hits > 0).cast("double").alias("hit_rate"),
    )


def _average_precision(hits: Column) -> Column:
    """Sum over positions i (1-based) of hit_i * hits_up_to_i / i."""
    terms = F.transform(
        hits,
        lambda x, i: x * F.aggregate(F.slice(hits, 1, i + 1), F.lit(0), lambda a, y: a + y) / (i + 1),
    )
    return _sum(terms)


def ranking_metrics(recs: DataFrame, truth: DataFrame, k: int, n_items: int, *, user: str = "user",
                    item: str = "item", rank: str = "rank") -> dict[str, float]:
    """The averages of `per_user_metrics` plus catalog coverage, as plain floats."""
    per_user = per_user_metrics(recs, truth, k, user=user, item=item, rank=rank)
    row = per_user.agg(*[F.avg(m).alias(m) for m in METRICS]).collect()[0]
    covered = recs.filter(F.col(rank) <= k).select(item).distinct().count()
    return {**{m: float(row[m] or 0.0) for m in METRICS}, "coverage": covered / n_items if n_items else 0.0}


def metric_curves(recs: DataFrame, truth: DataFrame, max_k: int, *, user: str = "user", item: str = "item",
                  rank: str = "rank") -> list[dict[str, float]]:
    """Precision, recall and NDCG at every K in 1..`max_k` from one list of `max_k` per user, in one
    Spark job: [{"k": 1, "precision": ..., "recall": ..., "ndcg": ...}, ...].
    """
    h, n_rel = F.col("_hits"), F.size("_rel")

    def head_sum(values: Column, k: Column) -> Column:
        return _sum(F.slice(values, 1, k))

    ks = F.sequence(F.lit(1), F.lit(max_k))
    curves = _hits(recs, truth, max_k, user, item, rank).select(F.posexplode(F.transform(ks, lambda k: F.struct(
        (head_sum(h, k) / k).alias("precision"),
        (head_sum(h, k) / n_rel).alias("recall"),
        (head_sum(_gains(h), k) / ideal_dcg(F.least(n_rel, k))).alias("ndcg"),
    ))).alias("pos", "m"))
    rows = curves.groupBy("pos").agg(*[F.avg(f"m.{m}").alias(m) for m in ("precision", "recall", "ndcg")]) \
        .orderBy("pos").collect()
    return [{"k": r["pos"] + 1, "precision": r["precision"], "recall": r["recall"], "ndcg": r["ndcg"]} for r in rows]
