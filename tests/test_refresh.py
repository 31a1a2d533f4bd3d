"""`make refresh`: the incremental chain end to end, twice (the second run trains only when due),
and a failing stage named with its exit code."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import ModelConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.keys import pseudonym
from recsys.model.batch import flat
from recsys.orchestration.refresh import RefreshFailed, refresh
from recsys.sources.accounts import upsert_accounts
from recsys.stores import postgres
from recsys.stores.redis import connect, text
from recsys.tables import USER_KEY
from tests.conftest import ROOT, isolated

SPEC = GeneratorSpec(users=200, artists=150, days=2, dirt_rate=0.02, future_days=0, seed=13)
STAGES = ["bronze events", "bronze accounts", "forget", "silver", "gold", "feature store", "train", "recommend",
          "publish"]


def _birth_date_changed(cfg, spark) -> str:
    """Make one featured user of under 65 born in 1940; their user key."""
    featured = {r[USER_KEY] for r in lake.read(spark, lake.table_path(cfg.lake, "gold", "user_features"))
                .filter(F.col("age_group") != "65+").select(USER_KEY).collect()}
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT user_id FROM accounts ORDER BY user_id")
        user_id = next(u for (u,) in cur.fetchall() if pseudonym(cfg.privacy.pseudonym_secret, u) in featured)
        cur.execute("UPDATE accounts SET date_of_birth = '1940-01-01', updated_at = now() WHERE user_id = %s",
                    (user_id,))
    return pseudonym(cfg.privacy.pseudonym_secret, user_id)


@pytest.mark.slow
def test_two_refreshes_publish_twice_and_train_only_when_due(services, spark, tmp_path):
    run = uuid.uuid4().hex[:8]
    cfg = isolated(services, tmp_path, "refresh")
    cfg = dataclasses.replace(
        cfg, privacy=dataclasses.replace(cfg.privacy, pseudonym_secret="refresh-secret"),
        mlflow=dataclasses.replace(cfg.mlflow, experiment=f"refresh-{run}"),
        services=dataclasses.replace(cfg.services, state_dir=str(tmp_path / "state")),
        # a walk through the chain, not a model contest (the promotion rules are tested in test_model_train)
        model=ModelConfig(name=f"refresh-{run}", ranks=(8,), max_iters=(5,), reg_param_range=(0.1,), trials=1,
                          min_lift=-1.0, min_coverage=0.0, curve_max_k=20, retrain_every_h=24),
        recommend=dataclasses.replace(cfg.recommend, top_k=20),
        # the third day is a third of the window's events: more than gold.max_update_share, but the
        # update is what is tested
        gold=dataclasses.replace(cfg.gold, max_update_share=1.0))
    generate(cfg.landing.path, SPEC, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))

    first = refresh(spark, cfg, on_stage=lambda r: None)
    generate(cfg.landing.path, SPEC, append_days=1)
    moved = _birth_date_changed(cfg, spark)  # an account the second refresh ingests
    second = refresh(spark, cfg, on_stage=lambda r: None)

    assert [r.stage for r in first] == STAGES and [r.stage for r in second] == STAGES
    first_of, second_of = ({r.stage: r.summary for r in run} for run in (first, second))
    assert not first_of["train"].startswith("skipped") and second_of["train"].startswith("skipped")
    assert int(second_of["bronze events"].split()[0]) > 0  # the appended day's lines, and only those
    assert first_of["forget"] == second_of["forget"] == "no user to forget"
    # gold starts from the whole window, then updates from the events that entered it
    assert "(full build: no build before" in first_of["gold"]
    assert "(updated from what entered and left the window)" in second_of["gold"]
    # the feature store writes everyone once, then only the users whose own features changed
    written = [int(run["feature store"].split()[0]) for run in (first_of, second_of)]
    assert 0 < written[1] < written[0]
    features = lake.read(spark, lake.table_path(cfg.lake, "gold", "user_features"))
    assert features.filter(F.col(USER_KEY) == moved).select("age_group").collect() == [("65+",)]
    # every listed artist carries its own name (the lists are labelled from the catalog on the executors)
    gold = {name: lake.read(spark, lake.table_path(cfg.lake, "gold", name))
            for name in ("recommendations", "artist_stats")}
    listed = flat(gold["recommendations"]).select("artist_id", "artist_name")
    catalog = gold["artist_stats"].select("artist_id", "artist_name")
    assert listed.filter(F.col("artist_name").isNotNull()).count() > 0
    assert listed.subtract(catalog).count() == 0  # as sets: an artist is listed for many users
    live = text(connect(cfg.redis).get(f"{cfg.publish.prefix}:recs:live"))
    assert live and second_of["publish"] == f"version {live} live" and first_of["publish"] != second_of["publish"]


@pytest.mark.slow
def test_a_failing_stage_stops_the_chain_and_the_job_names_it_with_its_exit_code(services, spark, tmp_path):
    cfg = isolated(services, tmp_path, "refresh_fail")
    generate(cfg.landing.path, dataclasses.replace(SPEC, dirt_rate=0.2))
    strict = dataclasses.replace(cfg, quality=dataclasses.replace(cfg.quality, max_quarantine_rate=0.0))
    with pytest.raises(RefreshFailed) as err:
        refresh(spark, strict, on_stage=lambda r: None)
    assert err.value.stage == "bronze events" and err.value.exit_code == 4

    job = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "refresh.py"), "--env", "test", "--set", f"lake.root={tmp_path / 'lake2'}",
         "--set", f"landing.path={cfg.landing.path}", "--set", "quality.max_quarantine_rate=0"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "RECSYS__PRIVACY__PSEUDONYM_SECRET": "refresh-secret"})
    assert job.returncode == 4, job.stderr[-2000:]
    assert "recsys: refresh failed at stage bronze events: QualityGateFailed: bronze quarantined" in job.stderr
