"""Per-user features: segment, the most recently engaged artists, the last songs played.

`favourite_artists`: up to `gold.max_favourite_artists` artists the user engaged with (any
event but an impression), newest engagement first, each with the artist's statistics and the
user's own plays. `recent_tracks`: the last `gold.max_recent_tracks` plays with a track, newest
first (plays at the same time by song, artist and completion), each with the song's and its
artist's statistics and this play's completion.

What is the user's own (`OWN_FIELDS` of the arrays, and every other column) is digested into
`feature_hash` when the build writes the row, so the feature store finds the users whose own
features changed by comparing two small columns of two versions. The statistics are left out:
they move for everyone whenever anyone plays, and the feature store keeps them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys.frames import ordered_list
from recsys.tables import ARTIST_ID, AS_OF, EVENT_TIME, EVENT_TYPE, TRACK_ID, USER_KEY

# Per array, the fields that are the user's own; the others are artist and song statistics.
OWN_FIELDS = {"favourite_artists": (ARTIST_ID, "user_plays", "last_interaction"),
              "recent_tracks": (TRACK_ID, ARTIST_ID, "completion", EVENT_TIME)}
FEATURE_HASH = "feature_hash"


def signed_up_before(as_of: datetime) -> Callable[[DataFrame], DataFrame]:
    """Accounts that existed at `as_of`: a build "as of" last week must not know users who signed up
    since. Signup dates are days, so a user counts from the start of their signup day; a missing
    date keeps the user (the account predates the field).
    """
    def transform(users: DataFrame) -> DataFrame:
        signed_up = F.col("signup_date").cast("timestamp")
        return users.filter(signed_up.isNull() | (signed_up < F.lit(as_of)))

    return transform


def _capped_array(rows: DataFrame, order: list, cap: int, name: str, fields: list[str],
                  lookups: tuple[tuple[DataFrame, str], ...] = ()) -> DataFrame:
    """Per user, an array of structs of `fields` ordered by `order` and capped at `cap`.

    `lookups` are (table, key) joined to the kept rows only, so the per-user sort moves the narrow
    rows and the statistics are looked up for at most `cap` rows per user.
    """
    ranked = rows.withColumn("_r", F.row_number().over(Window.partitionBy(USER_KEY).orderBy(*order)))
    kept = ranked.filter(F.col("_r") <= cap)
    for table, key in lookups:
        kept = kept.join(table, on=key, how="left")
    return kept.groupBy(USER_KEY).agg(ordered_list(F.col("_r"), {f: F.col(f) for f in fields}).alias(name))


def favourite_artists(pairs: DataFrame, artist_stats: DataFrame, cap: int) -> DataFrame:
    """Per user, the `cap` most recently engaged artists with their statistics, newest first.

    `pairs` are gold's interactions (`recsys.gold.interactions.interactions`): per (user, artist)
    engaged with, the latest engagement (`last_ts`) and the user's plays.
    """
    engaged = pairs.select(USER_KEY, ARTIST_ID, F.col("last_ts").alias("last_interaction"),
                           F.col("plays").alias("user_plays"))
    fields = [ARTIST_ID, "artist_name", "genres", "active_days", "trending_rank", "followers", "user_plays",
              "last_interaction"]
    return _capped_array(engaged, [F.desc("last_interaction"), F.asc(ARTIST_ID)], cap, "favourite_artists", fields,
                         lookups=((artist_stats, ARTIST_ID),))


def _plays(events: DataFrame) -> DataFrame:
    return events.filter(F.col(EVENT_TYPE) == "play")


def played_tracks(events: DataFrame) -> DataFrame:
    """The plays of `events` with a track, as `recent_tracks` keeps them (`OWN_FIELDS`)."""
    return _plays(events).filter(F.col(TRACK_ID).isNotNull()).select(USER_KEY, *OWN_FIELDS["recent_tracks"])


def recent_tracks(played: DataFrame, track_stats: DataFrame, artist_stats: DataFrame, cap: int) -> DataFrame:
    """Per user, the last `cap` songs of `played` (see `played_tracks`) with song and artist
    statistics, newest first; plays at the same time by their own fields, so the songs kept depend on
    those alone and a build can keep them from the arrays before (`recsys.gold.build.window_sums`).
    """
    tracks = track_stats.select(TRACK_ID, "track_name", "active_days", "trending_rank", "likes",
                                "avg_listen_ms", "std_listen_ms")
    artists = artist_stats.select(ARTIST_ID, "artist_name", "genres", "followers")
    fields = [TRACK_ID, "track_name", ARTIST_ID, "artist_name", "genres", "active_days", "trending_rank",
              "followers", "likes", "avg_listen_ms", "std_listen_ms", "completion", EVENT_TIME]
    order = [F.desc(EVENT_TIME), F.asc(TRACK_ID), F.asc(ARTIST_ID), F.asc("completion")]
    return _capped_array(played, order, cap, "recent_tracks", fields,
                         lookups=((tracks, TRACK_ID), (artists, ARTIST_ID)))


RECENT_DAYS = 30  # `plays_30d`'s days


@dataclass(frozen=True)
class Listening:
    """What the users' plays give their features: `tracks`, the plays that can be among the recent
    songs (`played_tracks`); `recent`, the count of the last `RECENT_DAYS`' plays (`user_key`,
    `plays_30d`); and `genres`, the window's plays by genre of their artist (`gold/user_genres`:
    `user_key`, `genre`, `n`, `last_play`). A build can update each from what entered and left the
    window (`recsys.gold.build.window_sums`) as well as take them from the window here.
    """
    tracks: DataFrame
    recent: DataFrame
    genres: DataFrame


def recent_plays(events: DataFrame, since: datetime | None = None) -> DataFrame:
    """Per user with plays in `events`, the count of those at or after `since` (all of them: None)."""
    plays = _plays(events)
    counted = F.col("count") if since is None else F.when(F.col(EVENT_TIME) >= F.lit(since), F.col("count"))
    return plays.groupBy(USER_KEY).agg(F.coalesce(F.sum(counted), F.lit(0)).alias("plays_30d"))


def genre_plays(events: DataFrame) -> DataFrame:
    """Per (user, genre), the plays of artists of that genre (`n`) and the newest (`last_play`)."""
    exploded = _plays(events).select(USER_KEY, "count", EVENT_TIME, F.explode("genres").alias("genre"))
    return exploded.groupBy(USER_KEY, "genre").agg(F.sum("count").alias("n"), F.max(EVENT_TIME).alias("last_play"))


def listening(events: DataFrame, as_of: datetime) -> Listening:
    """`Listening` counted from the window's `events` of a build as of `as_of`."""
    return Listening(played_tracks(events), recent_plays(events, as_of - timedelta(days=RECENT_DAYS)),
                     genre_plays(events))


def summaries(counts: Listening, pairs: DataFrame) -> DataFrame:
    """Per user of `counts.recent`: plays in the last 30 days, distinct artists played, top 3 genres.

    The distinct artists are counted from `pairs`, the same events' interactions: the pairs with
    plays, since a play counts at least 1 (bronze quarantines `count` < 1, silver fills a missing
    one with 1). A distinct count in the plays' aggregation would expand every play.
    """
    played = pairs.groupBy(USER_KEY).agg(
        F.count_if((F.col("plays") > 0) & F.col(ARTIST_ID).isNotNull()).alias("distinct_artists"))
    top = _capped_array(counts.genres, [F.desc("n"), F.asc("genre")], 3, "_top", ["genre"])
    return (counts.recent.join(played, on=USER_KEY, how="left")
            .join(top.select(USER_KEY, F.col("_top.genre").alias("top_genres")), on=USER_KEY, how="left"))


def user_features(users: DataFrame, events: DataFrame, pairs: DataFrame, stats: tuple[DataFrame, DataFrame],
                  counts: Listening, *, max_artists: int, max_tracks: int) -> DataFrame:
    """One row per user with an account or with events in the window (`events`).

    `pairs` are the same events' interactions (one aggregation serves both gold tables), `stats`
    their (artist statistics, track statistics), `counts` what their plays give.
    """
    artist_stats, track_stats = stats
    keys = users.select(USER_KEY).unionByName(events.select(USER_KEY)).distinct()
    empty = F.array()
    return (
        keys.join(users.select(USER_KEY, "age_group", "city", "region", "country"), on=USER_KEY, how="left")
        .join(favourite_artists(pairs, artist_stats, max_artists), on=USER_KEY, how="left")
        .join(recent_tracks(counts.tracks, track_stats, artist_stats, max_tracks), on=USER_KEY, how="left")
        .join(summaries(counts, pairs), on=USER_KEY, how="left")
        .select(
            USER_KEY, F.coalesce("age_group", F.lit("unknown")).alias("age_group"), "city", "region", "country",
            "favourite_artists", "recent_tracks",
            F.coalesce("plays_30d", F.lit(0)).alias("plays_30d"),
            F.coalesce("distinct_artists", F.lit(0)).alias("distinct_artists"),
            F.coalesce("top_genres", empty.cast("array<string>")).alias("top_genres"),
        )
    )


def _own_columns(columns: list[str]) -> list[Column]:
    """`columns` of `gold/user_features`, each array zipped from its own fields' arrays
    (`favourite_artists.artist_id`, ...), so Parquet reads only those fields: 2-4x faster than a
    `transform` of each element, which reads the whole arrays.
    """
    return [F.arrays_zip(*[F.col(f"{c}.{field}") for field in OWN_FIELDS[c]]).alias(c) if c in OWN_FIELDS
            else F.col(c) for c in columns]


def own_features(features: DataFrame) -> DataFrame:
    """`gold/user_features` rows with only the user's own fields in the arrays (`OWN_FIELDS`)."""
    return features.select(*_own_columns(features.columns))


def feature_hash(features: DataFrame) -> Column:
    """The digest of each row's own features: SHA-256 of the JSON of every column but the key and
    the build time, the arrays with their own fields only.
    """
    hashed = [c for c in features.columns if c not in (USER_KEY, AS_OF, FEATURE_HASH)]
    return F.sha2(F.to_json(F.struct(*_own_columns(hashed))), 256)
