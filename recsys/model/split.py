"""Validation splits of gold interactions, deterministic without a random generator's state."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys.model.als import ITEM, USER


def _holdout(interactions: DataFrame, order: Column, share: float, min_items: int) -> tuple[DataFrame, DataFrame]:
    """Per user with at least `min_items` artists, the first `floor(share * n)` (at least one) by
    `order` are held out; users with fewer artists are dropped.
    """
    counted = interactions.withColumn("_n", F.count("*").over(Window.partitionBy(USER)))
    ranked = (
        counted.filter(F.col("_n") >= min_items)
        .withColumn("_r", F.row_number().over(Window.partitionBy(USER).orderBy(order, F.col(ITEM))))
        .withColumn("_hold", F.greatest(F.lit(1), F.floor(F.col("_n") * share)))
    )
    held = F.col("_r") <= F.col("_hold")
    return ranked.filter(~held).drop("_n", "_r", "_hold"), ranked.filter(held).drop("_n", "_r", "_hold")


def random_holdout(interactions: DataFrame, share: float = 0.2, seed: int = 42, min_items: int = 5
                   ) -> tuple[DataFrame, DataFrame]:
    """A random `share` of each user's artists, "random" being a hash of (user, artist, seed):
    the same for any partitioning or cluster, where `rand(seed)` would change with the layout.
    """
    return _holdout(interactions, F.xxhash64(USER, ITEM, F.lit(seed)), share, min_items)


def latest_holdout(interactions: DataFrame, share: float = 0.2, min_items: int = 5) -> tuple[DataFrame, DataFrame]:
    """The latest `share` of each user's artists by last interaction time."""
    return _holdout(interactions, F.desc("last_ts"), share, min_items)
