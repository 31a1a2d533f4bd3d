"""PostgreSQL `accounts` -> `bronze/accounts` over JDBC: incremental by `updated_at`.

The watermark is the largest `updated_at` already in bronze, stored with the data it
describes: a MERGE commits rows and watermark together, so a crash can neither skip rows nor
apply them twice (a rerun re-reads from the same watermark, and the MERGE is idempotent).
The read is split into `ingest.accounts_partitions` hash ranges of `user_id`.

`full_refresh` reads everything and also deletes from bronze the accounts that disappeared
from the source, logging their ids in `bronze/account_deletions` so that silver can forget
them too. This is the only layer holding PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.sources.accounts import TABLE, ensure_accounts_table
from recsys.stores.postgres import hash_predicates, read_jdbc
from recsys.tables import BRONZE_ACCOUNTS, USER_ID


@dataclass
class AccountsReport:
    """What one accounts ingest did: the watermark it started from and the rows it changed."""
    run_id: str
    watermark_before: datetime | None
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_deleted: int


def _watermark(spark: SparkSession, path: str) -> datetime | None:
    return lake.read(spark, path).agg(F.max("updated_at")).collect()[0][0]


def read_accounts(spark: SparkSession, cfg: Config, since: datetime | None) -> DataFrame:
    """Accounts changed after `since` (all of them when None), read over JDBC in hash-partitioned slices."""
    # Spark hands back naive timestamps in the session time zone, which recsys pins to UTC.
    condition = f"WHERE updated_at > '{since.replace(tzinfo=UTC).isoformat()}'::timestamptz" if since else ""
    columns = ", ".join(f.name for f in BRONZE_ACCOUNTS.schema.fields if not f.name.startswith("_"))
    query = f"(SELECT {columns} FROM {TABLE} {condition}) AS accounts"
    df = read_jdbc(spark, cfg.postgres, query, predicates=hash_predicates(USER_ID, cfg.ingest.accounts_partitions))
    return df.withColumn("country_code", F.trim("country_code"))


def ingest_accounts(spark: SparkSession, cfg: Config, run_id: str, full_refresh: bool = False) -> AccountsReport:
    """Merge changed accounts into `bronze/accounts` and record deletions in `bronze/account_deletions`."""
    ensure_accounts_table(cfg.postgres)
    path = lake.table_path(cfg.lake, "bronze", "accounts")
    deletions_path = lake.table_path(cfg.lake, "bronze", "account_deletions")
    lake.ensure_table(spark, path)
    lake.ensure_table(spark, deletions_path)
    since = None if full_refresh else _watermark(spark, path)
    version = lake.current_version(spark, path)
    # The extract is staged as a Delta table and the MERGE reads it back: a JDBC source could
    # change between MERGE's two passes, so Delta would otherwise pin it with a local checkpoint,
    # which a lost executor cannot recompute. The staged table is one consistent read of PostgreSQL.
    staged_path = lake.table_path(cfg.lake, "bronze", "accounts_extract")
    lake.overwrite(read_accounts(spark, cfg, since)
                   .withColumn("_extracted_at", F.lit(datetime.now(UTC)).cast("timestamp"))
                   .withColumn("_run_id", F.lit(run_id))
                   .select(*BRONZE_ACCOUNTS.schema.fieldNames()), staged_path)
    extracted = lake.read(spark, staged_path)
    rows_read = extracted.count()
    if full_refresh:
        gone = (lake.read(spark, path).select(USER_ID)
                .join(extracted.select(USER_ID), on=USER_ID, how="left_anti")
                .withColumn("detected_at", F.current_timestamp()).withColumn("_run_id", F.lit(run_id)))
        lake.append(gone, deletions_path)
    merge = (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(extracted.alias("s"), "t.user_id = s.user_id")
        .whenMatchedUpdateAll(condition="s.updated_at <> t.updated_at OR t.updated_at IS NULL")
        .whenNotMatchedInsertAll()
    )
    if full_refresh:
        merge = merge.whenNotMatchedBySourceDelete()
    merge.execute()
    metrics = lake.metrics_since(spark, path, version)
    return AccountsReport(
        run_id=run_id,
        watermark_before=since,
        rows_read=rows_read,
        rows_inserted=metrics.get("numTargetRowsInserted", 0),
        rows_updated=metrics.get("numTargetRowsUpdated", 0),
        rows_deleted=metrics.get("numTargetRowsDeleted", 0),
    )
