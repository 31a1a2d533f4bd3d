"""The feature store's online sides: PostgreSQL `user_features` and one Redis hash per user.

Incremental. A user's row holds what is the user's own: scalars, top genres, and the arrays'
own fields (`gold.features.OWN_FIELDS`: ids, the user's plays and times, completion), with the
digest of them that the build stored (`feature_hash`). Only users whose digest differs from the
previous `gold/user_features` version are written, and users that vanished (deleted accounts)
are removed. The artists' and songs' statistics, which move for everyone whenever anyone plays,
are written once per sync to `feature_artists` and `feature_tracks` (replaced whole, in one
transaction), and the view `user_features_full` joins them back into the arrays: it shows each
user's row as `gold/user_features` holds it. Copied into every row, they made every sync
rewrite every user.
Redis is written from the executors through the one Redis sink
(`recsys.stores.redis.load_hashes`), never through the driver.

Redis key layout (prefix `gold.redis_prefix`, default `recsys`):
    <prefix>:features:<user_key>  hash, TTL `gold.feature_ttl_s`
        age_group, city, region, country, plays_30d, distinct_artists, as_of
        top_genres            JSON list of genre names
        favourite_artist_ids  JSON list of artist ids, newest engagement first
        recent_track_ids      JSON list of track ids, newest play first
    <prefix>:artists              hash, artist_id -> name, every artist of `gold/artist_stats`;
        replaced whole by each sync (loaded under a temporary key, then renamed over it);
        `publish` copies it into each version it publishes, inside Redis
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.frames import Persisted
from recsys.gold.features import FEATURE_HASH, feature_hash, own_features
from recsys.keys import artist_names_key, features_key
from recsys.stores.postgres import connect, delete_keys, staged
from recsys.stores.postgres import tables as postgres_tables
from recsys.stores.redis import by_hash, load_hashes
from recsys.stores.redis import connect as redis_connect
from recsys.stores.resp import bulk_strings
from recsys.tables import ARTIST_ID, AS_OF, EVENT_TIME, GOLD_FEATURE_STORE_SYNCS, TRACK_ID, USER_KEY

PG_TABLE = "user_features"
PG_DDL = f"""
CREATE TABLE IF NOT EXISTS {PG_TABLE} (
    user_key text PRIMARY KEY,
    as_of timestamptz NOT NULL,
    age_group text, city text, region text, country text,
    plays_30d bigint, distinct_artists bigint,
    top_genres jsonb, favourite_artists jsonb, recent_tracks jsonb,
    feature_hash text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
SCALARS = ("age_group", "city", "region", "country", "plays_30d", "distinct_artists")
JSON_COLUMNS = ("top_genres", "favourite_artists", "recent_tracks")
# Per statistics table: its key, its gold table, and the columns with their PostgreSQL types.
STATS = {
    "feature_artists": (ARTIST_ID, "artist_stats", {
        "artist_name": "text", "genres": "jsonb", "active_days": "bigint", "trending_rank": "integer",
        "followers": "bigint"}),
    "feature_tracks": (TRACK_ID, "track_stats", {
        "track_name": "text", "active_days": "bigint", "trending_rank": "integer", "likes": "bigint",
        "avg_listen_ms": "double precision", "std_listen_ms": "double precision"}),
}
FULL_VIEW = "user_features_full"


def _stats_ddl(table: str) -> str:
    key, _, columns = STATS[table]
    typed = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({key} text PRIMARY KEY, {typed})"


def _own(field: str) -> str:
    """SQL for one of the user's own fields of the array element `e`."""
    return f"e->'{field}'"


def _array_sql(column: str, fields: list[tuple[str, str]], joins: str) -> str:
    """SQL rebuilding one array of `user_features` with its statistics, in the array's order:
    `fields` are (name, expression over the element `e` and the joined statistics).
    """
    built = ", ".join(f"'{name}', {expr}" for name, expr in fields)
    return (f"CASE WHEN f.{column} IS NOT NULL THEN COALESCE(("
            f"SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object({built})) ORDER BY n) "
            f"FROM jsonb_array_elements(f.{column}) WITH ORDINALITY AS x(e, n) {joins}), '[]'::jsonb) END")


def _view_ddl() -> str:
    """`user_features_full`: `user_features` with the arrays' statistics joined back, each element
    with the fields (and order) of `gold/user_features`; JSON nulls are left out, as Spark does.
    """
    favourites = _array_sql("favourite_artists", [
        (ARTIST_ID, _own(ARTIST_ID)), ("artist_name", "a.artist_name"), ("genres", "a.genres"),
        ("active_days", "a.active_days"), ("trending_rank", "a.trending_rank"), ("followers", "a.followers"),
        ("user_plays", _own("user_plays")), ("last_interaction", _own("last_interaction")),
    ], f"LEFT JOIN feature_artists a ON a.{ARTIST_ID} = e->>'{ARTIST_ID}'")
    recent = _array_sql("recent_tracks", [
        (TRACK_ID, _own(TRACK_ID)), ("track_name", "t.track_name"), (ARTIST_ID, _own(ARTIST_ID)),
        ("artist_name", "a.artist_name"), ("genres", "a.genres"), ("active_days", "t.active_days"),
        ("trending_rank", "t.trending_rank"), ("followers", "a.followers"), ("likes", "t.likes"),
        ("avg_listen_ms", "t.avg_listen_ms"), ("std_listen_ms", "t.std_listen_ms"),
        ("completion", _own("completion")), (EVENT_TIME, _own(EVENT_TIME)),
    ], f"LEFT JOIN feature_tracks t ON t.{TRACK_ID} = e->>'{TRACK_ID}' "
       f"LEFT JOIN feature_artists a ON a.{ARTIST_ID} = e->>'{ARTIST_ID}'")
    scalars = ", ".join(f"f.{c}" for c in (USER_KEY, AS_OF, *SCALARS, "top_genres"))
    return (f"CREATE OR REPLACE VIEW {FULL_VIEW} AS SELECT {scalars}, {favourites} AS favourite_artists, "
            f"{recent} AS recent_tracks, f.feature_hash FROM {PG_TABLE} f")


@dataclass(frozen=True)
class SyncReport:
    """How many users the feature store sync wrote and removed, and artist names it wrote."""
    changed: int
    removed: int
    artist_names: int = 0


def _hashed(features: DataFrame) -> DataFrame:
    """`gold/user_features` rows with the digest their build stored. Rows built before builds stored
    it (versions older than the column, or `make migrate`d and not rebuilt yet) get it computed.
    """
    if FEATURE_HASH not in features.columns:
        return features.withColumn(FEATURE_HASH, feature_hash(features))
    return features.withColumn(FEATURE_HASH, F.coalesce(FEATURE_HASH, feature_hash(features)))


def _digests(features: DataFrame) -> DataFrame:
    """(user_key, feature_hash) of a `gold/user_features` version: the stored digests, read alone
    (Delta's per-file null counts answer whether any is missing), unless some must be computed.
    """
    if FEATURE_HASH in features.columns and not features.filter(F.col(FEATURE_HASH).isNull()).limit(1).count():
        return features.select(USER_KEY, FEATURE_HASH)
    return _hashed(features).select(USER_KEY, FEATURE_HASH)


def changed_since(spark: SparkSession, path: str, previous_version: int | None) -> tuple[DataFrame, DataFrame]:
    """Own features (`own_features`) of the current `gold/user_features` rows that are new or
    changed, and keys that vanished. Only the digests of the version before are read.
    """
    current = own_features(_hashed(lake.read(spark, path)))
    if previous_version is not None and previous_version == lake.current_version(spark, path):
        return current.limit(0), spark.createDataFrame([], "user_key string")
    if previous_version is None:
        return current, spark.createDataFrame([], "user_key string")
    # Forgetting syncs, erases users from this table and from both stores itself, so the erasure's
    # version is the state the stores hold when it is later than the last sync.
    before_version = lake.readable(spark, path, previous_version)
    before = _digests(lake.read(spark, path, version=before_version))
    changed = current.join(before, on=[USER_KEY, FEATURE_HASH], how="left_anti")
    removed = before.select(USER_KEY).join(current.select(USER_KEY), on=USER_KEY, how="left_anti")
    return changed, removed


def write_postgres(changed: DataFrame, removed: list[str], cfg: Config, stage_suffix: str) -> None:
    """Upsert changed users into the PostgreSQL features table through a staging table; delete removed ones."""
    columns = [USER_KEY, AS_OF, *SCALARS, *JSON_COLUMNS, FEATURE_HASH]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != USER_KEY)
    with (staged(changed.select(*columns), cfg.postgres, PG_TABLE, stage_suffix, JSON_COLUMNS) as rows,
          connect(cfg.postgres) as conn, conn.cursor() as cur):
        cur.execute(f"INSERT INTO {PG_TABLE} ({', '.join(columns)}) {rows} "
                    f"ON CONFLICT (user_key) DO UPDATE SET {updates}, updated_at = now()")
        if removed:
            cur.execute(f"DELETE FROM {PG_TABLE} WHERE user_key = ANY(%s)", (removed,))


def create_tables(cfg: Config) -> None:
    """The features table, the statistics tables and the view over them, unless they exist."""
    with connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(PG_DDL)
        for table in STATS:
            cur.execute(_stats_ddl(table))
        cur.execute(_view_ddl())


def write_statistics(spark: SparkSession, cfg: Config, stage_suffix: str) -> None:
    """Replace `feature_artists` and `feature_tracks` with the current gold statistics, both in one
    transaction: a reader of `user_features_full` sees the old or the new statistics, never a mix.
    """
    with ExitStack() as stack:
        staged_rows = {}
        for table, (key, gold_table, columns) in STATS.items():
            stats = lake.read(spark, lake.table_path(cfg.lake, "gold", gold_table)).select(key, *columns)
            json_columns = [c for c, kind in columns.items() if kind == "jsonb"]
            staged_rows[table] = stack.enter_context(staged(stats, cfg.postgres, table, stage_suffix, json_columns))
        with connect(cfg.postgres) as conn, conn.cursor() as cur:
            for table, (key, _, columns) in STATS.items():
                cur.execute(f"DELETE FROM {table}")  # not TRUNCATE: readers keep the old rows until commit
                cur.execute(f"INSERT INTO {table} ({key}, {', '.join(columns)}) {staged_rows[table]}")


def write_redis(changed: DataFrame, removed: list[str], cfg: Config) -> None:
    """Replace changed users' Redis hashes (expiring after `gold.feature_ttl_s`); delete removed users' keys.

    Through the one Redis sink (`stores.redis.load_hashes`): each user's fields as adjacent rows.
    """
    entries = changed.select(
        F.col(USER_KEY).alias("hash"),
        F.explode(F.array(*[F.struct(F.lit(name).alias("field"), value.alias("value"))
                            for name, value in _redis_fields().items()])).alias("e"),
    ).select("hash", bulk_strings(F.col("e.field"), F.col("e.value")).alias("entry"))
    load_hashes(by_hash(entries), cfg.redis,
                features_key(cfg.gold.redis_prefix, ""), cfg.publish.batch_size,
                replace=True, ttl_s=cfg.gold.feature_ttl_s).collect()
    _delete_redis_features(cfg, removed)


def sync_artist_names(spark: SparkSession, cfg: Config, artists: DataFrame | None = None) -> int:
    """Replace `<gold.redis_prefix>:artists` with the names of `gold/artist_stats` (or of `artists`:
    artist_id, artist_name) in one step; how many. Loaded from the executors under a temporary key
    that expires unless renamed over the catalog, so readers (publish) see the old or the new whole.
    """
    if artists is None:
        artists = lake.read(spark, lake.table_path(cfg.lake, "gold", "artist_stats"))
    key = artist_names_key(cfg.gold.redis_prefix)
    temp = uuid.uuid4().hex
    entries = artists.select(F.lit(temp).alias("hash"),
                             bulk_strings(F.col(ARTIST_ID), F.coalesce("artist_name", F.lit(""))).alias("entry"))
    load_hashes(entries.coalesce(1), cfg.redis, f"{key}:", cfg.publish.batch_size,
                ttl_s=cfg.publish.expire_after_s).collect()
    client = redis_connect(cfg.redis)
    written = client.hlen(f"{key}:{temp}")
    if written:
        pipe = client.pipeline(transaction=True)
        pipe.rename(f"{key}:{temp}", key)
        pipe.persist(key)
        pipe.execute()
    else:
        client.delete(key)
    client.close()
    return written


def _delete_redis_features(cfg: Config, user_keys: list[str]) -> None:
    if user_keys:
        client = redis_connect(cfg.redis)
        client.delete(*[features_key(cfg.gold.redis_prefix, k) for k in user_keys])
        client.close()


def forget_features(cfg: Config, user_keys: list[str]) -> None:
    """Delete the users from both feature stores (PostgreSQL table, Redis hashes) at once."""
    delete_keys(cfg.postgres, PG_TABLE, USER_KEY, user_keys)
    _delete_redis_features(cfg, user_keys)


def _redis_fields() -> dict[str, Column]:
    """The hash's fields as string columns; a missing scalar is the empty string."""
    fields = {c: F.coalesce(F.col(c).cast("string"), F.lit("")) for c in SCALARS}
    return {**fields,
            AS_OF: F.date_format(AS_OF, "yyyy-MM-dd'T'HH:mm:ss"),
            "top_genres": F.to_json(F.coalesce("top_genres", F.array().cast("array<string>"))),
            "favourite_artist_ids": F.to_json(F.coalesce(F.col("favourite_artists.artist_id"),
                                                         F.array().cast("array<string>"))),
            "recent_track_ids": F.to_json(F.coalesce(F.col("recent_tracks.track_id"),
                                                     F.array().cast("array<string>")))}


SYNCS = "feature_store_syncs"


def sync_feature_store(spark: SparkSession, cfg: Config, stage_suffix: str) -> SyncReport:
    """Push what changed in `gold/user_features` since the last sync to PostgreSQL and Redis.

    The synced version is recorded only after both stores are written; both writes are
    idempotent, so a sync that failed half way is simply redone from the same version.
    """
    path = lake.table_path(cfg.lake, "gold", "user_features")
    syncs_path = lake.table_path(cfg.lake, "gold", SYNCS)
    lake.ensure_table(spark, syncs_path)
    previous_version = lake.read(spark, syncs_path).agg(F.max("version")).collect()[0][0]
    if not set(STATS) <= set(postgres_tables(cfg.postgres)):
        previous_version = None  # rows written before the statistics were stored apart are rewritten
    create_tables(cfg)
    version = lake.current_version(spark, path)
    changed, removed_df = changed_since(spark, path, previous_version)
    removed = [r.user_key for r in removed_df.collect()]  # deletions only: small by nature
    with Persisted() as keep:
        changed = keep(changed)
        n = changed.count()
        write_postgres(changed, removed, cfg, stage_suffix)
        write_redis(changed, removed, cfg)
    write_statistics(spark, cfg, stage_suffix)
    names = sync_artist_names(spark, cfg)
    lake.append(spark.createDataFrame([(version, datetime.now(UTC), n, len(removed))],
                                      GOLD_FEATURE_STORE_SYNCS.schema), syncs_path)
    return SyncReport(changed=n, removed=len(removed), artist_names=names)
