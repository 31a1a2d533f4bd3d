"""Validation splits of gold interactions, deterministic without a random generator's state."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.model.als import ITEM, USER


def random_holdout(interactions: DataFrame, share: float = 0.2, seed: int = 42, min_items: int = 5
                   ) -> tuple[DataFrame, DataFrame]:
    """Per user with at least `min_items` artists, hold out `floor(share * n)` (at least one) at random.

    "Random" is a hash of (user, artist, seed): the same for any partitioning or cluster, where
    `rand(seed)` would change with the data's layout. Users with fewer artists are dropped.
    """
    counted = interactions.withColumn("_n", F.count("*").over(Window.partitionBy(USER)))
    eligible = counted.filter(F.col("_n") >= min_items)
    order = Window.partitionBy(USER).orderBy(F.xxhash64(USER, ITEM, F.lit(seed)), F.col(ITEM))
    ranked = eligible.withColumn("_r", F.row_number().over(order)).withColumn(
        "_hold", F.greatest(F.lit(1), F.floor(F.col("_n") * share)))
    test = ranked.filter(F.col("_r") <= F.col("_hold")).drop("_n", "_r", "_hold")
    train = ranked.filter(F.col("_r") > F.col("_hold")).drop("_n", "_r", "_hold")
    return train, test


def latest_holdout(interactions: DataFrame, share: float = 0.2, min_items: int = 5) -> tuple[DataFrame, DataFrame]:
    """Per user, the latest `share` of their artists by last interaction time is held out."""
    counted = interactions.withColumn("_n", F.count("*").over(Window.partitionBy(USER)))
    eligible = counted.filter(F.col("_n") >= min_items)
    order = Window.partitionBy(USER).orderBy(F.desc("last_ts"), F.col(ITEM))
    ranked = eligible.withColumn("_r", F.row_number().over(order)).withColumn(
        "_hold", F.greatest(F.lit(1), F.floor(F.col("_n") * share)))
    test = ranked.filter(F.col("_r") <= F.col("_hold")).drop("_n", "_r", "_hold")
    train = ranked.filter(F.col("_r") > F.col("_hold")).drop("_n", "_r", "_hold")
    return train, test
