"""Implicit-feedback ALS (Spark MLlib) on gold interactions, and the baselines it must beat.

Spark's implicit ALS turns a rating r into confidence `1 + alpha * r`. `scale` chooses r:
`linear` (the gold confidence as is) or `log` (`log(1 + confidence / eps)`), so that with
gold's log1p confidence and eps = 1, large play counts flatten twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

USER, ITEM, RATING = "user_idx", "artist_idx", "rating"


@dataclass(frozen=True)
class AlsParams:
    rank: int = 64
    reg_param: float = 1.0
    alpha: float = 1.0
    max_iter: int = 15
    scaling: str = "linear"
    eps: float = 1.0
    seed: int = 42


def with_rating(interactions: DataFrame, scaling: str, eps: float = 1.0) -> DataFrame:
    confidence = F.col("confidence")
    if scaling == "linear":
        rating = confidence
    elif scaling == "log":
        rating = F.log1p(confidence / F.lit(eps))
    else:
        raise ValueError(f"model scaling must be 'linear' or 'log', got {scaling!r}")
    return interactions.withColumn(RATING, rating.cast("float"))


def fit(train: DataFrame, params: AlsParams) -> tuple[ALSModel, float]:
    """Fit on (user_idx, artist_idx, confidence); returns the model and fit seconds."""
    als = ALS(rank=params.rank, regParam=params.reg_param, alpha=params.alpha, maxIter=params.max_iter,
              implicitPrefs=True, userCol=USER, itemCol=ITEM, ratingCol=RATING, seed=params.seed,
              coldStartStrategy="drop", checkpointInterval=5, nonnegative=False)
    data = with_rating(train, params.scaling, params.eps).select(USER, ITEM, RATING)
    started = time.monotonic()
    model = als.fit(data)
    model.userFactors.count()
    return model, time.monotonic() - started


def _most_seen(seen: DataFrame) -> int:
    """The largest number of artists one user has seen: how deep candidate lists must go."""
    return seen.groupBy(USER).count().agg(F.max("count")).first()[0] or 0


def _rank_excluding(candidates: DataFrame, seen: DataFrame, k: int) -> DataFrame:
    """Drop what each user has already seen, then keep the best `k` by score as ranks 1..k."""
    fresh = candidates.join(seen.select(USER, ITEM), on=[USER, ITEM], how="left_anti")
    w = Window.partitionBy(USER).orderBy(F.desc("score"), F.asc(ITEM))
    return fresh.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)


def recommend(model: ALSModel, users: DataFrame, seen: DataFrame, k: int) -> DataFrame:
    """Top `k` unseen artists per user by ALS dot product: (user_idx, artist_idx, score, rank)."""
    raw = model.recommendForUserSubset(users.select(USER).distinct(), k + _most_seen(seen))
    candidates = raw.select(USER, F.explode("recommendations").alias("r")).select(
        USER, F.col(f"r.{ITEM}").alias(ITEM), F.col("r.rating").alias("score"))
    return _rank_excluding(candidates, seen, k)


def popularity(train: DataFrame, users: DataFrame, k: int, segment: str | None = None) -> DataFrame:
    """Most popular unseen artists (by distinct users in training), globally or per `segment` column.

    `users` holds `user_idx` (and `segment` when given); segment lists fall back to global
    popularity when a segment has fewer than k unseen artists.
    """
    depth = k + _most_seen(train)
    glob = train.groupBy(ITEM).agg(F.countDistinct(USER).alias("score"))
    top_global = glob.withColumn("_r", F.row_number().over(Window.orderBy(F.desc("score"), F.asc(ITEM)))) \
        .filter(F.col("_r") <= depth).drop("_r")
    candidates = users.select(USER).distinct().crossJoin(top_global)
    if segment is not None:
        seg_train = train.join(users.select(USER, segment), on=USER, how="inner")
        seg_pop = seg_train.groupBy(segment, ITEM).agg(F.countDistinct(USER).alias("_seg"))
        w = Window.partitionBy(segment).orderBy(F.desc("_seg"), F.asc(ITEM))
        seg_top = seg_pop.withColumn("_r", F.row_number().over(w)).filter(F.col("_r") <= depth)
        seg_candidates = users.select(USER, segment).join(seg_top, on=segment, how="inner").select(
            USER, ITEM, (F.col("_seg") * 1e6).alias("score"))  # segment favourites first
        candidates = seg_candidates.unionByName(candidates).groupBy(USER, ITEM).agg(F.max("score").alias("score"))
    return _rank_excluding(candidates, train, k)
