"""`make bench-pipeline`: every stage of the journey on U users x D days of generated events.

Per stage: seconds, landing lines per second, the peak resident memory of the Spark JVM during
the stage (driver and executors share it in local mode; /proc's high-water mark, reset to the
current size before each stage: a JVM keeps the heap it grew, so later stages include it), and
how many of the machine's cores were busy on average (every process: PostgreSQL and Redis too).
A stage that keeps every core busy is made faster by doing less, not by running parts side by side.
The floor is measured in the same run: the same landing files read as text, parsed with
`from_json` and the bronze schema, and written as one Delta table; bronze is reported as a
multiple of it. Both run once on the first day's files before they are measured (`warm_up`).
Then the incremental cost: a lake of 1 day and a lake of D days each get one more day and a
refresh (ingest .. publish, no training); their seconds and ratio show whether a refresh's cost
grows with history. After each refresh, what gold holds (window events, interaction pairs, the
users' array lengths): a gold build rewrites all of it and computes the statistics from the whole
window, so its cost follows these until `gold.feature_window_days` is full. `--window-days W`
sets that window for the run, to see the refresh once the window has stopped growing.

Defaults are sized to about 10 M landing lines (60,000 users x 20 days); `ARGS="--users 2000
--days 3"` for a quick run. Everything runs in a scratch folder with its own lake, removed at the
end with its database (emptied at the start too) and its Redis keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.bronze.schema import EVENT
from recsys.config import Config, DatagenConfig, load_config
from recsys.datagen.generator import generate
from recsys.gold.build import build_gold, in_window
from recsys.gold.store import sync_feature_store
from recsys.model.batch import build_recommendations
from recsys.model.train import train
from recsys.orchestration.refresh import StageResult, refresh
from recsys.serving.publish import publish
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from recsys.spark import get_spark, jvm
from recsys.stores.postgres import drop_database, fresh_database
from recsys.stores.redis import connect as redis_connect
from recsys.tables import AS_OF, GOLD_BUILDS


class PeakMemory:
    """Peak resident set size of one process since the last reset (Linux /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def reset(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # 5: reset the peak RSS counter

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


class BusyCores:
    """The machine's cores busy on average since the last mark, every process counted (/proc/stat)."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.since = self._times()

    @staticmethod
    def _times() -> tuple[int, int]:
        """(all, idle + iowait) clock ticks of every core since boot: user .. steal, the first eight
        fields (guest time is counted in user time already).
        """
        ticks = [int(t) for t in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]

    def mark(self) -> str:
        """The cores busy since the last mark ("1.88 of 2 cores busy"), and a new mark."""
        (total, idle), (total_0, idle_0) = self._times(), self.since
        self.since = (total, idle)
        busy = 1 - (idle - idle_0) / (total - total_0) if total > total_0 else 0.0
        return f"{busy * self.cores:.2f} of {self.cores} cores busy"


def scratch_config(base: Config, root: Path, name: str) -> Config:
    cfg = dataclasses.replace(
        base,
        lake=dataclasses.replace(base.lake, root=str(root / name / "lake")),
        landing=dataclasses.replace(base.landing, path=str(root / name / "landing")),
        postgres=dataclasses.replace(base.postgres, database=f"recsys_bench_{name}"),
        gold=dataclasses.replace(base.gold, redis_prefix=f"bench-{name}"),
        publish=dataclasses.replace(base.publish, prefix=f"bench-{name}"),
        mlflow=dataclasses.replace(base.mlflow, experiment=f"bench-pipeline-{uuid.uuid4().hex[:8]}"),
        model=dataclasses.replace(base.model, name=f"bench-{name}-{uuid.uuid4().hex[:6]}", trials=1,
                                  min_lift=-1.0, min_coverage=0.0),
        ingest=dataclasses.replace(base.ingest, click_events_to_postgres=False),
    )
    fresh_database(cfg.postgres)  # a run never sees an earlier run's accounts
    return cfg


def clean_up(base: Config, name: str) -> None:
    """Drop the scratch database and Redis keys of `scratch_config(base, _, name)`."""
    drop_database(dataclasses.replace(base.postgres, database=f"recsys_bench_{name}"))
    client = redis_connect(base.redis)
    keys = list(client.scan_iter(match=f"bench-{name}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start:start + 1000])


def write_floor(spark: SparkSession, cfg: Config, out: Path) -> None:
    """The floor bronze is measured against: the landing lines as text, `from_json`, one Delta write."""
    (spark.read.text(f"{cfg.landing.path}/events", recursiveFileLookup=True)
     .select(F.from_json("value", EVENT).alias("j")).select("j.*")
     .write.format("delta").save(str(out)))


def warm_up(spark: SparkSession, cfg: Config, root: Path) -> None:
    """The floor and bronze once each on the first day's files, unmeasured, so that neither measured
    run pays for the JVM's first compilations: the floor, measured first, would otherwise be the
    colder, and bronze's multiple of it the smaller.
    """
    first_day = sorted(Path(cfg.landing.path, "events").iterdir())[0]
    warm = dataclasses.replace(cfg, lake=dataclasses.replace(cfg.lake, root=str(root / "warm" / "lake")),
                               landing=dataclasses.replace(cfg.landing, path=str(root / "warm" / "landing")))
    Path(warm.landing.path, "events").mkdir(parents=True)
    Path(warm.landing.path, "events", first_day.name).symlink_to(first_day)
    write_floor(spark, warm, root / "warm" / "floor")
    ingest_events(spark, warm)
    shutil.rmtree(root / "warm")


def stage_printer(cores: BusyCores) -> Callable[[StageResult], None]:
    """Prints each refresh stage's line with the cores busy since the stage before ended."""
    def print_stage(r: StageResult) -> None:
        print(f"    {r.stage:16} {r.seconds:8.1f} s  {cores.mark():20}  {r.summary}", flush=True)

    return print_stage


def gold_state(spark: SparkSession, cfg: Config) -> str:
    """What gold holds, which a build recomputes: window events, interaction pairs, and the users'
    arrays (their lengths read from one field each, so Parquet reads little). Not timed.
    """
    def gold(name: str) -> DataFrame:
        return lake.read(spark, lake.table_path(cfg.lake, "gold", name))

    users = gold("user_features").agg(F.count("*"), F.sum(F.array_size("favourite_artists.artist_id")),
                                      F.sum(F.array_size("recent_tracks.track_id"))).collect()[0]
    window = lake.read(spark, GOLD_BUILDS.path(cfg.lake)).orderBy(F.desc("built_at")).limit(1).collect()[0]
    events = in_window(lake.read(spark, lake.table_path(cfg.lake, "silver", "events")), window[AS_OF],
                       cfg.gold.feature_window_days).count()
    return (f"{events:,} window events, {gold('interactions').count():,} interaction pairs, {users[0]:,} users with "
            f"{users[1] / users[0]:.1f} favourite artists and {users[2] / users[0]:.1f} recent songs on average")


def incremental_cost(spark: SparkSession, base: Config, root: Path, full: Config, spec: DatagenConfig, days: int,
                     stage: Callable[[str, int, Callable[[], object]], float]) -> None:
    """One more day refreshed on a 1-day lake and on the D-day lake: does a refresh grow with history?

    The 1-day lake starts on the D-day lake's last date, so both get the same date appended: the
    same weekday, and about as many lines (the generator gives weekends more sessions).
    """
    small = scratch_config(base, root, "day1")
    last_day = date.fromisoformat(spec.start_date) + timedelta(days=days - 1)
    generate(small.landing.path, dataclasses.replace(spec, days=1, start_date=last_day.isoformat()),
             on_accounts=lambda r: upsert_accounts(small.postgres, r))
    training = dataclasses.replace(small, model=dataclasses.replace(small.model, retrain_every_h=0))
    refresh(spark, training, on_stage=lambda r: None)  # the 1-day lake, built through the same chain
    seconds: list[float] = []
    lines: list[int] = []
    for name, c in (("day 1", small), (f"day {days}", full)):
        lines.append(generate(c.landing.path, spec, append_days=1)["last_run"]["lines"])
        no_training = dataclasses.replace(c, model=dataclasses.replace(c.model, retrain_every_h=1e9))
        cores = BusyCores()
        seconds.append(stage(f"refresh after {name}", 0, functools.partial(refresh, spark, no_training,
                                                                            on_stage=stage_printer(cores))))
        print(f"    gold after it: {gold_state(spark, c)}", flush=True)
    print(f"refresh of one new day: after day 1 {seconds[0]:.0f} s ({lines[0]:,} lines), after day {days} "
          f"{seconds[1]:.0f} s ({lines[1]:,} lines): {seconds[1] / seconds[0]:.2f}x")


def arguments() -> tuple[argparse.Namespace, Config, DatagenConfig]:
    """The command line, the config it gives (`--window-days`) and the data to generate: the D days
    end the day before the one appended for the refresh, which is the last weekday before today, so
    the builds "as of now" see them in gold's window and trending periods. A weekday, whatever day
    the bench runs: the generator gives weekends 1.3x the sessions, and a larger new day weighs
    more in the refresh after day 1 than in the one after day D, so the ratio would move with the
    day of the week (on 2026-12-06 a Saturday appended had 584,944 lines, a Friday 451,485 the day
    before).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--window-days", type=int, help="gold.feature_window_days (default: the config's)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    base = load_config()
    if args.window_days:
        base = dataclasses.replace(base, gold=dataclasses.replace(base.gold, feature_window_days=args.window_days))
    today = datetime.now(UTC).date()
    appended = today - timedelta(days=1)
    while appended.weekday() >= 5:
        appended -= timedelta(days=1)
    days_since = (today - appended).days
    if args.window_days is not None and args.window_days <= days_since:
        parser.error(f"--window-days {args.window_days} would leave out the day appended for the refresh "
                     f"({appended}, the last weekday before today): give more than {days_since}")
    start = appended - timedelta(days=args.days)
    spec = dataclasses.replace(base.datagen, users=args.users, days=args.days, future_days=0,
                               start_date=start.isoformat())
    return args, base, spec


def main() -> None:
    args, base, spec = arguments()
    spark = get_spark(base.spark, app_name="recsys-bench-pipeline")
    memory = PeakMemory(int(jvm(spark).java.lang.ProcessHandle.current().pid()))
    root = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    rows: list[tuple[str, float, float, float]] = []

    def stage(name: str, lines: int, work: Callable[[], object]) -> float:
        memory.reset()
        cores = BusyCores()
        started = time.monotonic()
        work()
        seconds = time.monotonic() - started
        rows.append((name, seconds, lines / seconds if seconds else 0.0, memory.peak_mb()))
        rate = f"{rows[-1][2]:12,.0f} lines/s" if lines else f"{'':20}"
        print(f"  {name:24} {seconds:8.1f} s {rate}  peak RSS {rows[-1][3]:7,.0f} MB  {cores.mark()}",
              flush=True)
        return seconds

    try:
        cfg = scratch_config(base, root, "full")
        started = time.monotonic()
        manifest = generate(cfg.landing.path, spec, on_accounts=lambda r: upsert_accounts(cfg.postgres, r))
        lines = manifest["lines"]
        print(f"generated {lines:,} lines in {manifest['files']} files ({time.monotonic() - started:.0f} s); "
              f"{args.users} users x {args.days} days; gold's window {base.gold.feature_window_days} days", flush=True)
        now = datetime.now(UTC)
        warm_up(spark, cfg, root)
        floor = stage("floor: text+from_json+Delta", lines, lambda: write_floor(spark, cfg, root / "floor"))
        shutil.rmtree(root / "floor")  # gigabytes at the default size, which the later stages need
        bronze = stage("bronze events", lines, lambda: ingest_events(spark, cfg))
        stage("bronze accounts", lines, lambda: ingest_accounts(spark, cfg, run_id="bench"))
        stage("silver", lines, lambda: build_silver(spark, cfg, run_id="bench", now=now))
        stage("gold", lines, lambda: build_gold(spark, cfg, as_of=now))
        stage("feature store", lines, lambda: sync_feature_store(spark, cfg, stage_suffix="bench"))
        stage("train (1 trial)", lines, lambda: train(spark, cfg))
        stage("recommend", lines, lambda: build_recommendations(spark, cfg))
        stage("publish", lines, lambda: publish(spark, cfg))
        total = sum(r[1] for r in rows[1:])
        print(f"landing to published lists: {total:,.0f} s for {lines:,} lines; bronze {bronze / floor:.2f}x the "
              f"floor ({floor:.1f} s)")

        incremental_cost(spark, base, root, cfg, spec, args.days, stage)
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            for name in ("full", "day1"):
                clean_up(base, name)
        else:
            print(f"kept {root}, databases recsys_bench_full and recsys_bench_day1, Redis keys bench-*")


if __name__ == "__main__":
    main()
