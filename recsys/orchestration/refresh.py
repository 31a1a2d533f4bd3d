"""The incremental refresh a scheduler runs every few hours: one call per stage, in journey order.

Ingest events and accounts, silver, gold, the feature store, train when `model.retrain_every_h`
has passed since the last training run, recommend, publish. Every stage is idempotent (exactly-once
ingestion, MERGEs, overwrites, versioned publish), so a failed refresh is simply run again. Each
stage prints one line with its counts and seconds; the first failure stops the chain with
`RefreshFailed`, which names the stage and carries the exit code of the job that stage stands for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import mlflow
from pyspark.sql import SparkSession

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.cli import EXIT_MODEL, EXIT_QUALITY, EXIT_SERVICE
from recsys.config import Config
from recsys.endpoints import ServiceUnavailable
from recsys.gold.build import build_gold
from recsys.gold.store import sync_feature_store
from recsys.model.batch import ModelNotFound, build_recommendations
from recsys.model.train import TrainingFailed, summary_line, train
from recsys.orchestration.forget import Erasure, forget_requested
from recsys.serving.publish import PublishError, publish
from recsys.silver.build import QualityGateFailed, build_silver
from recsys.tracking import setup_mlflow

# The exit code of each failure a stage can meet; anything else is 1.
EXIT_CODES: dict[type[Exception], int] = {
    QualityGateFailed: EXIT_QUALITY, ServiceUnavailable: EXIT_SERVICE, TrainingFailed: EXIT_MODEL,
    ModelNotFound: EXIT_MODEL, PublishError: EXIT_MODEL,
}


class RefreshFailed(RuntimeError):
    """A stage failed: `stage`, the cause in one line, and the exit code to leave with."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"refresh failed at stage {stage}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.exit_code = next((code for kind, code in EXIT_CODES.items() if isinstance(cause, kind)), 1)


@dataclass(frozen=True)
class StageResult:
    """One stage's line: what it did and how long it took."""

    stage: str
    summary: str
    seconds: float


def training_due(cfg: Config, now: datetime) -> bool:
    """Whether no training run finished within the last `model.retrain_every_h` hours."""
    setup_mlflow(cfg)
    runs = mlflow.search_runs(filter_string="attributes.run_name = 'train-als' AND attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if not runs:
        return True
    last = datetime.fromtimestamp(runs[0].info.start_time / 1000, UTC)
    return now - last >= timedelta(hours=cfg.model.retrain_every_h)


def refresh(spark: SparkSession, cfg: Config, on_stage: Callable[[StageResult], None] = print,
            now: datetime | None = None) -> list[StageResult]:
    """Run the chain once; each finished stage goes to `on_stage`. Raises `RefreshFailed`."""
    run_id, now = uuid.uuid4().hex, now or datetime.now(UTC)
    results: list[StageResult] = []

    def stage(name: str, work: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            summary = work()
        except Exception as err:  # the chain stops at the first failure, named by its stage
            raise RefreshFailed(name, err) from err
        results.append(StageResult(name, summary, time.monotonic() - started))
        on_stage(results[-1])

    def bronze_events() -> str:
        r = ingest_events(spark, cfg, run_id=run_id)
        failed = r.over_quarantine_limit(cfg.quality.max_quarantine_rate)
        if failed:
            raise QualityGateFailed(failed)
        return f"{r.lines_read} new lines = {r.rows_bronze} events + {r.rows_quarantined} quarantined"

    def silver() -> str:
        events = build_silver(spark, cfg, run_id=run_id, now=now)["events"]
        return f"{events['inserted']} new events, {events['duplicates_dropped']} duplicates dropped"

    def gold() -> str:
        # Silver ran with this refresh's clock, after `now`: the users it wrote are the ones as of
        # `now`, though committed later (`as_of` alone would pick the previous refresh's users).
        users = lake.current_version(spark, lake.table_path(cfg.lake, "silver", "users"))
        build = build_gold(spark, cfg, as_of=now, users_version=users)
        how = "updated from what entered and left the window"
        if build.full_because:
            how = f"full build: {build.full_because}"
        return f"as of {now:%Y-%m-%d %H:%M} ({how})"

    def feature_store() -> str:
        synced = sync_feature_store(spark, cfg, stage_suffix=run_id[:12])
        return f"{synced.changed} users written, {synced.removed} removed"

    def training() -> str:
        if not training_due(cfg, now):
            return f"skipped: the last training is less than {cfg.model.retrain_every_h} h old"
        return summary_line(train(spark, cfg), cfg.model)

    def accounts() -> str:
        r = ingest_accounts(spark, cfg, run_id=run_id)
        return f"{r.rows_read} accounts extracted, {r.forget_requested} deleted at the source"

    def forgetting() -> str:
        erased: list[Erasure] = []
        forget_requested(spark, cfg, on_erasure=erased.append)
        return "; ".join(map(str, erased)) or "no user to forget"

    stage("bronze events", bronze_events)
    stage("bronze accounts", accounts)
    stage("forget", forgetting)
    stage("silver", silver)
    stage("gold", gold)
    stage("feature store", feature_store)
    stage("train", training)
    stage("recommend", lambda: f"{build_recommendations(spark, cfg).lists} lists")
    stage("publish", lambda: f"version {publish(spark, cfg).version} live")
    return results
