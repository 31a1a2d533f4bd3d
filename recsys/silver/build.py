"""One silver run: events (incremental, forgotten users' dropped), users, artists, tracks, quality report;
and the silver part of forgetting users (`forget_events`, run by `recsys.orchestration.forget`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import forgotten_tokens
from recsys.config import Config
from recsys.frames import Persisted
from recsys.silver import postgres_sink
from recsys.silver.catalog import artists_from, catalog_values, recount, touched_by, tracks_from
from recsys.silver.events import SilverEventsReport, build_silver_events
from recsys.silver.privacy import geocoder, pseudonymizer
from recsys.silver.users import to_silver_users
from recsys.tables import (
    ARTIST_ID,
    SILVER_ARTISTS,
    SILVER_CATALOG_VALUES,
    SILVER_EVENTS,
    SILVER_QUALITY_REPORTS,
    SILVER_TRACKS,
    TRACK_ID,
    USER_KEY,
)

log = logging.getLogger(__name__)

class QualityGateFailed(RuntimeError):
    """The run's quarantine rate passed `quality.max_quarantine_rate`."""


def forget_events(spark: SparkSession, cfg: Config, gone: DataFrame) -> int:
    """Remove the events of the `gone` user keys from silver (catalog counts, events, PostgreSQL);
    how many events went.

    The catalog is recounted first, over the events that stay, then the events are deleted: a
    crash between the two leaves the events in place, and a rerun recounts the same way. The
    DELETE rewrites only the files holding those users' events. PostgreSQL's copy is deleted last,
    also when silver holds none of their events any more: a rerun after a crash that followed the
    DELETE finishes it. Call inside `lake.erasure`.
    """
    events_path = SILVER_EVENTS.path(cfg.lake)
    lake.ensure_table(spark, events_path)
    ensure_catalog_values(spark, cfg)  # a lake from before the catalog table: forgetting runs before silver
    events = lake.read(spark, events_path)
    theirs = events.join(F.broadcast(gone), on=USER_KEY, how="left_semi")
    deleted = 0
    with Persisted() as keep:
        touched = keep(touched_by(theirs))
        if not touched.isEmpty():
            artists = touched.filter("kind = 'artist'").select(F.col("id").alias(ARTIST_ID))
            tracks = touched.filter("kind = 'track'").select(F.col("id").alias(TRACK_ID))
            remaining = (events.join(F.broadcast(gone), on=USER_KEY, how="left_anti")
                         .join(F.broadcast(artists.withColumn("_a", F.lit(True))), on=ARTIST_ID, how="left")
                         .join(F.broadcast(tracks.withColumn("_t", F.lit(True))), on=TRACK_ID, how="left")
                         .filter(F.col("_a") | F.col("_t")))
            recount(spark, SILVER_CATALOG_VALUES.path(cfg.lake), remaining, touched)
            deleted = lake.delete_matching(spark, events_path, gone, F.col(f"t.{USER_KEY}") == F.col(f"s.{USER_KEY}"))
    postgres_sink.delete_users(cfg.postgres, [r[USER_KEY] for r in gone.collect()])
    return deleted


def ensure_catalog_values(spark: SparkSession, cfg: Config) -> None:
    """Create `silver/catalog_values` from every silver event when it does not exist yet (a lake
    from before the table, or a rebuild after it was dropped); afterwards batches keep it current.
    """
    path = SILVER_CATALOG_VALUES.path(cfg.lake)
    if not lake.exists(spark, path):
        events_path = SILVER_EVENTS.path(cfg.lake)
        lake.ensure_table(spark, events_path)
        lake.overwrite(catalog_values(lake.read(spark, events_path)), path)


def build_silver(spark: SparkSession, cfg: Config, run_id: str, now: datetime) -> dict:
    """Run every silver step; return the data-quality report (also stored and gated)."""
    secret = cfg.require_secret("privacy.pseudonym_secret")
    on_batch = None
    if cfg.ingest.click_events_to_postgres:
        postgres_sink.ensure_click_events(cfg.postgres)

        def on_batch(new_events: DataFrame, batch_id: int) -> None:
            postgres_sink.append_click_events(new_events, cfg.postgres, f"{run_id[:12]}_{batch_id}")

    ensure_catalog_values(spark, cfg)
    events_report = build_silver_events(spark, cfg, run_id, now, forgotten=forgotten_tokens(spark, cfg),
                                        on_batch=on_batch)

    users = to_silver_users(
        lake.read(spark, lake.table_path(cfg.lake, "bronze", "accounts")),
        pseudonymize=pseudonymizer(spark, secret), geocode=geocoder(cfg.privacy.geo_min_population),
        today=now.date(),
    )
    lake.overwrite(users, lake.table_path(cfg.lake, "silver", "users"))
    values = lake.read(spark, SILVER_CATALOG_VALUES.path(cfg.lake))
    lake.overwrite(artists_from(values), SILVER_ARTISTS.path(cfg.lake))
    lake.overwrite(tracks_from(values), SILVER_TRACKS.path(cfg.lake))

    counts = {
        name: lake.read(spark, lake.table_path(cfg.lake, "silver", name)).count()
        for name in ("events", "users", "artists", "tracks")
    }
    report = {
        "run_id": run_id,
        "at": now.isoformat(),
        "events": {**asdict(events_report), "quarantine_rate": round(events_report.quarantine_rate, 6)},
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
