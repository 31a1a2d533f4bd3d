"""Per-user features: segment, the most recently engaged artists, the last songs played.

`favourite_artists`: up to `gold.max_favourite_artists` artists the user engaged with (any
event but an impression), newest engagement first, each with the artist's statistics and the
user's own plays. `recent_tracks`: the last `gold.max_recent_tracks` plays with a track, newest
first, each with the song's and its artist's statistics and this play's completion.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def signed_up_before(as_of: datetime) -> Callable[[DataFrame], DataFrame]:
    """Accounts that existed at `as_of`: a build "as of" last week must not know users who signed up
    since. Signup dates are days, so a user counts from the start of their signup day; a missing
    date keeps the user (the account predates the field).
    """
    def transform(users: DataFrame) -> DataFrame:
        signed_up = F.col("signup_date").cast("timestamp")
        return users.filter(signed_up.isNull() | (signed_up < F.lit(as_of)))

    return transform


def _capped_array(rows: DataFrame, order: list, cap: int, name: str, fields: list[str]) -> DataFrame:
    """Per user, an array of structs of `fields` ordered by `order` and capped at `cap`."""
    ranked = rows.withColumn("_r", F.row_number().over(Window.partitionBy("user_key").orderBy(*order)))
    kept = ranked.filter(F.col("_r") <= cap)
    collected = kept.groupBy("user_key").agg(
        F.array_sort(F.collect_list(F.struct(F.col("_r"), *[F.col(f) for f in fields]))).alias("_items"))
    return collected.select("user_key", F.transform("_items", lambda s: s.dropFields("_r")).alias(name))


def favourite_artists(events: DataFrame, artist_stats: DataFrame, cap: int) -> DataFrame:
    """Per user, the `cap` most recently engaged artists with their statistics, newest first."""
    engaged = events.filter(F.col("event_type") != "impression").groupBy("user_key", "artist_id").agg(
        F.max("event_time").alias("last_interaction"),
        F.sum(F.when(F.col("event_type") == "play", F.col("count")).otherwise(0)).alias("user_plays"),
    )
    rows = engaged.join(artist_stats, on="artist_id", how="left")
    fields = ["artist_id", "artist_name", "genres", "active_days", "trending_rank", "followers", "user_plays",
              "last_interaction"]
    return _capped_array(rows, [F.desc("last_interaction"), F.asc("artist_id")], cap, "favourite_artists", fields)


def recent_tracks(events: DataFrame, track_stats: DataFrame, artist_stats: DataFrame, cap: int) -> DataFrame:
    """Per user, the last `cap` songs played with song and artist statistics, newest first."""
    played = events.filter((F.col("event_type") == "play") & F.col("track_id").isNotNull()).select(
        "user_key", "event_id", "event_time", "track_id", "artist_id", "completion")
    tracks = track_stats.select("track_id", "track_name", "active_days", "trending_rank", "likes",
                                "avg_listen_ms", "std_listen_ms")
    artists = artist_stats.select("artist_id", "artist_name", "genres", "followers")
    rows = played.join(tracks, on="track_id", how="left").join(artists, on="artist_id", how="left")
    fields = ["track_id", "track_name", "artist_id", "artist_name", "genres", "active_days", "trending_rank",
              "followers", "likes", "avg_listen_ms", "std_listen_ms", "completion", "event_time"]
    return _capped_array(rows, [F.desc("event_time"), F.asc("event_id")], cap, "recent_tracks", fields)


def summaries(events: DataFrame, artist_stats: DataFrame, as_of: datetime) -> DataFrame:
    """Per user, plays in the last 30 days, distinct artists and top genres."""
    plays = events.filter(F.col("event_type") == "play")
    recent = F.col("event_time") >= F.lit(as_of - timedelta(days=30))
    per_user = plays.groupBy("user_key").agg(
        F.sum(F.when(recent, F.col("count")).otherwise(0)).alias("plays_30d"),
        F.countDistinct("artist_id").alias("distinct_artists"),
    )
    by_genre = (plays.select("user_key", "count", F.explode("genres").alias("genre"))
                .groupBy("user_key", "genre").agg(F.sum("count").alias("n")))
    top = _capped_array(by_genre, [F.desc("n"), F.asc("genre")], 3, "_top", ["genre"])
    return per_user.join(top.select("user_key", F.col("_top.genre").alias("top_genres")), on="user_key", how="left")


def user_features(users: DataFrame, events: DataFrame, artist_stats: DataFrame, track_stats: DataFrame,
                  as_of: datetime, *, max_artists: int, max_tracks: int) -> DataFrame:
    """One row per user with an account or with events before `as_of`."""
    keys = users.select("user_key").unionByName(events.select("user_key")).distinct()
    empty = F.array()
    return (
        keys.join(users.select("user_key", "age_group", "city", "region", "country"), on="user_key", how="left")
        .join(favourite_artists(events, artist_stats, max_artists), on="user_key", how="left")
        .join(recent_tracks(events, track_stats, artist_stats, max_tracks), on="user_key", how="left")
        .join(summaries(events, artist_stats, as_of), on="user_key", how="left")
        .select(
            "user_key", F.coalesce("age_group", F.lit("unknown")).alias("age_group"), "city", "region", "country",
            "favourite_artists", "recent_tracks",
            F.coalesce("plays_30d", F.lit(0)).alias("plays_30d"),
            F.coalesce("distinct_artists", F.lit(0)).alias("distinct_artists"),
            F.coalesce("top_genres", empty.cast("array<string>")).alias("top_genres"),
        )
    )
