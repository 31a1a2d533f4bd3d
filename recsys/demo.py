"""The `make demo` journey: each step calls the library exactly as a job or notebook would."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import Config
from recsys.datagen.generator import generate, read_manifest
from recsys.gold.build import build_gold
from recsys.gold.store import sync_feature_store
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from recsys.spark import get_spark
from recsys.tracking import setup_mlflow, tracking_uri


def _step(name: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {name}", flush=True)


def run_demo(cfg: Config, started: float) -> int:
    if read_manifest(cfg.landing.path) is None:
        _step(f"generate {cfg.datagen.users} users x {cfg.datagen.days} days into {cfg.landing.path}", started)
        manifest = generate(cfg.landing.path, cfg.datagen,
                            on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
        print(f"         {manifest['lines']} lines in {manifest['files']} files "
              f"({manifest['lines'] / manifest['last_run']['seconds']:,.0f} lines/s)")
    else:
        _step(f"landing zone already generated in {cfg.landing.path} (delete it or use --append-days)", started)

    spark = get_spark(cfg.spark, app_name="recsys-demo")
    _step(f"spark {spark.version} ready", started)
    run_id = uuid.uuid4().hex
    bronze = ingest_events(spark, cfg, run_id=run_id)
    _step(f"bronze: {bronze.lines_read} new lines = {bronze.rows_bronze} events + "
          f"{bronze.rows_quarantined} quarantined {bronze.reasons}", started)
    accounts = ingest_accounts(spark, cfg, run_id=run_id)
    _step(f"bronze: {accounts.rows_read} accounts extracted", started)
    report = build_silver(spark, cfg, run_id=run_id, now=datetime.now(UTC))
    events = report["events"]
    _step(f"silver: {events['inserted']} new events, {events['duplicates_dropped']} duplicates dropped, "
          f"quarantined {events['quarantined']}; tables {report['tables']}", started)
    build = build_gold(spark, cfg, as_of=datetime.now(UTC))
    _step(f"gold as of {build.as_of:%Y-%m-%d %H:%M} from silver/events v{build.inputs['silver/events']}", started)
    synced = sync_feature_store(spark, cfg, stage_suffix=build.build_id[:12])
    _step(f"feature store: {synced.changed} users written to PostgreSQL and Redis, {synced.removed} removed", started)
    setup_mlflow(cfg)

    print("\nwhere things are:")
    print(f"  lake (Delta)     {cfg.lake.root}/{{bronze,silver,gold}}/<table>")
    for layer, tables in (("bronze", ("events", "events_quarantine", "ingest_runs", "accounts")),
                          ("silver", ("events", "events_quarantine", "users", "artists", "tracks")),
                          ("gold", ("artist_stats", "track_stats", "user_features", "interactions"))):
        sizes = ", ".join(f"{t} {lake.read(spark, lake.table_path(cfg.lake, layer, t)).count()}" for t in tables)
        print(f"    {layer:7} {sizes}")
    print(f"  landing zone     {cfg.landing.path} (manifest and ground truth in _meta/)")
    print(f"  MLflow UI        .venv/bin/mlflow ui --backend-store-uri {tracking_uri(cfg)}")
    print(f"  PostgreSQL       psql -h {cfg.postgres.host} -p {cfg.postgres.port} -U {cfg.postgres.user} "
          f"{cfg.postgres.database}   (tables accounts, click_events, user_features)")
    print(f"  Redis            {cfg.redis.url}/{cfg.redis.db}   (keys {cfg.gold.redis_prefix}:features:<user_key>)")
    _step("done", started)
    return 0
