"""The implicit-feedback matrix: one row per (user, artist) with a confidence, and persistent
integer ids for ALS.

`raw_score` sums each event's weight times its `count`, in whole millionths of a weight
(`gold.weights` have at most six decimals): an integer sum, so the score does not depend on the
order the rows are added in, on a cluster or locally, whatever the weights. Plays weigh by
completion (full > partial > imported play without a track > skipped, and skips count against);
likes, follows and playlist adds add; unlikes and unfollows subtract. `confidence` is
`log1p(max(raw_score, 0))` (`gold.confidence: log`) or `max(raw_score, 0)` (`linear`); pairs at or
below zero stay in the table with confidence 0, so the model can tell "seen and disliked" from
"never seen".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.frames import Persisted, with_row_number
from recsys.gold.changes import updated_sums
from recsys.tables import ARTIST_ID, EVENT_TIME, EVENT_TYPE, USER_KEY

DEFAULT_WEIGHTS = {
    "play_full": 1.0, "play_partial": 0.5, "play_skipped": -0.25, "play_untracked": 1.0,
    "like": 3.0, "unlike": -3.0, "follow": 4.0, "unfollow": -4.0, "playlist_add": 2.0, "click": 1.0,
}
MAX_ID = 2**31 - 1
MICRO = 1_000_000  # a weight's unit in `raw_score`'s sum


def weights_from(overrides: Mapping[str, float]) -> dict[str, float]:
    """The default weight of each event kind with `gold.weights` applied; unknown kinds fail, and so
    do weights with more than six decimals (`raw_score` sums whole millionths: a finer weight would be
    rounded without a word).
    """
    unknown = set(overrides) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"gold.weights: unknown kinds {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
    weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in overrides.items()}}
    finer = sorted(k for k, v in weights.items() if round(v, 6) != v)
    if finer:
        raise ValueError(f"gold.weights: {finer} have more than six decimals; weights are summed in millionths")
    return weights


def event_weight(weights: Mapping[str, float]) -> Column:
    """Each event's weight by kind (and completion for plays), as a column."""
    kind = F.col(EVENT_TYPE)
    play = (
        F.when(F.col("completion") == "full", weights["play_full"])
        .when(F.col("completion") == "partial", weights["play_partial"])
        .when(F.col("completion") == "skipped", weights["play_skipped"])
        .otherwise(weights["play_untracked"])
    )
    expr = F.when(kind == "play", play)
    for name in ("like", "unlike", "follow", "unfollow", "playlist_add", "click"):
        expr = expr.when(kind == name, F.lit(weights[name]))
    return expr.otherwise(F.lit(0.0))


def pair_sums(events: DataFrame, weights: Mapping[str, float]) -> DataFrame:
    """(user_key, artist_id) -> `_micros` (the weights' sum in millionths), plays, last_ts of `events`
    (impressions aside): sums a window's change can be added to and taken from.
    """
    micros = F.round(event_weight(weights) * MICRO).cast("long")
    scored = events.filter(F.col(EVENT_TYPE) != "impression").withColumn("_w", micros * F.col("count"))
    return scored.groupBy(USER_KEY, ARTIST_ID).agg(
        F.sum("_w").alias("_micros"),
        F.sum(F.when(F.col(EVENT_TYPE) == "play", F.col("count")).otherwise(0)).alias("plays"),
        F.max(EVENT_TIME).alias("last_ts"),
    )


def _scored(sums: DataFrame, scaling: str) -> DataFrame:
    """`pair_sums` -> the interactions: `raw_score` and `confidence` for `_micros`."""
    if scaling not in ("log", "linear"):
        raise ValueError(f"gold.confidence must be 'log' or 'linear', got {scaling!r}")
    pairs = sums.withColumn("raw_score", F.col("_micros") / MICRO)
    positive = F.greatest(F.col("raw_score"), F.lit(0.0))
    confidence = F.log1p(positive) if scaling == "log" else positive
    return pairs.select(USER_KEY, ARTIST_ID, "raw_score", "plays", "last_ts", confidence.alias("confidence"))


def interactions(events: DataFrame, weights: Mapping[str, float], scaling: str = "log") -> DataFrame:
    """(user_key, artist_id) -> raw_score, plays, last_ts, confidence."""
    return _scored(pair_sums(events, weights), scaling)


def updated_interactions(previous: DataFrame, entering: DataFrame, leaving: DataFrame, window_start: datetime,
                         weights: Mapping[str, float], scaling: str = "log") -> DataFrame:
    """The interactions of a window that changed (`recsys.gold.changes`): `previous`, the build
    before's, plus the sums of the `entering` events and minus those of the `leaving` ones
    (`recsys.gold.changes.updated_sums`): equal to `interactions` of the new window, bit for bit.

    `previous` holds `raw_score`, not its millionths: `round(raw_score * 10**6)` gives them back
    exactly while the sum is below 2**51 millionths (a pair's score under two billion).
    """
    before = previous.withColumn("_micros", F.round(F.col("raw_score") * MICRO).cast("long"))
    sums = updated_sums(before, pair_sums(entering, weights), pair_sums(leaving, weights), [USER_KEY, ARTIST_ID],
                        ["_micros", "plays"], ("last_ts", window_start))
    return _scored(sums, scaling)


ID_MAP = {"users": (USER_KEY, "user_idx"), "artists": (ARTIST_ID, "artist_idx")}


def update_id_map(spark: SparkSession, path: str, keys: DataFrame, key: str, idx: str) -> None:
    """Give every new key the next integer id; existing ids never change."""
    lake.ensure_table(spark, path)
    current = lake.read(spark, path)
    start = current.agg(F.max(idx)).collect()[0][0]
    start = -1 if start is None else start
    new = keys.select(key).distinct().join(current, on=key, how="left_anti")
    with Persisted() as keep:
        numbered = with_row_number(new, idx, F.col(key), keep=keep)
        numbered = numbered.withColumn(idx, (F.col(idx) + F.lit(start)).cast("int"))
        if (numbered.agg(F.max(idx)).collect()[0][0] or 0) > MAX_ID:
            raise OverflowError(f"{path}: ids would pass {MAX_ID}")
        (DeltaTable.forPath(spark, path).alias("t")
         .merge(lake.conform(numbered, path).alias("s"), f"t.{key} = s.{key}")
         .whenNotMatchedInsertAll().execute())


def with_ids(pairs: DataFrame, users: DataFrame, artists: DataFrame) -> DataFrame:
    """Pairs with the integer ids ALS needs, dropping users or artists without one."""
    return pairs.join(users, on=USER_KEY, how="inner").join(artists, on=ARTIST_ID, how="inner")
