"""Every lake table is declared once; writers hold to the declaration and only `migrate` changes one."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import LakeConfig
from recsys.spark import jvm
from recsys.tables import GOLD_CTR, GOLD_ID_MAP_USERS, SILVER_EVENTS, TABLES

ROOT = Path(__file__).resolve().parents[1]


def test_every_declaration_parses_and_names_its_key_columns(spark):
    for table in TABLES.values():
        names = table.schema.fieldNames()
        assert names and len(names) == len(set(names)), table.qualified
        assert set(table.key) <= set(names), table.qualified


def test_every_table_the_code_names_is_declared_and_the_readme_lists_every_table():
    named = set()
    for path in (ROOT / "recsys").rglob("*.py"):
        named |= {f"{layer}/{name}" for layer, name in
                  re.findall(r'table_path\(cfg\.lake, "(bronze|silver|gold)", "(\w+)"\)', path.read_text())}
    assert named <= set(TABLES)
    readme = (ROOT / "README.md").read_text()
    assert [t for t in TABLES if f"`{t}`" not in readme] == []


def test_a_wrong_type_or_an_undeclared_column_fails_before_any_commit(spark, tmp_path):
    cfg = LakeConfig(root=str(tmp_path))
    path = GOLD_ID_MAP_USERS.path(cfg)
    lake.ensure_table(spark, path)
    version = lake.current_version(spark, path)
    wrong_type = spark.createDataFrame([("k1", 1)], "user_key string, user_idx bigint")
    with pytest.raises(lake.SchemaMismatch, match="gold/id_map_users: user_idx is bigint in the DataFrame, "
                                                  "declared int"):
        lake.append(wrong_type, path)
    extra = spark.createDataFrame([("k1", 1, "x")], "user_key string, user_idx int, note string")
    with pytest.raises(lake.SchemaMismatch, match="the DataFrame has undeclared note string"):
        lake.overwrite(extra, path)
    assert lake.current_version(spark, path) == version
    with pytest.raises(lake.SchemaMismatch, match="gold/scratch is not declared"):
        lake.append(wrong_type, str(tmp_path / "gold" / "scratch"))


def test_columns_land_in_the_declared_order_whatever_the_dataframe_order(spark, tmp_path):
    path = GOLD_ID_MAP_USERS.path(LakeConfig(root=str(tmp_path)))
    lake.overwrite(spark.createDataFrame([(3, "k3")], "user_idx int, user_key string"), path)
    assert lake.read(spark, path).columns == ["user_key", "user_idx"]


def test_a_stored_table_behind_its_declaration_is_refused_until_migrated(spark, tmp_path):
    cfg = LakeConfig(root=str(tmp_path))
    path = GOLD_CTR.path(cfg)
    old = spark.createDataFrame([("1", "A", 0, 10, 1)], "model_version string, variant string, position bigint, "
                                                        "impressions int, clicks bigint")
    old.write.format("delta").save(path)  # an older layout: no event_date, no ctr, impressions as int
    fresh = spark.createDataFrame([("1", "A", 0, None, 10, 1, 0.1)], GOLD_CTR.schema)
    with pytest.raises(lake.SchemaMismatch, match="gold/ctr: the stored table lacks event_date date.*make migrate"):
        lake.overwrite(fresh, path)

    changes = lake.migrate(spark, path)

    assert "impressions is int in the stored table, declared bigint" in changes
    migrated = lake.read(spark, path)
    assert migrated.schema.simpleString() == GOLD_CTR.schema.simpleString()
    assert migrated.select("impressions", "clicks", "ctr").collect() == [(10, 1, None)]
    assert lake.migrate(spark, path) == []
    lake.overwrite(fresh, path)
    assert lake.read(spark, path).agg(F.sum("impressions")).collect()[0][0] == 10


def test_a_stored_partitioning_other_than_declared_is_refused_until_migrated(spark, tmp_path):
    # A relative root, like the local default (relative to the JVM's working directory), with a space.
    cfg = LakeConfig(root=os.path.relpath(tmp_path / "a lake", jvm(spark).java.lang.System.getProperty("user.dir")))
    path = GOLD_ID_MAP_USERS.path(cfg)
    rows = spark.createDataFrame([("k1", 1), ("k2", 2)], GOLD_ID_MAP_USERS.schema)
    rows.write.format("delta").partitionBy("user_idx").save(path)  # declared unpartitioned
    with pytest.raises(lake.SchemaMismatch, match=r"partitioned by \['user_idx'\], declared nothing.*make migrate"):
        lake.append(rows, path)

    assert lake.migrate(spark, path) == ["the stored table is partitioned by ['user_idx'], declared nothing"]
    assert lake.migrate(spark, path) == []
    lake.append(rows, path)
    assert lake.read(spark, path).count() == 4

    events = SILVER_EVENTS.path(cfg)
    spark.createDataFrame([], SILVER_EVENTS.schema).write.format("delta").save(events)  # declared by event_date
    with pytest.raises(lake.SchemaMismatch, match=r"partitioned by nothing, declared \['event_date'\]"):
        lake.ensure_table(spark, events)
