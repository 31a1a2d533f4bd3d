"""`make bench-publish`: published recommendation lists per second, end to end, and the write
against `redis-benchmark` SET throughput with the same value size, on the same Redis server.

A synthetic `gold/recommendations` (default 100,000 users x K = 50, one model alias, as the batch
writes it: one row per list with its payload) and 20,000 artist names are written as Delta tables,
then published from them with `recsys.serving.publish` end to end (reading the tables, parallel
pipelined writes from the executors, count verification, renames, atomic switch, then `live`
checked) as a new version `--runs` + 1 times. Target: >= 100,000 lists/s end to end. The first
publish of a session warms up (Python workers, JVM code paths) and is reported apart. Each other
one is paired with a run of `redis-benchmark -t set -d <mean list size> -P <pipeline> -c <clients>`
against the same server a few seconds after it (`--settle-s`, once the JVM is idle), so both see
the same machine (on a shared 2-core host either swings by 1.5x between minutes); the result is
the median ratio, target at least 50%. Two write times are reported: the Spark job that writes
(with ~0.2 s of scheduling and Python worker hand-shakes), and the window from the first command
sent to the last reply received across executors, which is what redis-benchmark times and what
the ratio compares.
The benchmark's keys use their own prefix, redis-benchmark's a scratch db; all are deleted after."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlparse

from pyspark.sql import functions as F

from recsys.config import RedisConfig, load_config
from recsys.gold.store import sync_artist_names
from recsys.keys import artist_names_key
from recsys.model.batch import as_lists
from recsys.serving.publish import publish
from recsys.serving.store import RecommendationStore, live_key, meta_key, shard_key, version_keys, versions_key
from recsys.spark import get_spark
from recsys.stores.redis import connect, text

ARTISTS = 20_000


def synthetic(spark, users: int, k: int, root: str):
    """A `gold/recommendations` table of `users` lists of `k` (one alias), as the batch writes it,
    and the artist names; both written as Delta tables under `root` and read back.
    """
    rows = spark.range(users).select(F.format_string("%064x", F.col("id")).alias("user_key")) \
        .crossJoin(spark.range(1, k + 1).select(F.col("id").cast("int").alias("rank"))) \
        .withColumn("artist", F.pmod(F.xxhash64("user_key", "rank"), F.lit(ARTISTS)).cast("int"))
    flat = rows.select(
        "user_key", F.lit("champion").alias("model_alias"), F.lit("1").alias("model_version"),
        F.lit("run").alias("model_run_id"), "rank", F.format_string("ar%d", F.col("artist")).alias("artist_id"),
        F.format_string("Artist number %d", F.col("artist")).alias("artist_name"),
        (F.lit(1.0) - F.col("rank") / 100).cast("float").alias("score"), F.lit("als").alias("source"),
        F.lit("25-34|DE").alias("segment"), F.lit("b0").alias("batch_id"))
    names = spark.range(ARTISTS).select(F.format_string("ar%d", F.col("id")).alias("artist_id"),
                                        F.format_string("Artist number %d", F.col("id")).alias("artist_name"))
    tables = {"recommendations": as_lists(flat).repartition(spark.sparkContext.defaultParallelism), "artists": names}
    for name, df in tables.items():
        df.write.format("delta").mode("overwrite").save(f"{root}/{name}")
    return (spark.read.format("delta").load(f"{root}/{name}") for name in tables)


def redis_benchmark(cfg: RedisConfig, value_size: int, requests: int, pipeline: int, clients: int,
                    scratch_db: int) -> float:
    """SET requests per second on the configured server, with random keys in `scratch_db`
    (empty before, flushed after, so the yardstick's keys never pile up)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark not found: run scripts/install-prereqs.sh (Debian package redis-tools)")
    scratch = connect(dataclasses.replace(cfg, db=scratch_db))
    if scratch.dbsize():
        raise SystemExit(f"Redis db {scratch_db} is not empty: pick an empty --scratch-db for redis-benchmark")
    where = urlparse(cfg.url)
    host = where.hostname
    if host is None:
        raise SystemExit("redis.url names no host")
    # redis-benchmark 7 reads no password from the environment (REDISCLI_AUTH is redis-cli's): it goes
    # on the command line, visible in this machine's process list for the run's few seconds
    auth = ["-a", cfg.password] if cfg.password else []
    try:
        run = subprocess.run([binary, "-h", host, "-p", str(where.port), "--dbnum", str(scratch_db),
                              "-t", "set", "-n", str(requests), "-d", str(value_size), "-P", str(pipeline),
                              "-c", str(clients), "-r", "1000000", "-q", *auth],
                             capture_output=True, text=True, check=False)
        if run.returncode:  # its arguments hold the password: name the failure, not the command
            raise SystemExit(f"redis-benchmark failed ({run.returncode}): {run.stdout[-300:]}{run.stderr[-300:]}")
        out = run.stdout
    finally:
        scratch.flushdb()
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def clean_up(client, prefix: str, root: str) -> None:
    """Delete the benchmark's keys and tables."""
    keys = [live_key(prefix), versions_key(prefix), artist_names_key(prefix)]
    for version in (v.decode() for v in client.lrange(versions_key(prefix), 0, -1)):
        keys += version_keys(prefix, version, client.hgetall(meta_key(prefix, version)))
    client.delete(*keys)
    shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5, help="measured publishes after the first (warm-up) one")
    parser.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P")
    parser.add_argument("--clients", type=int, default=8, help="redis-benchmark -c")
    parser.add_argument("--settle-s", type=float, default=5.0, help="pause before each redis-benchmark run")
    parser.add_argument("--scratch-db", type=int, default=15, help="an empty Redis db for redis-benchmark's keys")
    args = parser.parse_args()

    base = load_config()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    cfg = dataclasses.replace(base, publish=dataclasses.replace(base.publish, prefix=prefix,
                                                                keep_versions=args.runs + 1),
                              gold=dataclasses.replace(base.gold, redis_prefix=prefix))
    spark = get_spark(cfg.spark, app_name="recsys-bench-publish")
    root = tempfile.mkdtemp(prefix="bench-publish-")
    recs, artists = synthetic(spark, args.users, args.k, root)
    segs = spark.createDataFrame([("*", 1, "ar1", "Artist 1", 0.5)],
                                 "segment string, rank int, artist_id string, artist_name string, score float")
    print(f"{args.users:,} users x K = {args.k} ({args.users * args.k:,} artists in {recs.count():,} lists, a Delta "
          f"table in {root}), {cfg.publish.shards} shards, {cfg.publish.batch_size} fields per round trip, "
          f"spark {spark.sparkContext.master}")
    client = connect(cfg.redis)
    syncing = time.monotonic()
    names = sync_artist_names(spark, cfg, artists)
    print(f"artist names for publish to copy, as the feature-store sync writes them: {names:,} in "
          f"{time.monotonic() - syncing:.2f} s (the first Spark job of the session)")
    reports, yardsticks = [], []
    for run in range(args.runs + 1):  # the same lists as a new version each time
        batch = F.lit(f"b{run}")
        reports.append(publish(spark, cfg, recs.withColumn("batch_id", batch), segs.withColumn("batch_id", batch)))
        if run == 0:
            sample = client.hgetall(shard_key(prefix, reports[0].version, "champion", 0))
            value_size = int(sum(len(v) for v in sample.values()) / max(1, len(sample)))
            answer = RecommendationStore(client, prefix).get(text(next(iter(sample))) or "", "champion", "*")
            assert answer is not None and len(answer.items) == args.k and all(name for _, name, _ in answer.items)
            print(f"publish 1 (warm-up): {reports[0].seconds:.1f} s end to end, write job "
                  f"{reports[0].write_seconds:.2f} s; lists of {args.k}: mean value {value_size} bytes, "
                  f"plus {reports[0].artists:,} artist names")
            continue
        time.sleep(args.settle_s)  # let the JVM's after-work (GC, cleanup) finish: the yardstick at its best
        yardsticks.append(redis_benchmark(cfg.redis, value_size, min(args.users, 200_000), args.pipeline,
                                          args.clients, args.scratch_db))
        r = reports[-1]
        assert client.get(live_key(prefix)) == r.version.encode() and r.users == {"champion": args.users}
        print(f"publish {run + 1}: {r.seconds:.2f} s end to end, write job {r.write_seconds:.2f} s, writing "
              f"{r.write_window:.2f} s = {args.users / r.write_window:,.0f} lists/s; then redis-benchmark "
              f"{yardsticks[-1]:,.0f} SET/s: {args.users / r.write_window / yardsticks[-1]:.0%}")

    measured = reports[1:]
    window = [args.users / r.write_window / y for r, y in zip(measured, yardsticks, strict=True)]
    job = [args.users / r.write_seconds / y for r, y in zip(measured, yardsticks, strict=True)]
    total = statistics.median(r.seconds for r in measured)
    print(f"\nmedians of {args.runs} publishes, each paired with a redis-benchmark run {args.settle_s:.0f} s after it "
          f"(SET -d {value_size} -P {args.pipeline} -c {args.clients}, same server; "
          f"median {statistics.median(yardsticks):,.0f} requests/s):")
    print(f"  writing (first command sent to last reply, across executors, what redis-benchmark times): "
          f"{statistics.median(r.write_window for r in measured):.2f} s, "
          f"**{statistics.median(window):.0%}** of redis-benchmark (range {min(window):.0%}-{max(window):.0%}; "
          f"target >= 50%)")
    best = max(yardsticks)
    print(f"  conservatively, median writing against the best redis-benchmark run ({best:,.0f} requests/s): "
          f"{args.users / statistics.median(r.write_window for r in measured) / best:.0%}")
    print(f"  the write job (incl. Spark scheduling it): {statistics.median(r.write_seconds for r in measured):.2f} s, "
          f"{statistics.median(job):.0%} (range {min(job):.0%}-{max(job):.0%})")
    print(f"  end to end: {total:.2f} s = **{args.users / total:,.0f} lists/s** (reading the table, writing, "
          f"verifying, renaming, switching; target >= 100,000 lists/s)")
    print(f"first publish of the session: the write job took {reports[0].write_seconds:.1f} s "
          f"({args.users / reports[0].write_seconds:,.0f} lists/s): it starts the Python workers and compiles "
          f"the JVM's Arrow paths, once per job")
    clean_up(client, prefix, root)

if __name__ == "__main__":
    main()
