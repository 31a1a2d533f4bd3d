"""Implicit-feedback ALS (Spark MLlib) on gold interactions, and the baselines it must beat.

Spark's implicit ALS turns a rating r into confidence `1 + alpha * r`. `scaling` chooses r
from gold's confidence c:
- `linear`: c as is (gold's confidence is already `log1p` of the weighted counts);
- `log`: `log(1 + c / eps)`, flattening large counts once more;
- `bm25`: BM25 weighting of the user x artist matrix, `c * (k1 + 1) / (k1 * norm_u + c) * idf_a`
  with `norm_u = 1 - b + b * |u| / avg|u|` (a user's total against the average) and
  `idf_a = log(1 + (n_users - n_a + 0.5) / (n_a + 0.5))` (Lucene's always-positive idf, n_a the
  users who have artist a): heavy users and artists everyone has count less.
Only pairs with a positive rating reach ALS. Gold keeps "seen and disliked" pairs (skips only,
unlikes) with confidence 0: Spark would read them as confidence 1 with preference 0, and a user
or artist with nothing else gets no regularisation (Spark scales it by the positive count), so
its normal equations can be singular (`SingularMatrixException`, seen on public ratings data).
They still count as seen: every caller passes all interactions as the exclusion set, so they
are never recommended back.
Recommendations come from `recsys.model.topk`.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.config import Scaling

USER, ITEM, RATING = "user_idx", "artist_idx", "rating"


@dataclass(frozen=True)
class AlsParams:
    """One ALS configuration: factors, regularisation, confidence scaling and its parameters."""
    rank: int = 64
    reg_param: float = 1.0
    alpha: float = 1.0
    max_iter: int = 15
    scaling: str = "linear"
    eps: float = 1.0
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    seed: int = 42


SCALINGS: tuple[str, ...] = typing.get_args(Scaling)


def with_rating(interactions: DataFrame, params: AlsParams) -> DataFrame:
    """Interactions with `rating`: gold's confidence under the configured scaling."""
    confidence = F.col("confidence")
    if params.scaling == "linear":
        rating = confidence
    elif params.scaling == "log":
        rating = F.log1p(confidence / F.lit(params.eps))
    elif params.scaling == "bm25":
        return _bm25(interactions, params.bm25_k1, params.bm25_b)
    else:
        raise ValueError(f"model scaling must be one of {', '.join(SCALINGS)}; got {params.scaling!r}")
    return interactions.withColumn(RATING, rating.cast("float"))


def _bm25(interactions: DataFrame, k1: float, b: float) -> DataFrame:
    n_users = interactions.select(USER).distinct().count()
    per_user = interactions.groupBy(USER).agg(F.sum("confidence").alias("_len"))
    per_item = interactions.groupBy(ITEM).agg(F.countDistinct(USER).alias("_df"))
    avg_len = per_user.agg(F.avg("_len")).collect()[0][0] or 1.0
    df = F.col("_df")
    idf = F.log1p((F.lit(float(n_users)) - df + 0.5) / (df + 0.5))
    norm = F.lit(1 - b) + F.lit(b) * F.col("_len") / F.lit(avg_len)
    c = F.col("confidence")
    weighted = interactions.join(per_user, USER).join(per_item, ITEM) \
        .withColumn(RATING, (c * (k1 + 1) / (F.lit(k1) * norm + c) * idf).cast("float"))
    return weighted.drop("_len", "_df")


def fit(train: DataFrame, params: AlsParams) -> tuple[ALSModel, float]:
    """Fit on the positive ratings of (user_idx, artist_idx, confidence); the model and fit seconds."""
    als = ALS(rank=params.rank, regParam=params.reg_param, alpha=params.alpha, maxIter=params.max_iter,
              implicitPrefs=True, userCol=USER, itemCol=ITEM, ratingCol=RATING, seed=params.seed,
              coldStartStrategy="drop", checkpointInterval=5, nonnegative=False)
    data = with_rating(train, params).select(USER, ITEM, RATING).filter(F.col(RATING) > 0)
    started = time.monotonic()
    model = als.fit(data)
    model.userFactors.count()
    return model, time.monotonic() - started


def _most_seen(seen: DataFrame) -> int:
    """The largest number of artists one user has seen: how deep candidate lists must go."""
    return seen.groupBy(USER).count().agg(F.max("count")).collect()[0][0] or 0


def _rank_excluding(candidates: DataFrame, seen: DataFrame, k: int) -> DataFrame:
    """Drop what each user has already seen, then keep the best `k` by score as ranks 1..k."""
    fresh = candidates.join(seen.select(USER, ITEM), on=[USER, ITEM], how="left_anti")
    w = Window.partitionBy(USER).orderBy(F.desc("score"), F.asc(ITEM))
    return fresh.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)


def popularity(train: DataFrame, users: DataFrame, k: int, segment: str | None = None) -> DataFrame:
    """Most popular unseen artists (by distinct users in training), globally or per `segment` column.

    `users` holds `user_idx` (and `segment` when given); segment lists fall back to global
    popularity when a segment has fewer than k unseen artists.
    """
    depth = k + _most_seen(train)
    glob = train.groupBy(ITEM).agg(F.countDistinct(USER).alias("score"))
    top_global = glob.orderBy(F.desc("score"), F.asc(ITEM)).limit(depth)
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
