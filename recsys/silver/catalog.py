"""`silver/events` -> `silver/artists` and `silver/tracks`: one row per artist and per track.

Names: the most frequent clean display form across events (ties: the latest seen), so stray
case and punctuation from one client lose to the catalog's own spelling. Genres and the
displayed rank, followers and likes come from the latest event that carried them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.tables import ARTIST_ID, EVENT_TIME, TRACK_ID


def _most_frequent(df: DataFrame, key: str, value: str) -> DataFrame:
    counted = df.filter(F.col(value).isNotNull()).groupBy(key, value).agg(
        F.count("*").alias("_n"), F.max(EVENT_TIME).alias("_last"))
    w = Window.partitionBy(key).orderBy(F.desc("_n"), F.desc("_last"), F.asc(value))
    return counted.withColumn("_r", F.row_number().over(w)).filter("_r = 1").select(key, value)


def _latest(df: DataFrame, key: str, value: str) -> DataFrame:
    picked = F.max_by(F.col(value), F.col(EVENT_TIME))
    return df.filter(F.col(value).isNotNull()).groupBy(key).agg(picked.alias(value))


def to_artists(events: DataFrame) -> DataFrame:
    """One row per artist: its most frequent name and key, genres, and when it was last seen."""
    with_genres = events.withColumn("genres", F.when(F.size("genres") > 0, F.col("genres")))
    base = events.groupBy(ARTIST_ID).agg(F.max(EVENT_TIME).alias("last_seen"))
    out = base.join(_most_frequent(events, ARTIST_ID, "artist_name"), on=ARTIST_ID, how="left")
    for column in ("artist_key",):
        out = out.join(_most_frequent(events, ARTIST_ID, column), on=ARTIST_ID, how="left")
    for column, source in (("genres", with_genres), ("artist_rank", events), ("artist_followers", events)):
        out = out.join(_latest(source, ARTIST_ID, column), on=ARTIST_ID, how="left")
    return out.select(
        ARTIST_ID, "artist_name", "artist_key",
        F.coalesce("genres", F.array().cast("array<string>")).alias("genres"),
        "artist_rank", "artist_followers", "last_seen",
    )


def to_tracks(events: DataFrame) -> DataFrame:
    """One row per track: its most frequent name, key, artist, album and duration, and when last seen."""
    tracks = events.filter(F.col(TRACK_ID).isNotNull())
    base = tracks.groupBy(TRACK_ID).agg(F.max(EVENT_TIME).alias("last_seen"))
    out = base
    for column in ("track_name", "track_key", ARTIST_ID, "album_name", "duration_ms"):
        out = out.join(_most_frequent(tracks, TRACK_ID, column), on=TRACK_ID, how="left")
    out = out.join(_latest(tracks, TRACK_ID, "track_likes"), on=TRACK_ID, how="left")
    return out.select(TRACK_ID, "track_name", "track_key", ARTIST_ID, "album_name", "duration_ms",
                      "track_likes", "last_seen")
