"""`make maintain`: small files compacted, old files vacuumed, and a retention too short for the
monitor's time travel refused before anything is deleted."""

from __future__ import annotations

import dataclasses

import pytest

from recsys import lake
from recsys.config import LakeConfig, MonitorConfig
from recsys.orchestration.maintain import RetentionTooShort, maintain
from recsys.tables import GOLD_ID_MAP_USERS


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
