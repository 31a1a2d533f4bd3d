"""Silver kept current batch by batch equals silver rebuilt from scratch, and so does gold updated
build by build; forgetting a user rewrites only the files that held them; gold reads only its
window of `silver/events`."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import IngestConfig, LakeConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.gold.build import build_gold, in_window
from recsys.keys import pseudonym
from recsys.orchestration.forget import forget_requested
from recsys.silver.build import build_silver
from recsys.silver.catalog import catalog_values, to_artists, to_tracks
from recsys.sources.accounts import TABLE, upsert_accounts
from recsys.stores import postgres
from recsys.tables import SILVER_AT, SILVER_EVENTS, SILVER_USERS
from tests.conftest import isolated

SECRET = "incremental-test-secret"
SPEC = GeneratorSpec(users=80, artists=120, days=3, dirt_rate=0.1, future_days=0, seed=5)
NOW = datetime(2026, 11, 29, tzinfo=UTC)
LINEAGE = (SILVER_AT, "_run_id")
GOLD_WINDOW_DAYS = 2  # so that the third day's build sees the first day's morning leave the window
GOLD = ("artist_stats", "track_stats", "user_features", "interactions", "window_catalog", "user_genres")


def _gold_as_of(day: int) -> datetime:
    """Noon of the generated day `day` (1-based): each build leaves that day's afternoon for the next."""
    return datetime.fromisoformat(SPEC.start_date).replace(tzinfo=UTC) + timedelta(days=day - 1, hours=12)


def _land_late_copies(landing: Path, day: str, into: Path) -> None:
    """Every event of day `day`'s first landing file again under new ids, in a file landed in `into`:
    events that arrive late, for a date gold has already built."""
    source = sorted(Path(landing, "events").rglob(f"*{day}*/**/*.json*"))[0]
    text = gzip.decompress(source.read_bytes()).decode() if source.suffix == ".gz" else source.read_text()
    late = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            late.append(json.dumps({**event, "event_id": f"late-{event['event_id']}"}))
    Path(into, f"late-{source.name.removesuffix('.gz')}").write_text("\n".join(late) + "\n")


def _silver(spark, cfg, name):
    return lake.read(spark, lake.table_path(cfg.lake, "silver", name))


def _same(left, right):
    """Equal as multisets: nothing in one that the other lacks, duplicates included."""
    assert left.exceptAll(right).count() == 0
    assert right.exceptAll(left).count() == 0


@pytest.fixture(scope="module")
def lakes(services, spark, tmp_path_factory):
    """Lake A: silver run after each of three landings (day 1; day 2 and a deleted account; day 3
    and a replayed file and late events for day 2), with gold built as of noon after each run
    (a 2-day window). Lake B: a copy of A's bronze, silver and gold built once from scratch."""
    root = tmp_path_factory.mktemp("incremental")
    cfg = dataclasses.replace(
        isolated(services, root, "incremental"),
        privacy=dataclasses.replace(services.privacy, pseudonym_secret=SECRET),
        ingest=IngestConfig(max_files_per_trigger=25, accounts_partitions=2, click_events_to_postgres=False),
    )
    # Most of a 2-day window enters day 3's build: it updates all the same, since that is what is tested.
    cfg = dataclasses.replace(cfg, gold=dataclasses.replace(cfg.gold, feature_window_days=GOLD_WINDOW_DAYS,
                                                            max_update_share=1.0))
    generate(cfg.landing.path, dataclasses.replace(SPEC, days=1),
             on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))

    builds = []

    def run(tag: str, day: int) -> int:
        ingest_events(spark, cfg, run_id=tag)
        ingest_accounts(spark, cfg, run_id=tag)  # incremental: deletions are found on every run
        forgotten = forget_requested(spark, cfg)
        build_silver(spark, cfg, run_id=tag, now=NOW + timedelta(minutes=day))  # each run's own _silver_at
        users = lake.current_version(spark, lake.table_path(cfg.lake, "silver", "users"))
        builds.append(build_gold(spark, cfg, _gold_as_of(day), users_version=users))
        return forgotten

    run("day-1", 1)
    events = _silver(spark, cfg, "events")
    victim = next(str(1000 + u) for u in range(SPEC.users)
                  if events.filter(F.col("user_key") == pseudonym(SECRET, str(1000 + u))).count() > 0)
    key = pseudonym(SECRET, victim)
    holding = {r[0] for r in events.filter(F.col("user_key") == key).select(F.input_file_name()).distinct().collect()}
    files_before = len(lake.read(spark, SILVER_EVENTS.path(cfg.lake)).inputFiles())

    generate(cfg.landing.path, SPEC, append_days=1)
    postgres.execute(cfg.postgres, f"DELETE FROM {TABLE} WHERE user_id = %s", (victim,))
    before_forget = lake.current_version(spark, SILVER_EVENTS.path(cfg.lake))
    forgotten = run("day-2", 2)
    history = DeltaTable.forPath(spark, SILVER_EVENTS.path(cfg.lake)).history().collect()
    forget_commits = [r.asDict(recursive=True) for r in history if r.version > before_forget and r.operation == "MERGE"]

    generate(cfg.landing.path, SPEC, append_days=1)
    first_file = sorted(Path(cfg.landing.path, "events").rglob("*.json*"))[0]
    shutil.copy(first_file, first_file.with_name(f"replayed-{first_file.name}"))
    _land_late_copies(Path(cfg.landing.path), (date.fromisoformat(SPEC.start_date) + timedelta(days=1)).isoformat(),
                      first_file.parent)
    run("day-3", 3)

    rebuilt = dataclasses.replace(cfg, lake=LakeConfig(root=str(root / "rebuilt")))
    shutil.copytree(Path(cfg.lake.root, "bronze"), Path(rebuilt.lake.root, "bronze"))
    build_silver(spark, rebuilt, run_id=uuid.uuid4().hex, now=NOW)
    users = lake.current_version(spark, lake.table_path(rebuilt.lake, "silver", "users"))
    builds.append(build_gold(spark, rebuilt, _gold_as_of(3), users_version=users))
    return cfg, rebuilt, key, holding, files_before, forget_commits, forgotten, builds


@pytest.mark.slow
def test_silver_kept_current_batch_by_batch_equals_a_rebuild_from_scratch(spark, lakes):
    incremental, rebuilt, key, *_ = lakes
    _same(_silver(spark, incremental, "events").drop(*LINEAGE), _silver(spark, rebuilt, "events").drop(*LINEAGE))
    for table in ("catalog_values", "artists", "tracks"):
        _same(_silver(spark, incremental, table), _silver(spark, rebuilt, table))
    events = _silver(spark, incremental, "events")
    _same(_silver(spark, incremental, "catalog_values"), catalog_values(events))
    _same(_silver(spark, incremental, "artists"), to_artists(events))
    _same(_silver(spark, incremental, "tracks"), to_tracks(events))
    assert events.filter(F.col("user_key") == key).count() == 0
    assert events.count() == events.select("event_id").distinct().count()


@pytest.mark.slow
def test_gold_updated_from_what_changed_equals_a_full_build(spark, lakes):
    """Day 3's build updates gold from the day-2 build's tables: day 3's events and day 2's late
    ones enter, day 1's morning leaves. Its tables equal a full build's on lake B (`exceptAll`
    both ways; the integer ids are each lake's own). Day 2's build was full: the erasure rewrote
    silver, and gold's tables with it."""
    incremental, rebuilt, key, *_, builds = lakes
    first, after_erasure, updated, full = builds
    assert first.full_because is not None and "no build before" in first.full_because
    assert after_erasure.full_because == "a gold table was rewritten since the build before"
    assert updated.full_because is None
    assert full.full_because is not None
    window = in_window(_silver(spark, incremental, "events"), _gold_as_of(3), GOLD_WINDOW_DAYS)
    assert window.filter(F.col("event_id").startswith("late-")).count() > 0  # late events entered
    morning = _silver(spark, incremental, "events").filter(
        (F.col("event_time") >= _gold_as_of(1) - timedelta(hours=12)) & (F.col("event_time") < _gold_as_of(1)))
    assert morning.count() > 0  # in day 2's window, not in day 3's: they left
    for name in GOLD:
        def table(cfg, name=name):
            return lake.read(spark, lake.table_path(cfg.lake, "gold", name)).drop("user_idx", "artist_idx")

        _same(table(incremental), table(rebuilt))
    assert lake.read(spark, lake.table_path(incremental.lake, "gold", "interactions")).filter(
        F.col("user_key") == key).count() == 0


@pytest.mark.slow
def test_forgetting_a_user_rewrites_only_the_files_that_held_them(spark, lakes):
    incremental, _, _, holding, files_before, forget_commits, forgotten, _ = lakes
    assert forgotten == 1
    (delete,) = forget_commits
    removed = int(delete["operationMetrics"]["numTargetFilesRemoved"])
    assert removed == len(holding)
    assert 0 < removed < files_before


@pytest.mark.slow
def test_summaries_and_recent_songs_updated_inside_a_longer_window_equal_a_full_build(spark, cfg, tmp_path):
    """A 35-day window: between two builds two days leave the last 30 days but not the window, two
    days enter, and a late play lands 10 days back. The updated build's `plays_30d`, genre counts
    (`gold/user_genres`, `top_genres`) and last 3 songs (two played at the same time) equal a full
    build's on the same silver. A build after which nearly all the window entered is a full one."""
    start = datetime(2026, 9, 1, 12, tzinfo=UTC)
    cfg = dataclasses.replace(cfg, gold=dataclasses.replace(cfg.gold, feature_window_days=35, max_recent_tracks=3))

    def plays(days, written: datetime, tag: str = ""):
        rows = []
        for day in days:
            at = start + timedelta(days=day)
            for user, genres, count in (("u1", ["rock"], 1), ("u1", ["jazz", "pop"], 2), ("u2", ["jazz"], day % 3 + 1)):
                rows.append({**dict.fromkeys(SILVER_EVENTS.schema.fieldNames()),
                             "event_id": f"{tag}{user}-{day}-{genres[0]}", "event_type": "play", "event_time": at,
                             "event_date": at.date(), "user_key": user, "count": count, "artist_id": genres[0],
                             "track_id": f"{genres[0]}-{day % 4}", "genres": genres, SILVER_AT: written})
        return spark.createDataFrame(rows, SILVER_EVENTS.schema)

    events_path = SILVER_EVENTS.path(cfg.lake)
    lake.append(plays(range(36), NOW), events_path)
    lake.append(spark.createDataFrame([], SILVER_USERS.schema), SILVER_USERS.path(cfg.lake))
    first = start + timedelta(days=36)
    assert build_gold(spark, cfg, first, users_version=0).full_because is not None
    lake.append(plays([36, 37], NOW + timedelta(hours=1)).unionByName(
        plays([27], NOW + timedelta(hours=1), tag="late-")), events_path)
    updated = build_gold(spark, cfg, first + timedelta(days=2), users_version=0)

    full_cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(tmp_path / "full")))
    shutil.copytree(Path(cfg.lake.root, "silver"), Path(full_cfg.lake.root, "silver"))
    full = build_gold(spark, full_cfg, first + timedelta(days=2), users_version=0)
    assert updated.full_because is None and full.full_because is not None

    def gold(c, name):
        return lake.read(spark, lake.table_path(c.lake, "gold", name))

    for name in ("user_features", "user_genres"):
        _same(gold(cfg, name), gold(full_cfg, name))
    features = {r.user_key: r for r in gold(cfg, "user_features").collect()}
    assert {u: r.plays_30d for u, r in features.items()} == {
        "u1": 3 * 31, "u2": sum(d % 3 + 1 for d in range(8, 38)) + 27 % 3 + 1}
    assert [s.track_id for s in features["u1"].recent_tracks] == ["jazz-1", "rock-1", "jazz-0"]

    # After a build as of day 5, nearly all of day 38's window enters: that build is a full one.
    assert build_gold(spark, cfg, start + timedelta(days=5), users_version=0).full_because is not None
    far = build_gold(spark, cfg, first + timedelta(days=2), users_version=0)
    assert far.full_because is not None and "than gold.max_update_share (0.1)" in far.full_because


def test_gold_reads_only_the_partitions_of_its_window(spark, tmp_path):
    """Partitions before the window are deleted from disk (not from the table): reading them
    would fail, so the count proves they were pruned; a wider window does fail."""
    path = SILVER_EVENTS.path(LakeConfig(root=str(tmp_path)))
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(10)]
    rows = [{**dict.fromkeys(SILVER_EVENTS.schema.fieldNames()), "event_id": f"e{i}", "event_type": "play",
             "event_time": datetime.combine(d, datetime.min.time(), UTC) + timedelta(hours=12),
             "event_date": d, "count": 1} for i, d in enumerate(days)]
    lake.append(spark.createDataFrame(rows, SILVER_EVENTS.schema), path)
    for d in days[:6]:
        shutil.rmtree(f"{path}/event_date={d}")
    as_of = datetime(2026, 10, 10, 6, tzinfo=UTC)  # day 10 at 06:00: its noon event is in the future

    assert in_window(lake.read(spark, path), as_of, days=3).count() == 3  # days 7, 8, 9
    with pytest.raises(Exception, match="(?i)file.*(not exist|not found)|FileNotFound"):
        in_window(lake.read(spark, path), as_of, days=6).count()
