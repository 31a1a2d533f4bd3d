"""The Last.fm 2K benchmark (`make eval-lastfm`): import, pipeline through gold, then ALS against
global and segment popularity on the documented protocol.

Protocol: users with at least 5 artists in gold interactions; per user a random 20% of
artists held out (hash with seed 42, `split.random_holdout`); K = 10; training artists are
excluded from every list.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import Config
from recsys.datasets.lastfm import import_lastfm
from recsys.gold.build import build_gold
from recsys.model.als import ITEM, USER, AlsParams, fit, popularity
from recsys.model.metrics import ranking_metrics
from recsys.model.segments import SEGMENT, UNKNOWN_SEGMENT, segment_of
from recsys.model.split import random_holdout
from recsys.model.topk import recommend
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts

K = 10


def pipeline_through_gold(spark: SparkSession, cfg: Config, source: str) -> DataFrame:
    """Import the data set and run bronze, silver and gold; return gold interactions."""
    interactions = lake.table_path(cfg.lake, "gold", "interactions")
    if not lake.exists(spark, interactions):
        import_lastfm(source, cfg.landing.path, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
        run = uuid.uuid4().hex
        ingest_events(spark, cfg, run_id=run)
        ingest_accounts(spark, cfg, run_id=run)
        build_silver(spark, cfg, run_id=run, now=datetime.now(UTC))
        build_gold(spark, cfg, as_of=datetime.now(UTC))
    return lake.read(spark, interactions)


def evaluate(spark: SparkSession, interactions: DataFrame, candidates: list[AlsParams], k: int = K,
             segments: DataFrame | None = None) -> list[dict]:
    """Metrics at `k` for each ALS configuration and both popularity baselines."""
    train, test = random_holdout(interactions.select(USER, ITEM, "confidence", "user_key"))
    train, test = train.persist(), test.persist()
    n_items = interactions.select(ITEM).distinct().count()
    users = test.select(USER, "user_key").distinct()
    if segments is not None:
        users = users.join(segments, on="user_key", how="left") \
            .withColumn(SEGMENT, segment_of(F.col("age_group"), F.col("country")))
    else:
        users = users.withColumn(SEGMENT, F.lit(UNKNOWN_SEGMENT))
    rows = []
    for name, recs in (("global popularity", popularity(train, users, k)),
                       ("segment popularity", popularity(train, users, k, segment=SEGMENT))):
        rows.append({"model": name, **ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM), "fit_s": 0.0})
    for params in candidates:
        model, seconds = fit(train, params)
        recs = recommend(model, users, train, k)
        label = f"ALS rank={params.rank} reg={params.reg_param} alpha={params.alpha} {params.scaling}"
        rows.append({"model": label, **ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM),
                     "fit_s": round(seconds, 1)})
    train.unpersist()
    test.unpersist()
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'model':48} {'NDCG@10':>8} {'P@10':>7} {'R@10':>7} {'MAP@10':>7} {'hit':>7} {'cover':>7} {'fit s':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:48} {r['ndcg']:8.4f} {r['precision']:7.4f} {r['recall']:7.4f} {r['map']:7.4f} "
                     f"{r['hit_rate']:7.4f} {r['coverage']:7.4f} {r['fit_s']:6.1f}")
    return "\n".join(lines)


def benchmark_config(cfg: Config) -> Config:
    """The benchmark's own lake and landing zone under the state folder, apart from the demo's."""
    root = f"{cfg.services.state_dir}/lastfm"
    return dataclasses.replace(
        cfg,
        lake=dataclasses.replace(cfg.lake, root=f"{root}/lake"),
        landing=dataclasses.replace(cfg.landing, path=f"{root}/landing"),
        postgres=dataclasses.replace(cfg.postgres, database=f"{cfg.postgres.database}_lastfm"),
        ingest=dataclasses.replace(cfg.ingest, click_events_to_postgres=False),
    )
