"""`make pii-scan` after the whole chain on generated data (with producers' PII planted in events):
nothing past bronze; and a value deliberately leaked into gold is found, by count, not by value."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import ModelConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.orchestration.refresh import refresh
from recsys.pii_scan import report, scan
from recsys.sources.accounts import upsert_accounts
from recsys.tables import BRONZE_ACCOUNTS, GOLD_ARTIST_STATS
from tests.conftest import isolated

SPEC = GeneratorSpec(users=120, artists=130, days=2, dirt_rate=0.15, future_days=0, seed=17)


@pytest.fixture(scope="module")
def chain(services, spark, tmp_path_factory):
    run = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("pii")
    cfg = isolated(services, root, "pii")
    cfg = dataclasses.replace(
        cfg, privacy=dataclasses.replace(cfg.privacy, pseudonym_secret="pii-secret"),
        mlflow=dataclasses.replace(cfg.mlflow, experiment=f"pii-{run}"),
        quality=dataclasses.replace(cfg.quality, max_quarantine_rate=0.5),
        model=ModelConfig(name=f"pii-{run}", ranks=(8,), max_iters=(5,), reg_param_range=(0.1,), trials=1,
                          min_lift=-1.0, min_coverage=0.0, curve_max_k=20),
        recommend=dataclasses.replace(cfg.recommend, top_k=20))
    manifest = generate(cfg.landing.path, SPEC, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    assert manifest["dirt"]["pii_in_event"]["count"] > 0  # producers' PII did reach the landing zone
    log = root / "jobs.log"
    lines: list[str] = []
    refresh(spark, cfg, on_stage=lambda r: lines.append(str(r)))
    log.write_text("\n".join(lines))
    patterns = (f"{cfg.gold.redis_prefix}:*", f"{cfg.publish.prefix}:*")
    return cfg, patterns, (str(log),)


@pytest.mark.slow
def test_nothing_past_bronze_holds_pii_then_a_leak_into_gold_is_found(spark, chain):
    cfg, patterns, logs = chain
    assert scan(spark, cfg, redis_patterns=patterns, logs=logs) == []

    email = lake.read(spark, BRONZE_ACCOUNTS.path(cfg.lake)).select("email").first()[0]
    stats = lake.read(spark, GOLD_ARTIST_STATS.path(cfg.lake))
    lake.append(stats.limit(1).withColumn("artist_name", F.lit(email)), GOLD_ARTIST_STATS.path(cfg.lake))
    hits = scan(spark, cfg, redis_patterns=patterns, logs=logs)
    found = {(h.sink, h.where, h.kind): h.count for h in hits}
    # the row, and the min and max column statistics its commit wrote into the Delta log
    assert found == {("lake", "gold/artist_stats", "email"): 1, ("lake", "gold/artist_stats (log)", "email"): 2}
    assert email.lower() not in report(hits).lower()
