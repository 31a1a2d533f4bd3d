"""One gold build "as of" a timestamp: every table from the silver events of the
`gold.feature_window_days` strictly before it (older events are not read at all).

The Delta versions of the inputs are recorded in each gold table's commit (`userMetadata`) and
in `gold/builds`, and `silver_version` replays a build on exactly the silver it saw, so a
training set for any past date can be rebuilt and no feature sees the future.

A build that follows another on silver that only grew updates `gold/interactions`,
`gold/window_catalog` (the counts gold's names and genres are picked from), what the users'
summaries count (`gold/user_genres` and the plays of the last 30 days) and their recent songs from
the events that entered and left the window since (`recsys.gold.changes`) instead of aggregating
the whole window again; `GoldBuild.full_because` says why a build did not.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, GoldConfig
from recsys.frames import Persisted
from recsys.gold.changes import Change, Previous, between, settings_digest, updated_sums, window_change
from recsys.gold.features import (
    FEATURE_HASH,
    RECENT_DAYS,
    Listening,
    feature_hash,
    genre_plays,
    listening,
    own_features,
    played_tracks,
    recent_plays,
    signed_up_before,
    user_features,
)
from recsys.gold.interactions import (
    ID_MAP,
    interactions,
    update_id_map,
    updated_interactions,
    weights_from,
    with_ids,
)
from recsys.gold.stats import Windows, artist_stats, track_stats
from recsys.silver.catalog import CATALOG_KEY, catalog_fields_from, catalog_values, narrow_specs
from recsys.tables import (
    ARTIST_ID,
    AS_OF,
    EVENT_DATE,
    EVENT_TIME,
    EVENT_TYPE,
    GOLD_BUILDS,
    TRACK_ID,
    USER_KEY,
)

GOLD_TABLES = ("artist_stats", "track_stats", "user_features", "interactions", "window_catalog", "user_genres")
# The catalog fields gold shows, picked over its window (`gold/window_catalog` keeps their counts).
CATALOG_SPECS = narrow_specs({"artist": ("artist_name", "genres"), "track": ("track_name", ARTIST_ID)})
# The silver columns gold reads (13 of 37): neither ids, lineage and context (source file, session,
# device, place, ...) nor the catalog fields no gold table shows (keys, album, displayed rank and
# likes, duration) are read. The window is not cached: each table's query reads only its own
# columns of the window's Parquet files. That cost no more than caching all of them once (20-day builds
# alternated in one process: 68.9 s on average against 74.1 s at 15,000 users, 106.3 and 89.6 s
# against 93.6 and 89.9 s at 30,000) and holds no copy of the window in memory.
GOLD_READS = (
    EVENT_TYPE, EVENT_TIME, EVENT_DATE, USER_KEY, "count", ARTIST_ID, "artist_name", TRACK_ID, "track_name",
    "genres", "artist_followers", "played_ms", "completion",
)


@dataclass(frozen=True)
class GoldBuild:
    """One gold build: its id, the time it was built as of, its inputs' and outputs' versions, and
    why it recomputed every table from the whole window (None: it updated what it could).
    """
    build_id: str
    as_of: datetime
    inputs: dict[str, int]
    outputs: dict[str, int]
    full_because: str | None = None


def users_as_of(spark: SparkSession, users_path: str, as_of: datetime, version: int | None = None
                ) -> tuple[DataFrame, int]:
    """`silver/users` as it was at `as_of` (age group and place then), or at `version` when given,
    with only users signed up by `as_of`; and the version read. Each silver run rewrites the table
    whole, so a version is a snapshot.
    """
    version = lake.version_at(spark, users_path, as_of) if version is None else version
    return lake.read(spark, users_path, version=version).transform(signed_up_before(as_of)), version


def in_window(events: DataFrame, as_of: datetime, days: int) -> DataFrame:
    """Silver events of the `days` before `as_of`. The date bound prunes `silver/events`' partitions,
    so a build reads the window it needs, whatever the length of the history.
    """
    return between(events, as_of - timedelta(days=days), as_of)


def previous_build(spark: SparkSession, cfg: Config) -> Previous | None:
    """What the latest gold build recorded for the next one; None when there is none, or when it
    recorded no silver time (a build before `recsys.gold.changes` existed, or on an empty silver).
    """
    builds = GOLD_BUILDS.path(cfg.lake)
    if not lake.exists(spark, builds):
        return None
    last = lake.read(spark, builds).orderBy(F.desc("built_at")).limit(1).collect()
    version = last[0].outputs.get("gold/interactions") if last else None
    if version is None:
        return None
    history = DeltaTable.forPath(spark, lake.table_path(cfg.lake, "gold", "interactions")).history()
    commit = history.filter(F.col("version") == version).select("userMetadata").collect()
    recorded = json.loads(commit[0][0]) if commit and commit[0][0] else {}
    if not recorded.get("silver_at"):
        return None
    return Previous(datetime.fromisoformat(recorded[AS_OF]), last[0].inputs["silver/events"],
                    datetime.fromisoformat(recorded["silver_at"]), recorded.get("settings", ""), dict(last[0].outputs))


def window_sums(spark: SparkSession, g: GoldConfig, change: Change, events: DataFrame, as_of: datetime,
                paths: dict[str, str], *, keep: Persisted) -> tuple[DataFrame, DataFrame, Listening]:
    """The window's catalog counts (`gold/window_catalog`), interactions and what the users' plays
    give their features (`Listening`: the recent songs' candidates, `gold/user_genres`, the recent
    plays' count): updated from the build before's tables when `change` has their difference, or
    aggregated over the window's `events`. Those read twice are persisted by `keep`.
    """
    weights = weights_from(g.weights)
    diff = change.difference
    if diff is None:
        counts = listening(events, as_of)
        return (keep(catalog_values(events, CATALOG_SPECS)), keep(interactions(events, weights, g.confidence)),
                dataclasses.replace(counts, genres=keep(counts.genres)))

    def before(table: str) -> DataFrame:
        return lake.read(spark, paths[f"gold/{table}"], version=diff.previous.outputs[f"gold/{table}"])

    entering, leaving = diff.entering.select(*GOLD_READS), diff.leaving.select(*GOLD_READS)
    start = as_of - timedelta(days=g.feature_window_days)
    values = updated_sums(before("window_catalog"), catalog_values(entering, CATALOG_SPECS),
                          catalog_values(leaving, CATALOG_SPECS), list(CATALOG_KEY), ["n"], ("last_seen", start))
    pairs = updated_interactions(before("interactions"), entering, leaving, start, weights, g.confidence)
    genres = updated_sums(before("user_genres"), genre_plays(entering), genre_plays(leaving), [USER_KEY, "genre"],
                          ["n"], ("last_play", start))
    features_before = before("user_features")
    # The recent plays before, plus those entering the last RECENT_DAYS, minus those that left them.
    recent_days = min(RECENT_DAYS, g.feature_window_days)
    recent = updated_sums(features_before, recent_plays(entering, as_of - timedelta(days=recent_days)),
                          recent_plays(diff.left(recent_days).select(*GOLD_READS)), [USER_KEY], ["plays_30d"])
    # The recent songs are among the songs before still in the window and the plays entering: one
    # that left is older than any still in it, and so is every play that the user's last songs before
    # had crowded out.
    before_songs = own_features(features_before.select(USER_KEY, "recent_tracks"))
    kept = before_songs.select(USER_KEY, F.explode("recent_tracks").alias("_s")).select(USER_KEY, "_s.*")
    tracks = kept.filter(F.col(EVENT_TIME) >= F.lit(start)).unionByName(played_tracks(entering))
    return keep(values), keep(pairs), Listening(tracks, recent, keep(genres))


def gold_tables(spark: SparkSession, cfg: Config, as_of: datetime, keep: Persisted, silver_version: int | None = None,
                users_version: int | None = None) -> tuple[dict[str, DataFrame], dict[str, int], Change]:
    """The gold DataFrames as of `as_of` (not yet written) and the silver versions they read:
    `silver/events` at `silver_version` (default: the current one), `silver/users` at
    `users_version` (default: the one current at `as_of`). They are valid while `keep` lasts: the
    statistics and interactions more than one table reads are persisted there. The `Change` says
    how the window differs from the build before's (`window_sums` updates from it what it can).
    """
    g = cfg.gold
    events_path = lake.table_path(cfg.lake, "silver", "events")
    users_path = lake.table_path(cfg.lake, "silver", "users")
    version = lake.current_version(spark, events_path) if silver_version is None else silver_version
    users, users_version = users_as_of(spark, users_path, as_of, users_version)
    inputs = {"silver/events": version, "silver/users": users_version}
    paths = {f"gold/{t}": lake.table_path(cfg.lake, "gold", t) for t in GOLD_TABLES}
    outputs = {k: lake.current_version(spark, p) if lake.exists(spark, p) else None for k, p in paths.items()}
    silver = lake.read(spark, events_path, version=version)
    change = window_change(events_path, silver, version, previous_build(spark, cfg), as_of, g, outputs)
    events = in_window(silver, as_of, g.feature_window_days).select(*GOLD_READS)
    windows = Windows(g.feature_window_days, g.trending_recent_days, g.trending_baseline_days)
    values, pairs, counts = window_sums(spark, g, change, events, as_of, paths, keep=keep)
    artists = catalog_fields_from(values, CATALOG_SPECS, "artist")
    tracks = catalog_fields_from(values, CATALOG_SPECS, "track")
    a_stats = keep(artist_stats(events, artists, pairs, as_of, windows, keep=keep))
    t_stats = keep(track_stats(events, tracks, as_of, windows, keep=keep))
    features = user_features(users, events, pairs, (a_stats, t_stats), counts,
                             max_artists=g.max_favourite_artists, max_tracks=g.max_recent_tracks)
    features = features.withColumn(FEATURE_HASH, feature_hash(features))
    return {"artist_stats": a_stats, "track_stats": t_stats, "user_features": features,
            "interactions": pairs, "window_catalog": values, "user_genres": counts.genres}, inputs, change


def build_gold(spark: SparkSession, cfg: Config, as_of: datetime, silver_version: int | None = None,
               users_version: int | None = None) -> GoldBuild:
    """Build every gold table from silver as of `as_of` (optionally old silver versions, see
    `gold_tables`) and record the build.
    """
    build_id = uuid.uuid4().hex
    with Persisted() as keep:
        tables, inputs, change = gold_tables(spark, cfg, as_of, keep, silver_version, users_version)
        for table, (key, idx) in ID_MAP.items():
            source = tables["interactions"].select(key)
            update_id_map(spark, lake.table_path(cfg.lake, "gold", f"id_map_{table}"), source, key, idx)
        id_maps = {t: lake.read(spark, lake.table_path(cfg.lake, "gold", f"id_map_{t}")) for t in ID_MAP}
        tables["interactions"] = with_ids(tables["interactions"], id_maps["users"], id_maps["artists"])
        for table in ID_MAP:
            id_map_path = lake.table_path(cfg.lake, "gold", f"id_map_{table}")
            inputs[f"gold/id_map_{table}"] = lake.current_version(spark, id_map_path)

        metadata = json.dumps({"build_id": build_id, AS_OF: as_of.isoformat(), "inputs": inputs,
                               "silver_at": change.silver_at.isoformat() if change.silver_at else None,
                               "settings": settings_digest(cfg.gold)}, sort_keys=True)
        outputs = {}
        for name, df in tables.items():
            path = lake.table_path(cfg.lake, "gold", name)
            lake.overwrite(df.withColumn(AS_OF, F.lit(as_of)), path, metadata)
            outputs[f"gold/{name}"] = lake.current_version(spark, path)
    row = (build_id, as_of, datetime.now(as_of.tzinfo), inputs, outputs)
    lake.append(spark.createDataFrame([row], GOLD_BUILDS.schema), GOLD_BUILDS.path(cfg.lake))
    return GoldBuild(build_id, as_of, inputs, outputs, change.full_because)
