"""Publish `gold/recommendations` to Redis as a new version, switched live in one atomic step.

1. Executors stream the table's rows as they are: each row is one user's list for one model
   alias, its `payload` rendered by the batch (`recsys.model.batch`), so publishing neither
   explodes nor regroups anything. Spark encodes (user_key, payload) in Redis's wire format with
   the user's shard hash, `<alias>:<shard>`, in one partition per core; each executor groups an
   Arrow batch by hash and sends multi-field HSETs, `publish.batch_size` fields per round trip
   (`HashLoader`, the mass-insertion approach Redis documents). Meanwhile the driver builds the
   small segment lists.
2. They write under an attempt's own staging name whose keys expire after `publish.expire_after_s`,
   so a failed or killed attempt leaves nothing that lasts and never touches a version's keys.
3. The same job observes what it read: lists, batch ids, model versions. The version is the one
   batch id (more than one is an error; if it is live already, nothing changes), and the written
   hash lengths must add up to the lists read.
4. Then in one MULTI/EXEC: the version's keys (a crashed attempt's) are deleted, the staging hashes
   renamed to them, the artist names the feature-store sync keeps (`<gold.redis_prefix>:artists`,
   written first if missing or if `artists` is given) copied inside Redis, segment lists and meta
   written.
5. Only then, in one more MULTI/EXEC: `live` points to the new version, it heads the version list,
   its keys lose their TTL, and versions beyond `publish.keep_versions` get one. A failure anywhere
   before leaves the previous version live.
`rollback` switches `live` to the newest other version still kept.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import redis
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, PublishConfig
from recsys.gold.store import sync_artist_names
from recsys.keys import artist_names_key
from recsys.serving.store import (
    artists_key,
    live_key,
    meta_key,
    segments_key,
    shard_key,
    version_keys,
    version_prefix,
    versions_key,
)
from recsys.stores.redis import connect, load_hashes, per_core, text, texts
from recsys.stores.resp import bulk_strings
from recsys.tables import ARTIST_ID


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
    write_seconds: float = 0.0  # the Spark job writing the table's rows to Redis
    write_window: float = 0.0   # first command sent to last reply received, across executors
    already_live: bool = False


def _lists(recs: DataFrame, shards: int) -> DataFrame:
    """The lists as hash entries below the version's key prefix, encoded for the wire
    (`bulk_strings`): hash `<alias>:<shard>`, field user key, value payload, one partition per
    core; the loader groups each Arrow batch by hash so that it sends multi-field HSETs.
    """
    shard = (F.crc32(F.col("user_key")) % shards).cast("string")
    return per_core(recs.select("model_alias", "model_version", "batch_id",
                                F.concat("model_alias", F.lit(":"), shard).alias("hash"),
                                bulk_strings(F.col("user_key"), F.col("payload")).alias("entry")))


def _segment_lists(segs: DataFrame) -> dict[str, bytes]:
    """Segment -> list JSON (store.py's format) of the small `gold/segment_recommendations`, built here."""
    lists: dict[str, list[tuple[int, list[str]]]] = {}
    for r in segs.select("segment", "rank", ARTIST_ID, F.round("score", 4).cast("string").alias("s")).collect():
        lists.setdefault(r["segment"], []).append((r["rank"], [r[ARTIST_ID], r["s"]]))
    return {seg: orjson.dumps({"src": "segment", "items": [item for _, item in sorted(rows)]})
            for seg, rows in lists.items()}


def publish(spark: SparkSession, cfg: Config, recommendations: DataFrame | None = None,
            segments: DataFrame | None = None, artists: DataFrame | None = None) -> PublishReport:
    """Publish the given (default: the current gold) recommendations, segment lists and artist names."""
    p: PublishConfig = cfg.publish
    started = time.monotonic()

    def gold(name: str, given: DataFrame | None) -> DataFrame:
        return given if given is not None else lake.read(spark, lake.table_path(cfg.lake, "gold", name))

    recs = gold("recommendations", recommendations)
    client = connect(cfg.redis)
    previous = text(client.get(live_key(p.prefix))) or None
    names = artist_names_key(cfg.gold.redis_prefix)
    if artists is not None or not client.exists(names):  # the feature-store sync keeps them otherwise
        sync_artist_names(spark, cfg, artists)
    staging = uuid.uuid4().hex  # this attempt's keys, expiring unless renamed to the version's
    read = Observation()
    entries = _lists(recs, p.shards).observe(
        read, F.count(F.lit(1)).alias("lists"), F.collect_set("batch_id").alias("batches"),
        F.collect_set(F.struct("model_alias", "model_version")).alias("models"))
    with ThreadPoolExecutor(1) as pool:  # the small segment lists meanwhile, in a job of their own
        seg_lists = pool.submit(_segment_lists, gold("segment_recommendations", segments))
        writing = time.monotonic()
        tasks = load_hashes(entries, cfg.redis, version_prefix(p.prefix, staging), p.batch_size,
                            ttl_s=p.expire_after_s).collect()
        write_seconds = time.monotonic() - writing
        segment_lists = seg_lists.result()
    wrote = [t for t in tasks if t["first_sent"]]
    window = max(t["last_reply"] for t in wrote) - min(t["first_sent"] for t in wrote) if wrote else 0.0
    counts = read.get
    models = {m["model_alias"]: m["model_version"] for m in counts["models"]}
    models_json, shards = orjson.dumps(models), str(p.shards).encode()
    staged = version_keys(p.prefix, staging, {b"models": models_json, b"shards": shards})
    if len(counts["batches"]) != 1:
        client.delete(*staged)
        raise PublishError(f"recommendations must come from exactly one batch, found {len(counts['batches'])} "
                           f"(run `make recommend`); {previous or 'nothing'} stays live")
    version = counts["batches"][0]
    if previous == version:  # a rerun: the version is live already
        client.delete(*staged)
        return PublishReport(version, previous, {}, 0, 0, time.monotonic() - started, already_live=True)

    pipe = client.pipeline(transaction=False)
    for name in models:
        for shard in range(p.shards):
            pipe.hlen(shard_key(p.prefix, staging, name, shard))
    pipe.hlen(names)
    *lengths, artists_written = pipe.execute()
    written = {name: sum(lengths[i * p.shards:(i + 1) * p.shards]) for i, name in enumerate(models)}
    if sum(written.values()) != counts["lists"]:
        raise PublishError(f"version {version}: wrote {sum(written.values())} lists, read {counts['lists']} (a user "
                           f"listed twice for an alias?); {previous or 'nothing'} stays live")

    pipe = client.pipeline(transaction=True)
    pipe.delete(*version_keys(p.prefix, version, {b"models": models_json, b"shards": shards}))
    for i, name in enumerate(models):
        for shard in range(p.shards):
            if lengths[i * p.shards + shard]:
                pipe.rename(shard_key(p.prefix, staging, name, shard), shard_key(p.prefix, version, name, shard))
    pipe.copy(names, artists_key(p.prefix, version))  # the names as of this version, copied inside Redis
    if segment_lists:
        pipe.hset(segments_key(p.prefix, version), mapping=segment_lists)  # type: ignore[arg-type]
    pipe.hset(meta_key(p.prefix, version), mapping={
        "models": models_json, "shards": shards, "users": orjson.dumps(written),
        "published_at": datetime.now(UTC).isoformat()})
    pipe.execute()
    _switch(client, p, version)
    return PublishReport(version, previous, written, len(segment_lists), artists_written, time.monotonic() - started,
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
