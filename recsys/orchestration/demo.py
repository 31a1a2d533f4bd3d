"""The `make demo` journey: each step calls the library exactly as a job or notebook would."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import SparkSession

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.cli import EXIT_MODEL
from recsys.config import Config
from recsys.datagen.generator import generate, read_manifest
from recsys.gold.build import build_gold
from recsys.gold.store import sync_feature_store
from recsys.model.batch import build_recommendations
from recsys.model.train import CHAMPION, TrainingFailed, summary_line, train
from recsys.orchestration.forget import forget_requested
from recsys.serving.api import create_app, running
from recsys.serving.auth import EVENTS_WRITE, bearer
from recsys.serving.publish import publish
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from recsys.tracking import tracking_uri


def has_champion(cfg: Config) -> bool:
    """Whether the registry has a champion version of the configured model."""
    try:
        MlflowClient().get_model_version_by_alias(cfg.model.name, CHAMPION)
    except MlflowException:
        return False
    return True


class _TrialProgress(logging.Handler):
    """The search's per-trial log lines as one line rewritten in place on a terminal; off a
    terminal (CI, a log file) nothing: the train step's summary line says how the search went.
    """

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.done, self.shown = total, 0, False
        self.live = sys.stdout.isatty()

    def emit(self, record: logging.LogRecord) -> None:
        self.done += 1
        if self.live:
            sys.stdout.write(f"\r\033[K         train: trial {self.done}/{self.total}, {record.getMessage()[:90]}")
            sys.stdout.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


@contextmanager
def _trial_progress(total: int) -> Iterator[None]:
    """Route `recsys.model.search`'s trial lines to `_TrialProgress` for the block."""
    logger = logging.getLogger("recsys.model.search")
    handler, propagate = _TrialProgress(total), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        handler.clear()


def _step(name: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {name}", flush=True)


def _call_api(cfg: Config, user_ids: list[str]) -> None:
    """Serve the API in-process for a moment: a few requests, then a click on the first answer."""
    key = cfg.require_secret("auth.jwt_secret")
    with running(create_app(cfg), cfg.serving.host) as url, httpx.Client(base_url=url, timeout=10) as api:
        first: dict | None = None
        for user_id in user_ids:
            body = api.get(f"/v1/users/{user_id}/recommendations", params={"k": 5},
                           headers=bearer(cfg.auth, key, user_id)).json()
            first = first or body
            print(f"         GET /v1/users/<id>/recommendations -> variant {body['variant']}, model v"
                  f"{body['model_version']}, {body['source']}: {[i['name'] for i in body['items']]}")
        if first is None:
            return
        item = first["items"][0]
        click = {"event_id": str(uuid.uuid4()), "event_type": "click", "user_id": first["user_id"],
                 "event_ts": datetime.now(UTC).isoformat(), "card": {"artist_id": item["artist_id"],
                                                                     "artist_name": item["name"]},
                 "recommendation": {"request_id": first["request_id"], "model_version": first["model_version"],
                                    "variant": first["variant"], "position": item["rank"] - 1,
                                    "score": item["score"]}}
        posted = api.post("/v1/events", json=click, headers=bearer(cfg.auth, key, "service:demo", [EVENTS_WRITE]))
        print(f"         POST /v1/events (a click) -> {posted.status_code}")


def run_demo(spark: SparkSession, cfg: Config, started: float) -> int:
    """Run the whole journey on generated data, one line per stage; the exit code."""
    if read_manifest(cfg.landing.path) is None:
        _step(f"generate {cfg.datagen.users} users x {cfg.datagen.days} days into {cfg.landing.path}", started)
        manifest = generate(cfg.landing.path, cfg.datagen,
                            on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
        print(f"         {manifest['lines']} lines in {manifest['files']} files "
              f"({manifest['lines'] / manifest['last_run']['seconds']:,.0f} lines/s)")
    else:
        _step(f"landing zone already generated in {cfg.landing.path} (delete it or use --append-days)", started)

    _step(f"spark {spark.version} ready", started)
    run_id = uuid.uuid4().hex
    bronze = ingest_events(spark, cfg, run_id=run_id)
    _step(f"bronze: {bronze.lines_read} new lines = {bronze.rows_bronze} events + "
          f"{bronze.rows_quarantined} quarantined {bronze.reasons}", started)
    accounts = ingest_accounts(spark, cfg, run_id=run_id)
    _step(f"bronze: {accounts.rows_read} accounts extracted", started)
    forgotten = forget_requested(spark, cfg, on_erasure=lambda e: print(f"         {e}"))
    _step(f"forget: {forgotten} users asked to be forgotten, erased everywhere", started)
    report = build_silver(spark, cfg, run_id=run_id, now=datetime.now(UTC))
    events = report["events"]
    _step(f"silver: {events['inserted']} new events, {events['duplicates_dropped']} duplicates dropped, "
          f"quarantined {events['quarantined']}; tables {report['tables']}", started)
    build = build_gold(spark, cfg, as_of=datetime.now(UTC))
    _step(f"gold as of {build.as_of:%Y-%m-%d %H:%M} from silver/events v{build.inputs['silver/events']}", started)
    synced = sync_feature_store(spark, cfg, stage_suffix=build.build_id[:12])
    _step(f"feature store: {synced.changed} users written to PostgreSQL and Redis, {synced.removed} removed", started)
    try:
        with _trial_progress(cfg.model.trials):
            trained = train(spark, cfg)
    except TrainingFailed as err:
        print(f"demo: training failed: {err}", flush=True)
        return EXIT_MODEL
    _step(f"train: {cfg.model.name} {summary_line(trained, cfg.model)}", started)
    if not trained.promoted and not has_champion(cfg):
        print("demo: no model has earned `champion` yet, so there is nothing to serve; see the training "
              "report in MLflow", flush=True)
        return EXIT_MODEL
    batch = build_recommendations(spark, cfg)
    _step(f"recommend: {batch.lists} lists ({batch.items} artists) for {batch.users} users, models {batch.models}, "
          f"lists by source {batch.by_source}",
          started)
    published = publish(spark, cfg)
    _step(f"publish: version {published.version} live in Redis ({published.users} users, "
          f"{published.segments} segment lists, {published.seconds:.1f}s)", started)
    user_ids = [r["user_id"] for r in lake.read(spark, lake.table_path(cfg.lake, "bronze", "accounts"))
                .select("user_id").orderBy("user_id").limit(3).collect()]
    _call_api(cfg, user_ids + ["someone-new"])
    _step("api: answered, impressions and a click landed in the landing zone", started)

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
          f"{cfg.postgres.database}   (tables accounts, click_events, user_features, feature_artists, "
          f"feature_tracks; view user_features_full)")
    print(f"  Redis            {cfg.redis.url}/{cfg.redis.db}   (keys {cfg.gold.redis_prefix}:features:<user_key>, "
          f"{cfg.publish.prefix}:recs:*)")
    print(f"  API              make serve, then http://{cfg.serving.host}:{cfg.serving.port}/docs")
    print(f"                   curl -H \"Authorization: Bearer $(make -s token USER_ID={user_ids[0]})\" "
          f"'http://{cfg.serving.host}:{cfg.serving.port}/v1/users/{user_ids[0]}/recommendations?k=5'")
    _step("done", started)
    return 0
