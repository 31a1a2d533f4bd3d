"""`make bench-publish`: published recommendation lists per second against `redis-benchmark` SET
throughput with the same value size, on the same Redis server.

A synthetic `gold/recommendations` (default 100,000 users x K = 50, one model alias) is published
with `recsys.serving.publish` end to end (list JSON built in Spark, parallel pipelined writes
from the executors, count verification, atomic switch). The yardstick is
`redis-benchmark -t set -d <mean list size> -P <pipeline> -c <clients>` against the same server;
the target is at least 50% of its requests per second. The benchmark's keys use their own
prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import uuid
from urllib.parse import urlparse

from pyspark.sql import functions as F

from recsys.config import load_config
from recsys.serving.publish import publish
from recsys.serving.store import RecommendationStore, shard_key
from recsys.spark import get_spark
from recsys.stores.redis import connect


def synthetic(spark, users: int, k: int, batch: str):
    rows = spark.range(users).select(F.format_string("%064x", F.col("id")).alias("user_key")) \
        .crossJoin(spark.range(1, k + 1).select(F.col("id").cast("int").alias("rank")))
    return rows.select(
        "user_key", F.lit("champion").alias("model_alias"), F.lit("1").alias("model_version"),
        F.lit("run").alias("model_run_id"), "rank",
        F.format_string("ar%d", (F.xxhash64("user_key", "rank") % 20000).cast("int")).alias("artist_id"),
        F.format_string("Artist number %d", F.col("rank")).alias("artist_name"),
        (F.lit(1.0) - F.col("rank") / 100).cast("float").alias("score"), F.lit("als").alias("source"),
        F.lit("25-34|DE").alias("segment"), F.lit(batch).alias("batch_id")).repartition(8).persist()


def redis_benchmark(url: str, value_size: int, requests: int, pipeline: int, clients: int) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found: run scripts/install-prereqs.sh (Debian package redis-tools)")
    where = urlparse(url)
    out = subprocess.run([binary, "-h", where.hostname, "-p", str(where.port), "-t", "set", "-n", str(requests),
                          "-d", str(value_size), "-P", str(pipeline), "-c", str(clients), "-r", "1000000", "-q"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P")
    parser.add_argument("--clients", type=int, default=8, help="redis-benchmark -c")
    args = parser.parse_args()

    base = load_config()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = dataclasses.replace(base, publish=dataclasses.replace(base.publish, prefix=prefix))
    spark = get_spark(cfg.spark, app_name="recsys-bench-publish")
    recs = synthetic(spark, args.users, args.k, "bench")
    segs = spark.createDataFrame([("*", 1, "ar1", "Artist 1", 0.5, "bench")],
                                 "segment string, rank int, artist_id string, artist_name string, score float, "
                                 "batch_id string")
    print(f"{args.users:,} users x K = {args.k} ({recs.count():,} rows), {cfg.publish.shards} shards, "
          f"pipelines of {cfg.publish.batch_size}, spark {spark.sparkContext.master}")
    report = publish(spark, cfg, recs, segs)
    client = connect(cfg.redis)
    sample = client.hgetall(shard_key(prefix, "bench", "champion", 0))
    value_size = int(sum(len(v) for v in sample.values()) / max(1, len(sample)))
    answer = RecommendationStore(client, prefix).get(next(iter(sample)).decode(), "champion", "*")
    assert answer is not None and len(answer.items) == args.k
    per_s = args.users / report.write_seconds
    yardstick = redis_benchmark(cfg.redis.url, value_size, min(args.users, 200_000), args.pipeline, args.clients)
    print(f"\npublish end to end: {report.seconds:.1f} s for {args.users:,} lists ({args.users / report.seconds:,.0f}"
          f" lists/s): Spark building the list JSON, writing, verifying, switching")
    print(f"writing to Redis: {report.write_seconds:.1f} s = {per_s:,.0f} lists/s (mean value {value_size} bytes)")
    print(f"redis-benchmark SET -d {value_size} -P {args.pipeline} -c {args.clients}: {yardstick:,.0f} requests/s")
    print(f"ratio: writing at {per_s / yardstick:.0%} of redis-benchmark (target >= 50%)")
    meta = client.hgetall(f"{prefix}:recs:bench:meta")
    keys = [f"{prefix}:recs:live", f"{prefix}:recs:versions", f"{prefix}:recs:bench:meta",
            f"{prefix}:recs:bench:segments",
            *(shard_key(prefix, "bench", a, s) for a in json.loads(meta[b"models"]) for s in range(cfg.publish.shards))]
    client.delete(*keys)


if __name__ == "__main__":
    main()
