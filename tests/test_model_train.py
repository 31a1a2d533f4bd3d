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
from recsys.model.train import CHALLENGER, CHAMPION, promote, train


def _gold(spark, cfg):
    rng = random.Random(5)
    rows = []
    for user in range(80):
        group = user % 4
        for n, artist in enumerate(rng.sample(range(group * 12, group * 12 + 12), 9)):
            rows.append((user, artist, float(rng.randint(1, 4)), datetime(2026, 10, 1) + timedelta(days=n),
                         datetime(2026, 11, 1)))
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
    good = ModelConfig(name=name, ranks="8", reg_params="0.1", alphas="1.0", max_iter=8, trials=1)
    cfg = dataclasses.replace(mlflow_cfg, model=good,
                              services=dataclasses.replace(mlflow_cfg.services, state_dir=str(tmp_path)))
    _gold(spark, cfg)

    first = train(spark, cfg)
    assert first.promoted and first.champion_metrics is None
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

    worse = dataclasses.replace(cfg, model=dataclasses.replace(good, ranks="1", max_iter=1, reg_params="50"))
    second = train(spark, worse)
    client = MlflowClient()
    assert not second.promoted and second.champion_metrics["ndcg"] > second.metrics["ndcg"]
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == first.version
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == second.version

    again = train(spark, cfg)  # same seed, same data versions
    assert again.metrics == first.metrics
    assert not again.promoted or again.metrics["ndcg"] > again.champion_metrics["ndcg"]


def test_promotion_needs_the_margin(mlflow_cfg, tmp_path):
    from recsys.tracking import setup_mlflow

    setup_mlflow(mlflow_cfg)
    client = MlflowClient()
    name = f"promo-{tmp_path.name}"
    client.create_registered_model(name)
    versions = [client.create_model_version(name, source=str(tmp_path)).version for _ in range(3)]
    assert promote(client, name, versions[0], 0.30, None, 0.01)
    assert not promote(client, name, versions[1], 0.305, 0.30, 0.01)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == str(versions[0])
    assert promote(client, name, versions[2], 0.32, 0.30, 0.01)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == str(versions[2])
