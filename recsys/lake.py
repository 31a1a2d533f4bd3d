"""Where Delta tables live, and the few Delta operations every layer shares.

Every table is at `<lake.root>/<layer>/<table>`; the layer and table names are the interface.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.config import LakeConfig
from recsys.spark import jvm

LAYERS = ("bronze", "silver", "gold")


def table_path(cfg: LakeConfig, layer: str, table: str) -> str:
    """`<lake.root>/<layer>/<table>`, for one of the lake's layers."""
    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}; expected one of {LAYERS}")
    return f"{cfg.root.rstrip('/')}/{layer}/{table}"


def checkpoint_path(cfg: LakeConfig, name: str) -> str:
    """Streaming checkpoints live beside the tables, at `<lake.root>/_checkpoints/<name>`."""
    return f"{cfg.root.rstrip('/')}/_checkpoints/{name}"


def exists(spark: SparkSession, path: str) -> bool:
    """Whether a Delta table exists at `path`."""
    return DeltaTable.isDeltaTable(spark, path)


def file_exists(spark: SparkSession, path: str) -> bool:
    """Whether a plain file (not a table) exists, on any Hadoop file system."""
    fs, hpath = _hadoop_path(spark, path)
    return bool(fs.exists(hpath))


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """Read a Delta table, optionally as of an earlier version (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def current_version(spark: SparkSession, path: str) -> int:
    """The latest committed version of the Delta table at `path`."""
    return DeltaTable.forPath(spark, path).history(1).select("version").collect()[0][0]


def version_at(spark: SparkSession, path: str, when: datetime) -> int:
    """The version that was current at `when`: the latest committed at or before it, or the oldest
    kept version when `when` is earlier than every commit (the closest state the table knows).
    """
    history = DeltaTable.forPath(spark, path).history().select("version", "timestamp")
    at = history.filter(F.col("timestamp") <= F.lit(when)).agg(F.max("version")).collect()[0][0]
    return int(at) if at is not None else int(history.agg(F.min("version")).collect()[0][0])


def metrics_since(spark: SparkSession, path: str, version: int) -> dict[str, int]:
    """Operation metrics of the commit after `version`, or {} when nothing was committed."""
    last = DeltaTable.forPath(spark, path).history(1).select("version", "operationMetrics").collect()[0]
    return {k: int(v) for k, v in last[1].items()} if last[0] > version else {}


def upsert(df: DataFrame, path: str, keys: Sequence[str]) -> None:
    """MERGE `df` into the table at `path` by `keys` (update matches, insert the rest).

    Creates the table from `df` on first use. `df` must hold one row per key.
    """
    spark = df.sparkSession
    if not exists(spark, path):
        df.write.format("delta").save(path)
        return
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(df.alias("s"), condition)
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def overwrite(df: DataFrame, path: str, metadata: str | None = None) -> None:
    """Replace a table's contents in one Delta commit (readers see the old or the new, never a mix),
    with `metadata` as the commit's user metadata when given.
    """
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if metadata is not None:
        writer = writer.option("userMetadata", metadata)
    writer.save(path)


def ensure_table(spark: SparkSession, path: str, schema: T.StructType) -> None:
    """Create an empty Delta table with `schema` unless one exists at `path`."""
    if not exists(spark, path):
        spark.createDataFrame([], schema).write.format("delta").mode("append").save(path)


def append_once(df: DataFrame, path: str, app_id: str, version: int) -> None:
    """Append as Delta transaction (`app_id`, `version`): a replay of the same version is a no-op."""
    (
        df.write.format("delta").mode("append")
        .option("txnAppId", app_id).option("txnVersion", version)
        .save(path)
    )


def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop FileSystem and Path (py4j objects) for `path`."""
    hpath = jvm(spark).org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def ensure_checkpoint_id(spark: SparkSession, checkpoint: str) -> str:
    """The id of the streaming query that owns `checkpoint`, fixed before its first start.

    Idempotent Delta writes key on (app id, batch id). Batch ids restart at 0 with a new
    checkpoint, so the app id must change with it: we take the query id Spark keeps in
    `<checkpoint>/metadata`, writing it ourselves (Spark's own format) for a new checkpoint.
    """
    fs, meta = _hadoop_path(spark, f"{checkpoint}/metadata")
    if fs.exists(meta):
        stream = fs.open(meta)
        try:
            text = jvm(spark).org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        return json.loads(text.splitlines()[0])["id"]
    query_id = str(uuid.uuid4())
    out = fs.create(meta, False)
    try:
        out.write(bytearray(json.dumps({"id": query_id}).encode()))
    finally:
        out.close()
    return query_id
