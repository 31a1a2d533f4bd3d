"""`make bench-layout`: `silver/events` partitioned by event date vs liquid-clustered by it, side by side.

Both tables get the same synthetic silver events, one append per day as silver's micro-batches
write them: each day's events, a share of late events from the days before, and copies of
already-stored events (re-sent ones, which the dedupe must drop). Then, for each layout:

- **append**: the seconds of all the daily appends, and the files they left;
- **dedupe**: silver's own lookup (`recsys.silver.events.new_events`) of one more day's batch:
  seconds, and the files its scan of the table read (the scan node's `numFiles` metric);
- **window**: a gold-style read of the last `--window` days (`recsys.gold.build.in_window`):
  seconds and files read;
- **OPTIMIZE**: what `make maintain` runs (clustering, for the clustered table), then the
  dedupe and window reads again;
- **forget**: `--forget` users' events deleted by a MERGE on their keys: seconds, files rewritten.

The clustered table keeps min/max statistics for `event_date` and `event_time` only
(`delta.dataSkippingStatsColumns`): liquid clustering skips files by them, and recsys keeps no
statistics of user columns in the Delta log (see `recsys/spark.py`). Defaults: 30 days x 100,000
events, 3% late by up to 3 days, 2% re-sent.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import load_config
from recsys.gold.build import in_window
from recsys.silver.events import new_events
from recsys.spark import get_spark
from recsys.tables import EVENT_DATE, EVENT_ID, EVENT_TIME, SILVER_EVENTS

KINDS = ("play",) * 7 + ("like", "follow", "playlist_add", "impression")


def day_events(spark: SparkSession, day: date, rows: int, late_share: float, late_days: int, seed: int) -> DataFrame:
    """`rows` silver events of `day` (a `late_share` of them up to `late_days` earlier), in silver's schema."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    back = F.when(F.rand(seed) < late_share, F.floor(F.rand(seed + 1) * late_days) + 1).otherwise(0)
    seconds = F.lit(start) + (F.rand(seed + 2) * 86_399).cast("long") - back.cast("long") * 86_400
    events = spark.range(rows).select(
        F.concat_ws("-", F.lit(day.isoformat()), "id").alias(EVENT_ID),
        F.array(*map(F.lit, KINDS))[(F.rand(seed + 3) * len(KINDS)).cast("int")].alias("event_type"),
        F.timestamp_seconds(seconds).alias(EVENT_TIME),
        F.sha2((F.col("id") % 50_000).cast("string"), 256).alias("user_key"),
        F.lit(1).cast("bigint").alias("count"),
        F.concat(F.lit("ar"), (F.rand(seed + 4) * 20_000).cast("int")).alias("artist_id"),
        F.concat(F.lit("tr"), (F.rand(seed + 5) * 200_000).cast("int")).alias("track_id"),
        (F.rand(seed + 6) * 300_000).cast("bigint").alias("played_ms"),
    ).withColumn(EVENT_DATE, F.to_date(EVENT_TIME))
    return events.select(*[F.col(f.name) if f.name in events.columns else F.lit(None).cast(f.dataType).alias(f.name)
                           for f in SILVER_EVENTS.schema.fields])


LAYOUTS = ("partitioned", "clustered")


def create(spark: SparkSession, path: str, layout: str) -> None:
    builder = DeltaTable.create(spark).location(path).addColumns(SILVER_EVENTS.schema)
    if layout == "partitioned":
        builder = builder.partitionedBy(EVENT_DATE)
    else:
        builder = (builder.clusterBy(EVENT_DATE)
                   .property("delta.dataSkippingStatsColumns", f"{EVENT_DATE},{EVENT_TIME}"))
    builder.execute()


def files_read(df: DataFrame) -> tuple[float, int, int]:
    """Run `df`'s own physical plan to the end; its seconds, and the files and bytes its scans read."""
    execution = df._jdf.queryExecution()
    started = time.monotonic()
    execution.toRdd().count()  # this plan, so its scan nodes' metrics are the ones filled in
    seconds = time.monotonic() - started
    leaves = execution.executedPlan().collectLeaves()
    files = size = 0
    for i in range(leaves.size()):
        metrics = leaves.apply(i).metrics()
        if metrics.contains("numFiles"):
            files += int(metrics.apply("numFiles").value())
            size += int(metrics.apply("filesSize").value())
    return seconds, files, size


def timed(work: Callable[[], object]) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


class Bench:
    """The two tables, the incoming batch and forgotten users, and a results table printed as it fills."""

    def __init__(self, spark: SparkSession, root: Path, args: argparse.Namespace) -> None:
        self.spark, self.args = spark, args
        self.paths = {layout: str(root / layout) for layout in LAYOUTS}
        self.results: dict[str, dict[str, str]] = {layout: {} for layout in LAYOUTS}
        self.days = [date(2026, 1, 1) + timedelta(days=d) for d in range(args.days)]
        self.next_day = self.days[-1] + timedelta(days=1)  # the incoming batch's day

    def record(self, layout: str, what: str, seconds: float, files: int, size: int | None = None) -> None:
        read = "" if size is None else f" ({size / 2**20:,.0f} MB)"
        self.results[layout][what] = f"{seconds:.1f} s, {files:,} files{read}"
        print(f"  {layout:12} {what:32} {self.results[layout][what]}", flush=True)

    def load(self) -> dict[str, float]:
        """One append per day to both tables, each day's batch computed once; the seconds per layout."""
        args, appended = self.args, dict.fromkeys(LAYOUTS, 0.0)
        for layout in LAYOUTS:
            create(self.spark, self.paths[layout], layout)
        for n, day in enumerate(self.days):
            batch = day_events(self.spark, day, args.rows, args.late, args.late_days, seed=n * 10)
            if n:  # re-sent copies of events stored the day before
                earlier = self.spark.read.format("delta").load(self.paths[LAYOUTS[0]]).filter(
                    F.col(EVENT_DATE) == F.lit(self.days[n - 1]))
                batch = batch.unionByName(earlier.sample(args.resent, seed=n))
            batch = batch.persist()
            batch.count()
            for layout in (LAYOUTS if n % 2 else LAYOUTS[::-1]):  # alternate which goes first
                appended[layout] += timed(partial(batch.write.format("delta").mode("append").save,
                                                  self.paths[layout]))
            batch.unpersist()
        print(f"{len(self.days)} daily appends of {args.rows:,} events ({args.late:.0%} late by up to "
              f"{args.late_days} days, {args.resent:.0%} re-sent)")
        return appended

    def reads(self, layout: str, when: str, incoming: DataFrame, dedup_days: int) -> None:
        """Silver's dedupe lookup of `incoming` and a gold-style window read of the days before it."""
        as_of = datetime(self.next_day.year, self.next_day.month, self.next_day.day, tzinfo=UTC)
        table = self.spark.read.format("delta").load(self.paths[layout])
        self.record(layout, f"dedupe {when}", *files_read(new_events(incoming, self.paths[layout], dedup_days)))
        self.record(layout, f"{self.args.window}-day window {when}", *files_read(
            in_window(table, as_of, self.args.window).groupBy("artist_id").count()))

    def forget(self, layout: str) -> None:
        """`--forget` users' events deleted as `make forget` does, by a MERGE on their keys."""
        keys = self.spark.createDataFrame([(k,) for k in range(self.args.forget)], "k int").select(
            F.sha2(F.col("k").cast("string"), 256).alias("user_key"))
        table = DeltaTable.forPath(self.spark, self.paths[layout])
        seconds = timed(lambda: table.alias("t").merge(keys.alias("f"), "t.user_key = f.user_key")
                        .whenMatchedDelete().execute())
        metrics = table.history(1).select("operationMetrics").collect()[0][0]
        self.record(layout, f"forget {self.args.forget} users (files rewritten)", seconds,
                    int(metrics["numTargetFilesRemoved"]))

    def markdown(self) -> str:
        lines = ["| measure | " + " | ".join(LAYOUTS) + " |", "| --- |" + " --- |" * len(LAYOUTS)]
        lines += [f"| {what} | " + " | ".join(self.results[layout][what] for layout in LAYOUTS) + " |"
                  for what in self.results[LAYOUTS[0]]]
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=100_000, help="events per day")
    parser.add_argument("--late", type=float, default=0.03, help="share of a day's events from earlier days")
    parser.add_argument("--late-days", type=int, default=3)
    parser.add_argument("--resent", type=float, default=0.02, help="share of a batch re-sending stored events")
    parser.add_argument("--window", type=int, default=7, help="days a gold-style read takes")
    parser.add_argument("--forget", type=int, default=10, help="users forgotten at the end")
    args = parser.parse_args()

    cfg = load_config()
    spark = get_spark(cfg.spark, app_name="recsys-bench-layout")
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # one plan whose scan metrics we can read
    root = Path(tempfile.mkdtemp(prefix="recsys-bench-layout-"))
    try:
        bench = Bench(spark, root, args)
        appended = bench.load()
        incoming = day_events(spark, bench.next_day, args.rows, args.late, args.late_days, seed=999).persist()
        incoming.count()
        for layout in LAYOUTS:
            path = bench.paths[layout]
            bench.record(layout, "appends", appended[layout], lake.num_files(spark, path))
            bench.reads(layout, "before OPTIMIZE", incoming, cfg.ingest.dedup_window_days)
            seconds = timed(DeltaTable.forPath(spark, path).optimize().executeCompaction)
            bench.record(layout, "OPTIMIZE", seconds, lake.num_files(spark, path))
            bench.reads(layout, "after OPTIMIZE", incoming, cfg.ingest.dedup_window_days)
            bench.forget(layout)
        print("\n" + bench.markdown())
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
