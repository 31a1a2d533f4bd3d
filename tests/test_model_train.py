"""Training: child runs per trial, everything logged, registered, promoted only when better."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recsys import lake
from recsys.config import ModelConfig
from recsys.model.train import CHALLENGER, CHAMPION, Promotion, TrainingFailed, decide, promote, train
from tests.conftest import persisted_rdds

FIXED = {"reg_param_range": (0.1,), "alpha_range": (1.0,), "scalings": ("linear",), "trials": 1}


def _gold(spark, cfg, corrupt: bool = False):
    """Four taste groups of 20 users over 12 artists each; `corrupt` adds a row without an artist id."""
    rng = random.Random(5)
    rows = []
    for user in range(80):
        group = user % 4
        for n, artist in enumerate(rng.sample(range(group * 12, group * 12 + 12), 9)):
            rows.append((user, artist, float(rng.randint(1, 4)), datetime(2026, 10, 1) + timedelta(days=n),
                         datetime(2026, 11, 1)))
    if corrupt:
        rows.append((0, None, 2.0, datetime(2026, 9, 1), datetime(2026, 11, 1)))  # old: in the training part
    spark.createDataFrame(rows, "user_idx int, artist_idx int, confidence double, last_ts timestamp, "
                                "as_of timestamp").write.format("delta").save(
        lake.table_path(cfg.lake, "gold", "interactions"))
    segments = [(f"users-{u:03d}", ("18-24", "25-34")[u % 2], ("DE", "FR", "US")[u % 3]) for u in range(80)]
    spark.createDataFrame(segments, "user_key string, age_group string, country string").write.format("delta").save(
        lake.table_path(cfg.lake, "gold", "user_features"))
    for table, key, idx, n in (("users", "user_key", "user_idx", 80), ("artists", "artist_id", "artist_idx", 48)):
        spark.createDataFrame([(f"{table}-{i:03d}", i) for i in range(n)], f"{key} string, {idx} int").write.format(
            "delta").save(lake.table_path(cfg.lake, "gold", f"id_map_{table}"))


@pytest.mark.slow
def test_training_logs_registers_and_promotes_only_a_better_model(spark, mlflow_cfg, tmp_path):
    name = f"als-{tmp_path.name}"
    good = ModelConfig(name=name, ranks=(8,), max_iters=(8,), **FIXED)
    cfg = dataclasses.replace(mlflow_cfg, model=good,
                              services=dataclasses.replace(mlflow_cfg.services, state_dir=str(tmp_path)))
    _gold(spark, cfg)

    first = train(spark, cfg)
    assert first.promoted and first.champion_metrics is None and first.decision.startswith("champion: this one")
    run = mlflow.get_run(first.run_id)
    assert run.data.params["input_version.gold/interactions"] == "0" and "as_of" in run.data.params
    assert run.data.params["input_version.gold/user_features"] == "0"
    assert {"best.ndcg", "global_popularity.ndcg", "segment_popularity.ndcg", "best.coverage"} <= set(run.data.metrics)
    metrics = run.data.metrics  # taste groups follow user parity, and so does the age group
    assert metrics["best.ndcg"] > metrics["segment_popularity.ndcg"] > metrics["global_popularity.ndcg"]
    report = {a.path for a in MlflowClient().list_artifacts(first.run_id, "report")}
    assert report == {"report/metrics_at_k.png", "report/report.html"}
    html = (Path(mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="report/report.html"))
            .read_text())
    assert "segment popularity" in html and "data:image/png;base64," in html
    assert "users-0" not in html  # no user keys in the report
    children = mlflow.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert len(children) == 1
    artifacts = {a.path for a in MlflowClient().list_artifacts(first.run_id, "id_maps")}
    assert artifacts == {"id_maps/id_map_users.parquet", "id_maps/id_map_artists.parquet"}

    worse = dataclasses.replace(cfg, model=dataclasses.replace(good, ranks=(1,), max_iters=(1,),
                                                               reg_param_range=(50.0,)))
    second = train(spark, worse)
    client = MlflowClient()
    assert not second.promoted and second.champion_metrics["ndcg"] > second.metrics["ndcg"]
    assert second.decision.startswith(f"champion stays v{first.version}: ")
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == first.version
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == second.version

    again = train(spark, cfg)  # same seed, same data versions
    assert again.metrics == first.metrics
    assert not again.promoted or again.metrics["ndcg"] > again.champion_metrics["ndcg"]


def _cfg(mlflow_cfg, tmp_path, **model):
    return dataclasses.replace(mlflow_cfg, model=ModelConfig(name=f"als-{tmp_path.name}", **model),
                               services=dataclasses.replace(mlflow_cfg.services, state_dir=str(tmp_path)))


@pytest.mark.slow
def test_a_model_that_loses_to_popularity_stays_challenger_even_with_no_champion(spark, mlflow_cfg, tmp_path):
    cfg = _cfg(mlflow_cfg, tmp_path, ranks=(1,), max_iters=(1,), **{**FIXED, "reg_param_range": (50.0,)})
    _gold(spark, cfg)

    result = train(spark, cfg)

    assert not result.promoted
    assert result.metrics["ndcg"] <= 1.1 * max(b["ndcg"] for b in result.baselines.values())
    assert result.decision.startswith("champion stays none yet: NDCG@10 ")
    assert "needs more than 1.10x" in result.decision
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(cfg.model.name, CHALLENGER).version) == result.version
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(cfg.model.name, CHAMPION)
    assert mlflow.get_run(result.run_id).data.tags["promotion_reason"] == result.decision


def test_when_every_trial_fails_training_fails_naming_the_cause_and_each_trial_is_a_failed_run(
        spark, mlflow_cfg, tmp_path, capfd):
    cfg = _cfg(mlflow_cfg, tmp_path, ranks=(4, 8), max_iters=(2,), reg_param_range=(0.1,), trials=2)
    _gold(spark, cfg, corrupt=True)  # ALS rejects a NULL id in every configuration
    cached = persisted_rdds(spark)

    with pytest.raises(TrainingFailed, match=r"^all 2 trials failed; 2 of them: .*artist_idx Ids MUST NOT be Null"):
        train(spark, cfg)

    # a failed training leaves none of its cached frames behind; MLlib's ALS leaves the blocks of
    # a fit that failed, but the SparkContext holds those weakly and its cleaner drops them
    left = {name.split()[0] for rdd, name in persisted_rdds(spark).items() if rdd not in cached}
    assert left <= {"ratingBlocks", "userInBlocks", "userOutBlocks", "itemInBlocks", "itemOutBlocks"}

    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    runs = mlflow.search_runs([experiment.experiment_id])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 2 and set(children["status"]) == {"FAILED"}
    assert children["tags.failure"].str.contains("Ids MUST NOT be Null").all()
    assert set(runs[runs["tags.mlflow.parentRunId"].isna()]["status"]) == {"FAILED"}
    assert "at org.apache.spark" not in capfd.readouterr().err  # no JVM stack trace on the console


def _decide(score, champion=None, coverage=0.5, std=0.1, **model):
    return decide(score, {"global_popularity": 0.20, "segment_popularity": 0.18}, champion, coverage, std,
                  ModelConfig(**model))


def test_promotion_needs_a_lift_over_the_best_baseline_a_margin_over_the_champion_and_healthy_lists():
    assert _decide(0.30) == Promotion(True, "champion: this one, NDCG@10 0.3000 = 1.50x global popularity (0.2000)")
    assert _decide(0.21) == Promotion(False, "champion stays none yet: NDCG@10 0.2100 is 1.05x global popularity "
                                             "(0.2000), needs more than 1.10x")
    assert _decide(0.21, min_lift=0.0).promoted
    assert not _decide(0.30, champion=("3", 0.295), promotion_margin=0.01).promoted
    assert "does not beat champion v3 (0.2950) by more than 0.01" in _decide(0.30, ("3", 0.295),
                                                                               promotion_margin=0.01).reason
    assert _decide(0.31, champion=("3", 0.295), promotion_margin=0.01).reason.endswith("beats champion v3 (0.2950)")
    assert "collapsed" in _decide(0.30, std=0.0).reason and not _decide(0.30, std=0.0).promoted
    assert "recommends 1.0% of the catalog, needs 5%" in _decide(0.30, coverage=0.01).reason


def test_promotion_moves_champion_only_when_decided(mlflow_cfg, tmp_path):
    from recsys.tracking import setup_mlflow

    setup_mlflow(mlflow_cfg)
    client = MlflowClient()
    name = f"promo-{tmp_path.name}"
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=str(tmp_path)).version for _ in range(3)]
    assert promote(client, name, versions[0], Promotion(True, "better"))
    assert not promote(client, name, versions[1], Promotion(False, "worse"))
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == str(versions[0])
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == str(versions[1])
    assert promote(client, name, versions[2], Promotion(True, "better"))
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == str(versions[2])
