"""The real engines the project runs on: Delta Lake, PostgreSQL over JDBC, Redis, MLflow."""

from __future__ import annotations

import mlflow
import psycopg2
import pytest
from chispa import assert_df_equality
from pyspark.ml.feature import StringIndexer
from pyspark.sql import functions as F

from recsys import lake
from recsys.stores import postgres, redis
from recsys.tracking import SPARK_MODEL_REQUIREMENTS, setup_mlflow


def test_delta_write_merge_time_travel_and_history(spark, cfg):
    path = lake.table_path(cfg.lake, "gold", "id_map_artists")
    schema = "artist_id string, artist_idx int"
    first = spark.createDataFrame([("a1", 10), ("a2", 5)], schema)
    lake.upsert(first, path, keys=["artist_id"])
    change = spark.createDataFrame([("a2", 7), ("a3", 1)], schema)
    lake.upsert(change, path, keys=["artist_id"])

    expected_now = spark.createDataFrame([("a1", 10), ("a2", 7), ("a3", 1)], schema)
    assert_df_equality(lake.read(spark, path), expected_now, ignore_row_order=True)
    assert_df_equality(lake.read(spark, path, version=0), first, ignore_row_order=True)
    assert lake.current_version(spark, path) == 1
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [row.operation for row in history] == ["WRITE", "MERGE"]
    assert history[1].operationMetrics["numTargetRowsUpdated"] == "1"
    assert history[1].operationMetrics["numTargetRowsInserted"] == "1"


def test_table_paths_follow_the_layer_layout(cfg):
    assert lake.table_path(cfg.lake, "gold", "interactions") == f"{cfg.lake.root}/gold/interactions"
    with pytest.raises(ValueError, match="unknown lake layer 'platinum'"):
        lake.table_path(cfg.lake, "platinum", "x")


@pytest.fixture
def pg_table(cfg):
    table = "runtime_probe"
    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {table}")
    postgres.execute(cfg.postgres, f"CREATE TABLE {table} (user_id text PRIMARY KEY, n integer)")
    postgres.execute(
        cfg.postgres,
        f"INSERT INTO {table} SELECT 'u_' || i, i FROM generate_series(1, 1000) AS i",
    )
    yield table
    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {table}")


def test_jdbc_partitioned_read_returns_every_row_once(spark, cfg, pg_table):
    df = postgres.read_jdbc(spark, cfg.postgres, pg_table, predicates=postgres.hash_predicates("user_id", 4))
    assert df.rdd.getNumPartitions() == 4
    sizes = df.rdd.glom().map(len).collect()
    assert all(size > 0 for size in sizes) and sum(sizes) == 1000
    stats = df.agg(F.count("*").alias("rows"), F.countDistinct("user_id").alias("ids"), F.sum("n").alias("total"))
    assert stats.first().asDict() == {"rows": 1000, "ids": 1000, "total": 500500}


def test_jdbc_write_then_read_back(spark, cfg, pg_table):
    extra = spark.createDataFrame([("u_new", 5)], "user_id string, n int")
    postgres.write_jdbc(extra, cfg.postgres, pg_table)
    back = postgres.read_jdbc(spark, cfg.postgres, f"(SELECT * FROM {pg_table} WHERE user_id = 'u_new') AS t")
    assert [tuple(r) for r in back.collect()] == [("u_new", 5)]


def test_a_staged_load_reads_back_json_and_drops_its_stage_even_when_the_move_fails(spark, cfg):
    target, suffix = "runtime_staged", "run-1"  # a run id's `-` cannot be in a table name
    stage = postgres.stage_name(target, suffix)
    assert stage == "runtime_staged_stage_run_1"
    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {target}")
    postgres.execute(cfg.postgres, f"CREATE TABLE {target} (user_id text PRIMARY KEY, genres jsonb)")
    rows = spark.createDataFrame([("u1", ["rock", "jazz"]), ("u2", [])], "user_id string, genres array<string>")
    with postgres.staged(rows, cfg.postgres, target, suffix, json_columns=("genres",)) as staged_rows:
        assert stage in postgres.tables(cfg.postgres)
        postgres.execute(cfg.postgres, f"INSERT INTO {target} {staged_rows}")
    with pytest.raises(psycopg2.errors.UniqueViolation):  # the same rows again break the primary key
        with postgres.staged(rows, cfg.postgres, target, suffix, json_columns=("genres",)) as staged_rows:
            postgres.execute(cfg.postgres, f"INSERT INTO {target} {staged_rows}")
    back = postgres.read_jdbc(spark, cfg.postgres, f"(SELECT user_id, genres->>0 AS first FROM {target}) AS t")
    assert sorted(tuple(r) for r in back.collect()) == [("u1", "rock"), ("u2", None)]
    assert target in postgres.tables(cfg.postgres) and stage not in postgres.tables(cfg.postgres)
    postgres.execute(cfg.postgres, f"DROP TABLE {target}")


def test_redis_round_trip(cfg):
    client = redis.connect(cfg.redis)
    client.delete("recsys:test:probe")
    client.hset("recsys:test:probe", mapping={"artist": "Björk", "score": "0.42"})
    client.expire("recsys:test:probe", 60)
    assert client.hgetall("recsys:test:probe") == {b"artist": "Björk".encode(), b"score": b"0.42"}
    assert 0 < client.ttl("recsys:test:probe") <= 60


@pytest.mark.slow
def test_mlflow_logs_a_run_and_a_spark_model_that_loads_back(spark, mlflow_cfg, tmp_path):
    experiment_id = setup_mlflow(mlflow_cfg)
    data = spark.createDataFrame([("rock",), ("jazz",), ("rock",)], "genre string")
    model = StringIndexer(inputCol="genre", outputCol="genre_idx").fit(data)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({"rank": 8})
        mlflow.log_metric("ndcg_at_10", 0.31)
        mlflow.spark.log_model(model, "indexer", pip_requirements=SPARK_MODEL_REQUIREMENTS,
                               dfs_tmpdir=str(tmp_path / "dfs"))

    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params == {"rank": "8"}
    assert logged.data.metrics == {"ndcg_at_10": 0.31}
    loaded = mlflow.spark.load_model(f"runs:/{run.info.run_id}/indexer", dfs_tmpdir=str(tmp_path / "dfs2"))
    assert_df_equality(loaded.transform(data), model.transform(data))


def test_lake_files_are_readable_by_their_owner_only(spark, tmp_path):
    """Bronze holds PII: what Spark writes into the lake is 0600 (files) and 0700 (folders)."""
    import os
    import stat

    path = tmp_path / "private"
    spark.range(3).write.format("delta").save(str(path))
    modes = {stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode) & 0o077
             for d, dirs, files in os.walk(path) for n in [*dirs, *files]}
    assert modes == {0}
