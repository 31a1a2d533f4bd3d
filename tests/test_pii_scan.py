"""`make pii-scan` after the whole chain on generated data (with producers' PII planted in events):
a forgotten user is found nowhere after one forget run, bronze and landing included; nothing past
bronze holds PII; and a value deliberately leaked into gold is found, by count, not by value."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import ModelConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.gold.build import build_gold
from recsys.lake import ErasedVersion
from recsys.model.batch import build_recommendations
from recsys.orchestration.forget import forget
from recsys.orchestration.refresh import refresh
from recsys.pii_scan import needles_of, report, scan
from recsys.serving.publish import publish
from recsys.sources.accounts import TABLE, upsert_accounts
from recsys.stores import postgres
from recsys.tables import BRONZE_ACCOUNTS, BRONZE_EVENTS, GOLD_ARTIST_STATS, SILVER_EVENTS
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
def test_a_forgotten_user_is_found_nowhere_after_one_run(spark, chain):
    cfg, patterns, logs = chain
    cfg = dataclasses.replace(cfg, lake=dataclasses.replace(cfg.lake, retention_hours=0))
    publish(spark, cfg)  # a second version: the first stays in Redis for --rollback, and must lose them too
    events = lake.read(spark, BRONZE_EVENTS.path(cfg.lake))
    victim = (events.filter(F.col("user.email").isNotNull()).groupBy(F.trim("user_id").alias("id")).count()
              .orderBy(F.desc("count"), "id").first()["id"])  # producers sent their PII in events
    wanted = needles_of(spark, cfg, [victim]).persist()
    assert {r.kind for r in wanted.collect()} >= {"user_id", "user_key", "email", "name"}
    found = {h.sink for h in scan(spark, cfg, redis_patterns=patterns, wanted=wanted, everywhere=True)}
    assert found == {"lake", "landing", "postgres", "redis", "mlflow"}  # the scan can fail in every sink
    silver_version = lake.current_version(spark, SILVER_EVENTS.path(cfg.lake))

    postgres.execute(cfg.postgres, f"DELETE FROM {TABLE} WHERE user_id = %s", (victim,))  # the source's part
    erased: list = []
    assert forget(spark, cfg, [f" {victim} "], run_id="forget", on_erasure=erased.append) == 1  # stray spaces

    print(erased[0], erased[0].seconds)  # noqa: T201 (shown with -rP: where an erasure spends its time)
    hits = scan(spark, cfg, redis_patterns=patterns, wanted=wanted, everywhere=True, logs=logs)
    assert hits == [], report(hits)
    assert erased[0].landing_files > 0 and erased[0].redis_lists >= 2 and erased[0].model_runs == 1  # noqa: PT018
    with pytest.raises(ErasedVersion, match="older than its erasure"):
        build_gold(spark, cfg, as_of=datetime.now(UTC), silver_version=silver_version)
    batch = build_recommendations(spark, cfg)  # the rewritten model still loads and serves everyone else
    assert batch.users > 0
    assert forget(spark, cfg, [], run_id="again") == 0  # nothing pending: a rerun erases nothing


@pytest.mark.slow
def test_nothing_past_bronze_holds_pii_then_a_leak_into_gold_is_found(spark, chain):
    cfg, patterns, logs = chain
    assert scan(spark, cfg, redis_patterns=patterns, logs=logs) == []

    email = lake.read(spark, BRONZE_ACCOUNTS.path(cfg.lake)).select("email").first()[0]
    stats = lake.read(spark, GOLD_ARTIST_STATS.path(cfg.lake))
    lake.append(stats.limit(1).withColumn("artist_name", F.lit(email)), GOLD_ARTIST_STATS.path(cfg.lake))
    hits = scan(spark, cfg, redis_patterns=patterns, logs=logs)
    found = {(h.sink, h.where, h.kind): h.count for h in hits}
    # the row only: tables keep no column statistics, so the commit did not copy it into the Delta log
    assert found == {("lake", "gold/artist_stats", "email"): 1}
    assert email.lower() not in report(hits).lower()


def test_a_lake_whose_bronze_holds_no_pii_is_reported_clean(spark, services, tmp_path):
    cfg = isolated(services, tmp_path, "pii_none")
    cfg = dataclasses.replace(cfg, mlflow=dataclasses.replace(cfg.mlflow, experiment=f"pii-none-{tmp_path.name}"))
    for table in (BRONZE_ACCOUNTS, BRONZE_EVENTS, GOLD_ARTIST_STATS):
        lake.ensure_table(spark, table.path(cfg.lake))
    hits = scan(spark, cfg, redis_patterns=(f"{cfg.gold.redis_prefix}:*",))
    assert hits == []
    assert report(hits) == "pii-scan: no PII found outside bronze and the landing zone"
