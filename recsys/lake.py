"""Where Delta tables live, and the few Delta operations every layer shares.

Every table is at `<lake.root>/<layer>/<table>`; the layer and table names are the interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from recsys.config import LakeConfig

LAYERS = ("bronze", "silver", "gold")


def table_path(cfg: LakeConfig, layer: str, table: str) -> str:
    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}; expected one of {LAYERS}")
    return f"{cfg.root.rstrip('/')}/{layer}/{table}"


def exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """Read a Delta table, optionally as of an earlier version (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def current_version(spark: SparkSession, path: str) -> int:
    return DeltaTable.forPath(spark, path).history(1).select("version").first()[0]


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
