"""Publish `gold/recommendations` to Redis as a new version, switched live in one atomic step.

1. The version is the batch id of the recommendations. If it is live already, nothing happens;
   otherwise leftovers of an earlier, failed attempt at it are deleted.
2. Executors write their partitions in parallel: one list JSON per (alias, user), grouped into
   multi-field HSETs on the user's shard hash and sent in pipelines of `publish.batch_size`.
3. The written field counts are checked against the table (per alias, and the segment lists).
4. Only then, in one MULTI/EXEC: `live` points to the new version, it heads the version list,
   and versions beyond `publish.keep_versions` get a TTL. A failure anywhere before leaves the
   previous version live (and the partial one expiring).
`rollback` switches `live` to the newest other version still kept.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, PublishConfig, RedisConfig
from recsys.serving.store import (
    live_key,
    meta_key,
    segments_key,
    shard_key,
    version_keys,
    versions_key,
)
from recsys.stores.redis import connect


class PublishError(RuntimeError):
    """The written version does not match the table; the previous version stays live."""


@dataclass(frozen=True)
class PublishReport:
    version: str
    previous: str | None
    users: dict[str, int]     # alias -> users written
    segments: int
    seconds: float            # the whole publish
    write_seconds: float = 0.0  # executors writing the prepared lists to Redis
    already_live: bool = False


def _list_json(rows: DataFrame, keys: list[str], **fields) -> DataFrame:
    """`keys` plus `payload`: `{**fields, "items": [[artist_id, name, score], ...]}` in rank order,
    the list format `store.py` reads. `fields` map JSON names to per-group columns."""
    item = F.array(F.col("artist_id"), F.coalesce("artist_name", F.lit("")), F.round("score", 4).cast("string"))
    items = F.array_sort(F.collect_list(F.struct("rank", item.alias("item")))).alias("_items")
    grouped = rows.groupBy(*keys).agg(*[c.alias(name) for name, c in fields.items()], items)
    payload = F.to_json(F.struct(*fields, F.transform("_items", lambda s: s["item"]).alias("items")))
    return grouped.select(*keys, payload.alias("payload"))


def _lists(recs: DataFrame, shards: int) -> DataFrame:
    """One row per (alias, user): shard and the list JSON."""
    lists = _list_json(recs, ["model_alias", "user_key"], v=F.first("model_version"), src=F.first("source"))
    return lists.select("model_alias", "user_key", (F.crc32(F.col("user_key")) % shards).alias("shard"), "payload")


def _writer(redis_cfg: RedisConfig, prefix: str, version: str, batch_size: int):
    def write_partition(rows) -> None:
        client = connect(redis_cfg)
        pipe = client.pipeline(transaction=False)
        pending: dict[str, dict[str, str]] = defaultdict(dict)
        buffered = 0

        def flush() -> None:
            for key, mapping in pending.items():
                pipe.hset(key, mapping=mapping)
            pipe.execute()
            pending.clear()

        for row in rows:
            pending[shard_key(prefix, version, row["model_alias"], row["shard"])][row["user_key"]] = row["payload"]
            buffered += 1
            if buffered >= batch_size:
                flush()
                buffered = 0
        if buffered:
            flush()
        client.close()

    return write_partition


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
    previous = client.get(live_key(p.prefix))
    previous = previous.decode() if previous else None
    if previous == version:
        return PublishReport(version, previous, {}, 0, 0.0, already_live=True)
    models = {r["model_alias"]: r["model_version"]
              for r in recs.select("model_alias", "model_version").distinct().collect()}
    leftovers = version_keys(p.prefix, version, {b"shards": str(p.shards).encode(),
                                                 b"models": json.dumps(models).encode()})
    client.delete(*leftovers)

    try:
        lists = _lists(recs, p.shards).persist()
        expected = {r["model_alias"]: r["count"] for r in lists.groupBy("model_alias").count().collect()}
        writing = time.monotonic()
        lists.foreachPartition(_writer(cfg.redis, p.prefix, version, p.batch_size))
        write_seconds = time.monotonic() - writing
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
        if written != expected or segments_written != len(seg_rows):
            raise PublishError(f"version {version}: wrote {written} users and "
                               f"{segments_written} segments, expected {expected} and "
                               f"{len(seg_rows)}; {previous or 'nothing'} stays live")
        client.hset(meta_key(p.prefix, version), mapping={
            "models": json.dumps(models), "shards": p.shards, "users": json.dumps(written),
            "published_at": datetime.now(UTC).isoformat()})
        lists.unpersist()
    except Exception:
        pipe = client.pipeline(transaction=False)
        for key in leftovers:
            pipe.expire(key, p.expire_after_s)
        pipe.execute()
        raise
    _switch(client, p, version)
    return PublishReport(version, previous, written, len(seg_rows), time.monotonic() - started, write_seconds)


def _switch(client, p: PublishConfig, version: str) -> None:
    """Make `version` live and first in the list; expire what falls out of the kept window."""
    current = [v.decode() for v in client.lrange(versions_key(p.prefix), 0, -1)]
    order = [version, *(v for v in current if v != version)]
    dropped = order[p.keep_versions:]
    tx = client.pipeline(transaction=True)
    tx.set(live_key(p.prefix), version)
    tx.delete(versions_key(p.prefix))
    tx.rpush(versions_key(p.prefix), *order[: p.keep_versions])
    for old in dropped:
        for key in version_keys(p.prefix, old, client.hgetall(meta_key(p.prefix, old))):
            tx.expire(key, p.expire_after_s)
    for key in version_keys(p.prefix, version, client.hgetall(meta_key(p.prefix, version))):
        tx.persist(key)  # a version brought back by rollback must not expire under the reader
    tx.execute()


def rollback(cfg: Config) -> tuple[str, str]:
    """Switch `live` to the newest other kept version; returns (from, to)."""
    p = cfg.publish
    client = connect(cfg.redis)
    live = client.get(live_key(p.prefix))
    live = live.decode() if live else None
    candidates = [v.decode() for v in client.lrange(versions_key(p.prefix), 0, -1) if v.decode() != live]
    target = next((v for v in candidates if client.exists(meta_key(p.prefix, v))), None)
    if target is None:
        raise PublishError(f"nothing to roll back to: {live or 'no version'} is live and no other version is kept")
    _switch(client, p, target)
    return live, target
