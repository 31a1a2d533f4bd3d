"""`make maintain`: small files compacted, old files vacuumed, and a retention too short for the
monitor's time travel refused before anything is deleted."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import mlflow
import pytest
from mlflow import MlflowClient

from recsys import lake
from recsys.config import LakeConfig, MonitorConfig
from recsys.model.train import CHAMPION
from recsys.orchestration.maintain import RetentionTooShort, maintain
from recsys.tables import GOLD_BUILDS, GOLD_ID_MAP_USERS, SILVER_EVENTS
from recsys.tracking import setup_mlflow


def _small_appends(spark, cfg, n: int) -> str:
    path = GOLD_ID_MAP_USERS.path(cfg.lake)
    for i in range(n):
        lake.append(spark.createDataFrame([(f"k{i}", i)], GOLD_ID_MAP_USERS.schema), path)
    return path


def test_compaction_then_vacuum_keeps_the_rows_and_drops_old_files(spark, cfg, tmp_path):
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(tmp_path / "lake"), retention_hours=0),
                              monitor=MonitorConfig(reference="champion"))  # no champion: nothing referenced
    path = _small_appends(spark, cfg, 6)

    [done] = maintain(spark, cfg)

    assert (done.table, done.files_before, done.files_after) == ("gold/id_map_users", 6, 1)
    assert done.vacuumed >= 6  # the six compacted files (a local file system adds their .crc files)
    assert sorted(r.user_idx for r in lake.read(spark, path).collect()) == list(range(6))
    with pytest.raises(Exception, match="(?i)file.*(not exist|not found)|FileNotFound"):
        lake.read(spark, path, version=1).collect()  # vacuumed: that far back is gone


def test_a_retention_shorter_than_the_monitors_reference_is_refused_and_deletes_nothing(spark, cfg, tmp_path):
    cfg = dataclasses.replace(cfg, lake=LakeConfig(root=str(tmp_path / "lake"), retention_hours=0),
                              monitor=MonitorConfig(reference="previous"))
    path = _small_appends(spark, cfg, 3)
    with pytest.raises(RetentionTooShort, match=r"lake.retention_hours = 0 would delete files of gold/id_map_users "
                                                r"v1 \(monitor.reference = previous\), which needs 0.0\d h"):
        maintain(spark, cfg)
    assert lake.read(spark, path, version=0).count() == 1  # the oldest version still reads


def test_the_silver_events_the_champions_gold_build_read_is_kept(spark, mlflow_cfg, tmp_path):
    # The champion's run records gold versions only; the monitor reads silver/events as the gold
    # build of the champion's interactions read it, so maintenance must keep that version too.
    cfg = dataclasses.replace(mlflow_cfg, lake=LakeConfig(root=str(tmp_path / "lake"), retention_hours=0),
                              monitor=MonitorConfig(reference="champion"),
                              model=dataclasses.replace(mlflow_cfg.model, name=f"maintain-{uuid.uuid4().hex[:8]}"))
    events = SILVER_EVENTS.path(cfg.lake)
    lake.ensure_table(spark, events)
    blank = tuple(None for _ in SILVER_EVENTS.schema.fields)
    lake.append(spark.createDataFrame([blank], SILVER_EVENTS.schema), events)  # v1: v0 now has a later commit
    build = ("b1", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
             {"silver/events": 0}, {"gold/interactions": 7})
    lake.append(spark.createDataFrame([build], GOLD_BUILDS.schema), GOLD_BUILDS.path(cfg.lake))
    setup_mlflow(cfg)
    with mlflow.start_run() as run:
        mlflow.log_param("input_version.gold/interactions", 7)
    client = MlflowClient()
    client.create_registered_model(cfg.model.name)
    version = client.create_model_version(cfg.model.name, source=str(tmp_path), run_id=run.info.run_id).version
    client.set_registered_model_alias(cfg.model.name, CHAMPION, version)

    with pytest.raises(RetentionTooShort, match=r"would delete files of silver/events v0 \(monitor.reference = "
                                                r"champion\)"):
        maintain(spark, cfg)
