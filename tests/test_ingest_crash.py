"""The events ingest killed with SIGKILL mid-run, twice (once between a batch's bronze write and its
ledger row), then rerun: every landed line is in bronze or its quarantine exactly once, and the batch
ledger accounts for every one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.tables import BRONZE_EVENTS, BRONZE_EVENTS_QUARANTINE, BRONZE_INGEST_BATCHES
from tests.conftest import ROOT, isolated

SPEC = GeneratorSpec(users=80, artists=120, days=2, dirt_rate=0.1, future_days=0, seed=5, files_per_hour=2)


def _ingest(cfg, files_per_batch: int = 3) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "ingest_events.py"), "--env", "test",
         "--set", f"lake.root={cfg.lake.root}", "--set", f"landing.path={cfg.landing.path}",
         "--set", f"ingest.max_files_per_trigger={files_per_batch}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _commits(table_path: str) -> int:
    return len(list(Path(table_path, "_delta_log").glob("*.json")))


def _kill_when(cfg, ready, timeout_s: float = 240) -> None:
    """Start the job, wait until `ready()`, then SIGKILL it and its JVM."""
    job = _ingest(cfg)
    deadline = time.monotonic() + timeout_s
    while not ready() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the ingest finished before it could be killed: give it more files"
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()


@pytest.mark.slow
def test_kill_9_twice_then_rerun_loses_nothing_duplicates_nothing_and_the_ledger_reconciles(
        services, spark, tmp_path):
    cfg = isolated(services, tmp_path, "crash")
    manifest = generate(cfg.landing.path, SPEC)
    assert manifest["files"] >= 30  # enough micro-batches of 3 files to be killed in the middle

    bronze_log, ledger_log = BRONZE_EVENTS.path(cfg.lake), BRONZE_INGEST_BATCHES.path(cfg.lake)
    start = _commits(ledger_log)
    _kill_when(cfg, lambda: _commits(ledger_log) >= start + 2)
    # Killed between a batch's bronze commit and its ledger row: the rerun finds that bronze write
    # already committed (Delta skips it, so nothing is observed) and must count the batch again.
    ahead = _commits(bronze_log) - _commits(ledger_log)
    _kill_when(cfg, lambda: _commits(bronze_log) - _commits(ledger_log) > ahead)
    assert _commits(bronze_log) - _commits(ledger_log) > ahead, "killed outside the window it was aimed at"
    # The rerun first replays the batch the kill left planned (its files were fixed when it was
    # planned), then takes every file left in one batch: small batches only had to give the kills
    # somewhere to land, and each costs a few seconds.
    assert _ingest(cfg, files_per_batch=1000).wait(timeout=600) == 0

    bronze = lake.read(spark, BRONZE_EVENTS.path(cfg.lake)).count()
    quarantined = lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).count()
    ledger = lake.read(spark, BRONZE_INGEST_BATCHES.path(cfg.lake))
    totals = ledger.agg(F.sum("lines"), F.sum("rows_bronze"), F.sum("rows_quarantined"), F.sum("files"),
                        F.count("*"), F.countDistinct("app_id", "batch_id")).collect()[0]
    assert bronze + quarantined == manifest["lines"]
    assert tuple(totals[:4]) == (manifest["lines"], bronze, quarantined, manifest["files"])
    assert totals[4] == totals[5]  # one ledger row per committed batch
    by_reason = {r["_reason"]: r["count"] for r in
                 lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).groupBy("_reason").count().collect()}
    ledger_reasons = ledger.select(F.explode("reasons")).groupBy("key").agg(F.sum("value")).collect()
    assert {r[0]: r[1] for r in ledger_reasons} == by_reason
