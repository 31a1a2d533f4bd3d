"""Publish `gold/recommendations` to Redis as a new version, switched live in one atomic step.

1. The version is the batch id of the recommendations. If it is live already, nothing happens;
   otherwise leftovers of an earlier, failed attempt at it are deleted.
2. Executors write their partitions in parallel: one list JSON per (alias, user) on the user's
   shard hash, and each artist's name once in the version's `artists` hash. Spark encodes the
   entries in Redis's wire format and sorts them by hash; an executor streams them as
   multi-field HSETs, `publish.batch_size` fields per round trip (`HashLoader`, the
   mass-insertion approach Redis documents).
3. The written field counts are checked against the table (per alias, artists, segment lists).
4. Only then, in one MULTI/EXEC: `live` points to the new version, it heads the version list,
   and versions beyond `publish.keep_versions` get a TTL. A failure anywhere before leaves the
   previous version live (and the partial one expiring).
`rollback` switches `live` to the newest other version still kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, PublishConfig
from recsys.serving.store import (
    ARTISTS,
    artists_key,
    live_key,
    meta_key,
    segments_key,
    shard_key,
    version_keys,
    version_prefix,
    versions_key,
)
from recsys.stores.redis import by_hash, connect, load_hashes, text, texts
from recsys.stores.resp import bulk_strings


class PublishError(RuntimeError):
    """The written version does not match the table; the previous version stays live."""


@dataclass(frozen=True)
class PublishReport:
    """What one publish wrote and switched: version, users per alias, segments, artists, timings."""
    version: str
    previous: str | None
    users: dict[str, int]     # alias -> users written
    segments: int
    artists: int
    seconds: float            # the whole publish
    write_seconds: float = 0.0  # the Spark job writing the prepared entries to Redis
    write_window: float = 0.0   # first command sent to last reply received, across executors
    already_live: bool = False


def _list_json(rows: DataFrame, keys: list[str], **fields: Column) -> DataFrame:
    """`keys` plus `payload`: `{**fields, "items": [[artist_id, score], ...]}` in rank order,
    the list format `store.py` reads. `fields` map JSON names to per-group columns.
    """
    item = F.array(F.col("artist_id"), F.round("score", 4).cast("string"))
    items = F.array_sort(F.collect_list(F.struct("rank", item.alias("item")))).alias("_items")
    grouped = rows.groupBy(*keys).agg(*[c.alias(name) for name, c in fields.items()], items)
    payload = F.to_json(F.struct(*fields, F.transform("_items", lambda s: s["item"]).alias("items")))
    return grouped.select(*keys, payload.alias("payload"))


def _entries(recs: DataFrame, segs: DataFrame, shards: int) -> DataFrame:
    """The hash entries of a version below its key prefix, encoded for the wire (`bulk_strings`):
    one per (alias, user) in hash `<alias>:<shard>` (user key -> list JSON), and one per artist
    in hash `artists` (artist_id -> name; `model_alias` null). In one partition per core (a
    write task costs ~0.1 s to set up, more than writing 10,000 entries) and sorted by hash
    within it, so that every executor sends runs of one hash as multi-field HSETs.
    """
    lists = _list_json(recs, ["model_alias", "user_key"], v=F.first("model_version"), src=F.first("source"))
    shard = (F.crc32(F.col("user_key")) % shards).cast("string")
    users = lists.select("model_alias", F.concat("model_alias", F.lit(":"), shard).alias("hash"),
                         bulk_strings(F.col("user_key"), F.col("payload")).alias("entry"))
    named = recs.select("artist_id", "artist_name").unionByName(segs.select("artist_id", "artist_name"))
    artists = named.groupBy("artist_id").agg(F.max(F.coalesce("artist_name", F.lit(""))).alias("name")).select(
        F.lit(None).cast("string").alias("model_alias"), F.lit(ARTISTS).alias("hash"),
        bulk_strings(F.col("artist_id"), F.col("name")).alias("entry"))
    return by_hash(users.unionByName(artists))


def publish(spark: SparkSession, cfg: Config, recommendations: DataFrame | None = None,
            segments: DataFrame | None = None) -> PublishReport:
    """Publish the given (default: the current gold) recommendations and segment lists."""
    p: PublishConfig = cfg.publish
    started = time.monotonic()
    recs = recommendations if recommendations is not None else \
        lake.read(spark, lake.table_path(cfg.lake, "gold", "recommendations"))
    segs = segments if segments is not None else \
        lake.read(spark, lake.table_path(cfg.lake, "gold", "segment_recommendations"))
    batch_ids = [r[0] for r in recs.select("batch_id").distinct().limit(2).collect()]
    if len(batch_ids) != 1:
        raise PublishError(f"recommendations must come from exactly one batch, found {len(batch_ids)}")
    version = batch_ids[0]
    client = connect(cfg.redis)
    previous = text(client.get(live_key(p.prefix))) or None
    if previous == version:
        return PublishReport(version, previous, {}, 0, 0, 0.0, already_live=True)
    models = {r["model_alias"]: r["model_version"]
              for r in recs.select("model_alias", "model_version").distinct().collect()}
    leftovers = version_keys(p.prefix, version, {b"shards": str(p.shards).encode(),
                                                 b"models": json.dumps(models).encode()})
    client.delete(*leftovers)

    try:
        entries = _entries(recs, segs, p.shards).persist()
        expected = {r["model_alias"]: r["count"] for r in entries.groupBy("model_alias").count().collect()}
        expected_artists = expected.pop(None, 0)
        writing = time.monotonic()
        tasks = load_hashes(entries, cfg.redis, version_prefix(p.prefix, version), p.batch_size).collect()
        write_seconds = time.monotonic() - writing
        wrote = [t for t in tasks if t["first_sent"]]
        window = max(t["last_reply"] for t in wrote) - min(t["first_sent"] for t in wrote) if wrote else 0.0
        seg_rows = _list_json(segs, ["segment"], src=F.first(F.lit("segment"))).collect()  # a row per segment
        if seg_rows:
            client.hset(segments_key(p.prefix, version),
                        mapping={r["segment"]: r["payload"] for r in seg_rows})
        pipe = client.pipeline(transaction=False)
        for alias in models:
            for shard in range(p.shards):
                pipe.hlen(shard_key(p.prefix, version, alias, shard))
        lengths = pipe.execute()
        written = {alias: sum(lengths[i * p.shards:(i + 1) * p.shards]) for i, alias in enumerate(models)}
        segments_written = client.hlen(segments_key(p.prefix, version))
        artists_written = client.hlen(artists_key(p.prefix, version))
        if (written, segments_written, artists_written) != (expected, len(seg_rows), expected_artists):
            raise PublishError(f"version {version}: wrote {written} users, {segments_written} segments and "
                               f"{artists_written} artists, expected {expected}, {len(seg_rows)} and "
                               f"{expected_artists}; {previous or 'nothing'} stays live")
        client.hset(meta_key(p.prefix, version), mapping={
            "models": json.dumps(models), "shards": p.shards, "users": json.dumps(written),
            "published_at": datetime.now(UTC).isoformat()})
        entries.unpersist()
    except Exception:
        pipe = client.pipeline(transaction=False)
        for key in leftovers:
            pipe.expire(key, p.expire_after_s)
        pipe.execute()
        raise
    _switch(client, p, version)
    return PublishReport(version, previous, written, len(seg_rows), artists_written, time.monotonic() - started,
                         write_seconds, window)


def _switch(client: redis.Redis, p: PublishConfig, version: str) -> None:
    """Make `version` live and first in the list; expire what falls out of the kept window."""
    current = texts(client.lrange(versions_key(p.prefix), 0, -1))
    order = [version, *(v for v in current if v != version)]
    dropped = order[p.keep_versions:]
    tx = client.pipeline(transaction=True)
    tx.set(live_key(p.prefix), version)
    tx.delete(versions_key(p.prefix))
    tx.rpush(versions_key(p.prefix), *order[: p.keep_versions])
    for old in dropped:
        for key in version_keys(p.prefix, old, _meta(client, p.prefix, old)):
            tx.expire(key, p.expire_after_s)
    for key in version_keys(p.prefix, version, _meta(client, p.prefix, version)):
        tx.persist(key)  # a version brought back by rollback must not expire under the reader
    tx.execute()


def _meta(client: redis.Redis, prefix: str, version: str) -> dict[bytes, bytes]:
    """A version's meta hash, raw."""
    return {_raw(k): _raw(v) for k, v in client.hgetall(meta_key(prefix, version)).items()}


def _raw(reply: bytes | str) -> bytes:
    return reply if isinstance(reply, bytes) else reply.encode()


def rollback(cfg: Config) -> tuple[str | None, str]:
    """Switch `live` to the newest other kept version; returns (from, to)."""
    p = cfg.publish
    client = connect(cfg.redis)
    live = text(client.get(live_key(p.prefix))) or None
    candidates = [v for v in texts(client.lrange(versions_key(p.prefix), 0, -1)) if v != live]
    target = next((v for v in candidates if client.exists(meta_key(p.prefix, v))), None)
    if target is None:
        raise PublishError(f"nothing to roll back to: {live or 'no version'} is live and no other version is kept")
    _switch(client, p, target)
    return live, target
