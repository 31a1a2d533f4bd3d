"""Landing zone -> bronze -> silver on generated data: every injected dirt caught, kind by kind,
nothing lost or duplicated across a crash and a rerun, no PII past bronze."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import IngestConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.datagen.world import accounts as account_rows
from recsys.datagen.world import build_catalog, build_population
from recsys.gold.build import build_gold
from recsys.gold.store import FULL_VIEW, sync_feature_store
from recsys.keys import pseudonym
from recsys.landing.zone import STAGING_DIR
from recsys.orchestration.forget import forget_requested
from recsys.silver import build as silver_build
from recsys.silver.build import build_silver
from recsys.silver.events import build_silver_events
from recsys.sources.accounts import TABLE, upsert_accounts
from recsys.stores import postgres
from tests.conftest import isolated

SECRET = "e2e-test-secret"
SPEC = GeneratorSpec(users=150, artists=120, days=2, dirt_rate=0.15, future_days=0, seed=21)
NOW = datetime(2026, 11, 29, tzinfo=UTC)


class Crash(RuntimeError):
    pass


def _crash_at(batch: int):
    """A hook that fails once a given batch is written, before its offsets are committed."""
    def hook(*args):
        if args[-1] == batch:
            raise Crash(f"simulated crash after batch {batch}")
    return hook


@pytest.fixture(scope="module")
def lakehouse(services, spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = dataclasses.replace(
        isolated(services, root, "lakehouse"),
        privacy=dataclasses.replace(services.privacy, pseudonym_secret=SECRET),
        ingest=IngestConfig(max_files_per_trigger=40, accounts_partitions=3, click_events_to_postgres=True),
    )
    manifest = generate(cfg.landing.path, SPEC, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))

    with pytest.raises(Exception, match="simulated crash after batch 1"):
        ingest_events(spark, cfg, after_batch=_crash_at(1))
    first = ingest_events(spark, cfg)
    ingest_accounts(spark, cfg, run_id="accounts-1")
    with pytest.raises(Exception, match="simulated crash after batch 0"):
        build_silver_events(spark, cfg, "crashing-run", NOW, on_batch=_crash_at(0))
    report = build_silver(spark, cfg, run_id=uuid.uuid4().hex, now=NOW)
    return cfg, manifest, first, report


def _table(spark, cfg, layer, name):
    return lake.read(spark, lake.table_path(cfg.lake, layer, name))


def _dirt(manifest, kind):
    return manifest["dirt"][kind]["count"]


@pytest.mark.slow
def test_every_landed_line_is_in_bronze_or_its_quarantine_exactly_once(spark, lakehouse):
    cfg, manifest, _, _ = lakehouse
    bronze = _table(spark, cfg, "bronze", "events").count()
    quarantined = _table(spark, cfg, "bronze", "events_quarantine")
    assert bronze + quarantined.count() == manifest["lines"]
    runs = _table(spark, cfg, "bronze", "ingest_runs").collect()
    assert all(r.lines_read == r.rows_bronze + r.rows_quarantined for r in runs)
    reasons = {r["_reason"]: r["count"] for r in quarantined.groupBy("_reason").count().collect()}
    assert reasons == {kind: _dirt(manifest, kind)
                       for kind in ("not_json", "missing_required", "wrong_type", "unknown_event_type")}


@pytest.mark.slow
def test_silver_quarantines_untrusted_events_kind_by_kind(spark, lakehouse):
    cfg, manifest, _, _ = lakehouse
    q = _table(spark, cfg, "silver", "events_quarantine")
    reasons = {r["_reason"]: r["count"] for r in q.groupBy("_reason").count().collect()}
    assert reasons == {
        "ts_in_future": _dirt(manifest, "ts_future"),
        "ts_before_trusted": _dirt(manifest, "ts_before_2000"),
        "impossible_duration": _dirt(manifest, "negative_duration") + _dirt(manifest, "absurd_duration"),
        "played_over_duration": _dirt(manifest, "played_over_duration"),
    }


@pytest.mark.slow
def test_silver_holds_one_row_per_logical_event(spark, lakehouse):
    cfg, manifest, _, report = lakehouse
    bronze = _table(spark, cfg, "bronze", "events").count()
    silver = _table(spark, cfg, "silver", "events")
    quarantined = _table(spark, cfg, "silver", "events_quarantine").count()
    assert silver.count() == silver.select("event_id").distinct().count()
    assert silver.count() == bronze - quarantined - _dirt(manifest, "duplicate")
    assert report["tables"]["events"] == silver.count()


@pytest.mark.slow
def test_silver_values_are_normalized(spark, lakehouse):
    cfg, manifest, _, _ = lakehouse
    silver = _table(spark, cfg, "silver", "events")
    assert silver.filter(F.col("event_time").isNull() | F.col("user_key").isNull() | F.col("artist_id").isNull()
                         | F.col("genres").isNull()).count() == 0
    one_key_per_artist = silver.groupBy("artist_id").agg(F.countDistinct("artist_key").alias("n"))
    assert one_key_per_artist.filter("n > 1").count() == 0
    names = {r.artist_id: r.artist_name for r in _table(spark, cfg, "silver", "artists").collect()}
    catalog = build_catalog(SPEC.seed, SPEC.artists)
    assert all(names[a] == catalog.artist_names[int(a) - 1] for a in names)
    numeric_ids = silver.filter(~F.col("user_key").rlike("^[0-9a-f]{64}$")).count()
    assert numeric_ids == 0
    assert silver.filter(F.col("completion").isNotNull()).select("completion").distinct().count() == 3


@pytest.mark.slow
def test_no_pii_value_reaches_any_silver_table(spark, lakehouse):
    cfg, _, _, _ = lakehouse
    population = build_population(SPEC.seed, SPEC.users, build_catalog(SPEC.seed, SPEC.artists))
    accounts = account_rows(SPEC.seed, population, datetime(2026, 10, 1).date())
    needles = {a["email"] for a in accounts} | {a["full_name"] for a in accounts} | {"203.0.113."}
    needles |= {f"{a['latitude']:.4f}" for a in accounts if a["latitude"] is not None}
    pii_columns = {"email", "full_name", "date_of_birth", "latitude", "longitude", "ip", "user", "user_id", "geo"}
    silver_root = f"{cfg.lake.root}/silver"
    for name in ("events", "events_quarantine", "users", "artists", "tracks", "quality_reports"):
        df = lake.read(spark, f"{silver_root}/{name}")
        assert not pii_columns & set(df.columns), name
        text = "\n".join(json.dumps(r.asDict(recursive=True), default=str) for r in df.collect())
        found = [n for n in needles if n in text]
        assert not found, (name, found[:3])


@pytest.mark.slow
def test_a_rerun_adds_nothing(spark, lakehouse):
    cfg, _, _, _ = lakehouse
    before = {name: _table(spark, cfg, "silver", name).count() for name in ("events", "events_quarantine")}
    again = ingest_events(spark, cfg)
    report = build_silver(spark, cfg, run_id="rerun", now=NOW)
    assert again.lines_read == 0 and report["events"]["rows_in"] == 0
    assert {name: _table(spark, cfg, "silver", name).count() for name in before} == before


@pytest.mark.slow
def test_clean_events_land_in_postgres(spark, lakehouse):
    cfg, _, _, _ = lakehouse
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT event_id) FROM click_events")
        rows, ids = cur.fetchone()
    assert rows == ids == _table(spark, cfg, "silver", "events").count()


@pytest.mark.slow
def test_a_deleted_account_disappears_downstream_also_when_forgetting_crashes(spark, lakehouse, monkeypatch):
    """Forgetting crashes twice before it finishes: once between silver's DELETE and PostgreSQL's,
    once after the requests' DELETE, before the stream commits, with a retention that VACUUMs at
    once. Each rerun finishes what the crash left, and the stream can still run."""
    cfg, _, _, _ = lakehouse
    cfg = dataclasses.replace(cfg, lake=dataclasses.replace(cfg.lake, retention_hours=0))
    users_before = _table(spark, cfg, "silver", "users").count()
    active = {r.user_key for r in _table(spark, cfg, "silver", "events").select("user_key").distinct().collect()}
    victim = next(str(1000 + u) for u in range(SPEC.users) if pseudonym(SECRET, str(1000 + u)) in active)
    key = pseudonym(SECRET, victim)
    postgres.execute(cfg.postgres, f"DELETE FROM {TABLE} WHERE user_id = %s", (victim,))
    report = ingest_accounts(spark, cfg, run_id="accounts-after-delete")  # incremental: deletions found every run
    assert report.forget_requested == 1

    def postgres_gone(*args):
        raise Crash("simulated crash after silver's DELETE")

    monkeypatch.setattr(silver_build.postgres_sink, "delete_users", postgres_gone)
    with pytest.raises(Exception, match="simulated crash after silver's DELETE"):
        forget_requested(spark, cfg)
    monkeypatch.undo()

    def crash(erasure):
        raise Crash("simulated crash before the forget stream commits")

    with pytest.raises(Exception, match="simulated crash before the forget stream commits"):
        forget_requested(spark, cfg, on_erasure=crash)
    stale = Path(cfg.landing.path) / STAGING_DIR / "part-0.json.forget.4242.tmp"  # a rewrite killed half way
    stale.parent.mkdir(exist_ok=True)
    stale.write_text('{"user_id": "someone else"}\n')
    assert forget_requested(spark, cfg) == 1
    assert not stale.exists()
    assert forget_requested(spark, cfg) == 0
    build_silver(spark, cfg, run_id="after-delete", now=NOW)
    assert _table(spark, cfg, "bronze", "events").filter(F.trim("user_id") == victim).count() == 0
    assert _table(spark, cfg, "silver", "users").count() == users_before - 1
    assert _table(spark, cfg, "silver", "users").filter(F.col("user_key") == key).count() == 0
    assert _table(spark, cfg, "silver", "events").filter(F.col("user_key") == key).count() == 0
    assert _table(spark, cfg, "bronze", "accounts").filter(F.col("user_id") == victim).count() == 0
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM click_events WHERE user_key = %s", (key,))
        assert cur.fetchone() == (0,)


@pytest.mark.slow
def test_accounts_extract_is_incremental(spark, lakehouse):
    cfg, _, _, _ = lakehouse
    assert ingest_accounts(spark, cfg, run_id="noop").rows_read == 0
    postgres.execute(cfg.postgres, f"UPDATE {TABLE} SET country_code = 'SE', updated_at = now() WHERE user_id = '1010'")
    report = ingest_accounts(spark, cfg, run_id="one-change")
    assert (report.rows_read, report.rows_updated, report.rows_inserted) == (1, 1, 0)


@pytest.mark.slow
def test_a_nul_character_in_any_text_reaches_postgresql_replaced(services, spark, tmp_path):
    """JSON may carry U+0000 in any string, and PostgreSQL stores it nowhere: silver replaces it with
    U+FFFD, so neither its `click_events` write nor gold's feature store stops on such an event."""
    cfg = dataclasses.replace(
        isolated(services, tmp_path, "nul"), privacy=dataclasses.replace(services.privacy, pseudonym_secret=SECRET),
        ingest=IngestConfig(click_events_to_postgres=True))
    upsert_accounts(cfg.postgres, [{"user_id": "1000", "signup_at": datetime(2026, 1, 1, tzinfo=UTC)}])
    play = {"event_id": "nul-\u0000-1", "event_type": "play", "event_ts": "2026-11-28T21:05:05Z", "user_id": "1000",
            "card": {"artist_id": "ar-\u0000", "artist_name": "Bad\u0000Name", "track_id": "tr-\u0000",
                     "track_name": "Nul\u0000Song", "album_name": "Al\u0000bum", "genre": ["ro\u0000ck"],
                     "duration_ms": 200_000, "played_ms": 190_000},
            "context": {"session_id": "s\u0000", "device_os": "an\u0000droid", "source": "libr\u0000ary"}}
    landing = tmp_path / "landing" / "events" / "dt=2026-11-28" / "hour=21"
    landing.mkdir(parents=True)
    (landing / "nul.json").write_text(json.dumps(play) + "\n")  # "\\u0000" escapes, as JSON producers write it

    assert ingest_events(spark, cfg).rows_bronze == 1
    ingest_accounts(spark, cfg, run_id="nul")
    build_silver(spark, cfg, run_id="nul", now=NOW)
    build_gold(spark, cfg, as_of=NOW)
    assert sync_feature_store(spark, cfg, stage_suffix="nul").changed == 1

    silver = _table(spark, cfg, "silver", "events").first()
    assert (silver.event_id, silver.artist_name, silver.genres) == ("nul-\ufffd-1", "Bad\ufffdName", ["ro\ufffdck"])
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT event_id, artist_id, track_id, source FROM click_events")
        assert cur.fetchall() == [("nul-\ufffd-1", "ar-\ufffd", "tr-\ufffd", "libr\ufffdary")]
        cur.execute(f"SELECT recent_tracks FROM {FULL_VIEW} WHERE user_key = %s", (pseudonym(SECRET, "1000"),))
        (song,) = cur.fetchone()[0]
    assert (song["track_name"], song["artist_name"], song["genres"]) == ("Nul\ufffdSong", "Bad\ufffdName",
                                                                          ["ro\ufffdck"])
