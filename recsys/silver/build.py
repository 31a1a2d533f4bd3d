"""One silver run: events (incremental), forgotten users, users, artists, tracks, quality report."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from recsys import lake
from recsys.config import Config
from recsys.keys import pseudonym
from recsys.silver import postgres_sink
from recsys.silver.catalog import to_artists, to_tracks
from recsys.silver.events import SilverEventsReport, build_silver_events
from recsys.silver.privacy import geocoder, pseudonymizer
from recsys.silver.users import to_silver_users
from recsys.tables import SILVER_QUALITY_REPORTS, USER_ID

log = logging.getLogger(__name__)

class QualityGateFailed(RuntimeError):
    """The run's quarantine rate passed `quality.max_quarantine_rate`."""


def forget_deleted_users(spark: SparkSession, cfg: Config, secret: str) -> int:
    """Remove users deleted from `accounts` from silver events (and PostgreSQL click_events).

    The deletion log is small and holds account ids; keys are derived on the driver.
    """
    deletions = lake.table_path(cfg.lake, "bronze", "account_deletions")
    if not lake.exists(spark, deletions):
        return 0
    keys = sorted({pseudonym(secret, r[USER_ID]) for r in lake.read(spark, deletions).select(USER_ID).collect()})
    if not keys:
        return 0
    events = lake.table_path(cfg.lake, "silver", "events")
    gone = spark.createDataFrame([(k,) for k in keys], "user_key string")
    DeltaTable.forPath(spark, events).alias("t").merge(gone.alias("s"), "t.user_key = s.user_key") \
        .whenMatchedDelete().execute()
    if cfg.ingest.click_events_to_postgres:
        postgres_sink.delete_users(cfg.postgres, keys)
    return len(keys)


def build_silver(spark: SparkSession, cfg: Config, run_id: str, now: datetime) -> dict:
    """Run every silver step; return the data-quality report (also stored and gated)."""
    secret = cfg.require_secret("privacy.pseudonym_secret")
    on_batch = None
    if cfg.ingest.click_events_to_postgres:
        postgres_sink.ensure_click_events(cfg.postgres)

        def on_batch(new_events: DataFrame, batch_id: int) -> None:
            postgres_sink.append_click_events(new_events, cfg.postgres, f"{run_id[:12]}_{batch_id}")

    events_report = build_silver_events(spark, cfg, run_id, now, on_batch=on_batch)
    forgotten = forget_deleted_users(spark, cfg, secret)

    users = to_silver_users(
        lake.read(spark, lake.table_path(cfg.lake, "bronze", "accounts")),
        pseudonymize=pseudonymizer(spark, secret), geocode=geocoder(cfg.privacy.geo_min_population),
        today=now.date(),
    )
    lake.overwrite(users, lake.table_path(cfg.lake, "silver", "users"))
    events = lake.read(spark, lake.table_path(cfg.lake, "silver", "events"))
    lake.overwrite(to_artists(events), lake.table_path(cfg.lake, "silver", "artists"))
    lake.overwrite(to_tracks(events), lake.table_path(cfg.lake, "silver", "tracks"))

    counts = {
        name: lake.read(spark, lake.table_path(cfg.lake, "silver", name)).count()
        for name in ("events", "users", "artists", "tracks")
    }
    report = {
        "run_id": run_id,
        "at": now.isoformat(),
        "events": {**asdict(events_report), "quarantine_rate": round(events_report.quarantine_rate, 6)},
        "forgotten_users": forgotten,
        "tables": counts,
        "max_quarantine_rate": cfg.quality.max_quarantine_rate,
    }
    row = (run_id, now, events_report.quarantine_rate, json.dumps(report, sort_keys=True))
    lake.append(spark.createDataFrame([row], SILVER_QUALITY_REPORTS.schema), SILVER_QUALITY_REPORTS.path(cfg.lake))
    quality_gate(events_report, cfg.quality.max_quarantine_rate)
    return report


def quality_gate(events: SilverEventsReport, max_rate: float) -> None:
    """Fail the run, naming the rate, the limit and the reasons, when too much was quarantined."""
    if events.quarantine_rate > max_rate:
        raise QualityGateFailed(
            f"silver quarantined {events.quarantine_rate:.2%} of {events.rows_in} events, above "
            f"quality.max_quarantine_rate {max_rate:.2%}: {events.quarantined}"
        )
