"""The feature store's online sides: PostgreSQL `user_features` and one Redis hash per user.

Incremental: each user's features carry a `feature_hash` (SHA-256 of their JSON); only users
whose hash differs from the previous `gold/user_features` version are written, and users that
vanished (deleted accounts) are removed. Redis is written from the executors through the one
Redis sink (`recsys.stores.redis.load_hashes`), never through the driver.

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
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.frames import Persisted
from recsys.keys import artist_names_key, features_key
from recsys.stores.postgres import connect, delete_keys, write_jdbc
from recsys.stores.redis import by_hash, load_hashes
from recsys.stores.redis import connect as redis_connect
from recsys.stores.resp import bulk_strings
from recsys.tables import ARTIST_ID, AS_OF, GOLD_FEATURE_STORE_SYNCS, USER_KEY

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


def with_feature_hash(features: DataFrame) -> DataFrame:
    """Features with `feature_hash`: a digest of everything but the key and the build time."""
    payload = F.to_json(F.struct(*[c for c in features.columns if c not in (USER_KEY, AS_OF)]))
    return features.withColumn("feature_hash", F.sha2(payload, 256))


@dataclass(frozen=True)
class SyncReport:
    """How many users the feature store sync wrote and removed, and artist names it wrote."""
    changed: int
    removed: int
    artist_names: int = 0


def changed_since(spark: SparkSession, path: str, previous_version: int | None) -> tuple[DataFrame, DataFrame]:
    """Rows of the current `gold/user_features` that are new or changed, and keys that vanished."""
    current = with_feature_hash(lake.read(spark, path))
    if previous_version is not None and previous_version == lake.current_version(spark, path):
        return current.limit(0), spark.createDataFrame([], "user_key string")
    if previous_version is None:
        return current, spark.createDataFrame([], "user_key string")
    # Forgetting syncs, erases users from this table and from both stores itself, so the erasure's
    # version is the state the stores hold when it is later than the last sync.
    before_version = lake.readable(spark, path, previous_version)
    before = with_feature_hash(lake.read(spark, path, version=before_version)).select(USER_KEY, "feature_hash")
    changed = current.join(before, on=[USER_KEY, "feature_hash"], how="left_anti")
    removed = before.select(USER_KEY).join(current.select(USER_KEY), on=USER_KEY, how="left_anti")
    return changed, removed


def write_postgres(changed: DataFrame, removed: list[str], cfg: Config, stage_suffix: str) -> None:
    """Upsert changed users into the PostgreSQL features table through a staging table; delete removed ones."""
    stage = f"{PG_TABLE}_stage_{stage_suffix}"
    columns = [USER_KEY, AS_OF, *SCALARS, *JSON_COLUMNS, "feature_hash"]
    staged = changed.select(USER_KEY, AS_OF, *SCALARS, *[F.to_json(c).alias(c) for c in JSON_COLUMNS],
                            "feature_hash")
    with connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(PG_DDL)
    write_jdbc(staged, cfg.postgres, stage, mode="overwrite")
    select = ", ".join(f"{c}::jsonb" if c in JSON_COLUMNS else c for c in columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != USER_KEY)
    with connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {PG_TABLE} ({', '.join(columns)}) SELECT {select} FROM {stage} "
                    f"ON CONFLICT (user_key) DO UPDATE SET {updates}, updated_at = now()")
        cur.execute(f"DROP TABLE {stage}")
        if removed:
            cur.execute(f"DELETE FROM {PG_TABLE} WHERE user_key = ANY(%s)", (removed,))


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
    version = lake.current_version(spark, path)
    changed, removed_df = changed_since(spark, path, previous_version)
    removed = [r.user_key for r in removed_df.collect()]  # deletions only: small by nature
    with Persisted() as keep:
        changed = keep(changed)
        n = changed.count()
        write_postgres(changed, removed, cfg, stage_suffix)
        write_redis(changed, removed, cfg)
    names = sync_artist_names(spark, cfg)
    lake.append(spark.createDataFrame([(version, datetime.now(UTC), n, len(removed))],
                                      GOLD_FEATURE_STORE_SYNCS.schema), syncs_path)
    return SyncReport(changed=n, removed=len(removed), artist_names=names)
