"""PostgreSQL `accounts` -> `bronze/accounts` over JDBC: incremental by `updated_at`.

The watermark is the largest `updated_at` already in bronze, stored with the data it
describes: a MERGE commits rows and watermark together, so a crash can neither skip rows nor
apply them twice (a rerun re-reads from the same watermark, and the MERGE is idempotent).
The read is split into `ingest.accounts_partitions` hash ranges of `user_id`.

Every run also reads the source's ids alone (cheap: one column) and records each account bronze
holds that the source no longer has as a request to forget that user (`bronze/forget_requests`,
by pseudonymous key); `recsys.orchestration.forget` then erases them everywhere, bronze and that
request included, and remembers them only by a one-way token in `bronze/forgotten`. Accounts of
users already forgotten are never extracted again, even when the source still holds them (a
request that came another way). `full_refresh` reads every account, not only the changed ones.
This is the only layer holding PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.keys import forget_token, pseudonym
from recsys.sources.accounts import TABLE, ensure_accounts_table
from recsys.stores.postgres import hash_predicates, read_jdbc
from recsys.tables import BRONZE_ACCOUNTS, BRONZE_FORGET_REQUESTS, BRONZE_FORGOTTEN, USER_ID, USER_KEY


@dataclass
class AccountsReport:
    """What one accounts ingest did: the watermark it started from and the rows it changed."""
    run_id: str
    watermark_before: datetime | None
    rows_read: int
    rows_inserted: int
    rows_updated: int
    forget_requested: int  # accounts bronze held that the source no longer has


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


def request_forget(spark: SparkSession, cfg: Config, user_ids: list[str], source: str, run_id: str) -> list[str]:
    """Record requests to forget `user_ids` (trimmed of spaces, as silver trims events' ids) in
    `bronze/forget_requests` by pseudonymous key; the keys.
    """
    secret = cfg.require_secret("privacy.pseudonym_secret")
    keys = sorted({pseudonym(secret, i.strip(" ")) for i in user_ids if i and i.strip(" ")})
    if keys:
        rows = [(k, datetime.now(UTC), source, run_id) for k in keys]
        lake.append(spark.createDataFrame(rows, BRONZE_FORGET_REQUESTS.schema), BRONZE_FORGET_REQUESTS.path(cfg.lake))
    return keys


def forgotten_tokens(spark: SparkSession, cfg: Config) -> DataFrame:
    """The tokens (`keys.forget_token`) of every user forgotten or waiting to be: silver drops their
    events by it, the accounts ingest their account.
    """
    pending, done = BRONZE_FORGET_REQUESTS.path(cfg.lake), BRONZE_FORGOTTEN.path(cfg.lake)
    for path in (pending, done):
        lake.ensure_table(spark, path)
    return (lake.read(spark, pending).select(F.sha2(USER_KEY, 256).alias("token"))
            .unionByName(lake.read(spark, done).select("token")).distinct())


def _not_forgotten(spark: SparkSession, cfg: Config, extracted: DataFrame) -> DataFrame:
    """`extracted` without the accounts of users asked to be forgotten (their keys are hashed on the
    driver from the extract's ids: accounts, unlike events, are few enough to list).
    """
    forgotten = {r[0] for r in forgotten_tokens(spark, cfg).collect()}
    if not forgotten:
        return extracted
    secret = cfg.require_secret("privacy.pseudonym_secret")
    ids = {r[0] for r in extracted.select(USER_ID).distinct().collect() if r[0] is not None}
    excluded = sorted(i for i in ids if forget_token(pseudonym(secret, i.strip(" "))) in forgotten)
    return extracted.filter(~F.col(USER_ID).isin(excluded)) if excluded else extracted


def ingest_accounts(spark: SparkSession, cfg: Config, run_id: str, full_refresh: bool = False) -> AccountsReport:
    """Merge changed accounts into `bronze/accounts`; request forgetting the accounts the source deleted."""
    ensure_accounts_table(cfg.postgres)
    path = lake.table_path(cfg.lake, "bronze", "accounts")
    lake.ensure_table(spark, path)
    lake.ensure_table(spark, BRONZE_FORGET_REQUESTS.path(cfg.lake))
    source_ids = read_jdbc(spark, cfg.postgres, f"(SELECT {USER_ID} FROM {TABLE}) AS ids",
                           predicates=hash_predicates(USER_ID, cfg.ingest.accounts_partitions))
    gone = [r[0] for r in lake.read(spark, path).select(USER_ID).join(source_ids, on=USER_ID, how="left_anti")
            .collect()]
    request_forget(spark, cfg, gone, "deleted at the source", run_id)
    since = None if full_refresh else _watermark(spark, path)
    version = lake.current_version(spark, path)
    # The extract is staged as a Delta table and the MERGE reads it back: a JDBC source could
    # change between MERGE's two passes, so Delta would otherwise pin it with a local checkpoint,
    # which a lost executor cannot recompute. The staged table is one consistent read of PostgreSQL.
    staged_path = lake.table_path(cfg.lake, "bronze", "accounts_extract")
    lake.overwrite(_not_forgotten(spark, cfg, read_accounts(spark, cfg, since))
                   .withColumn("_extracted_at", F.lit(datetime.now(UTC)).cast("timestamp"))
                   .withColumn("_run_id", F.lit(run_id))
                   .select(*BRONZE_ACCOUNTS.schema.fieldNames()), staged_path)
    extracted = lake.read(spark, staged_path)
    rows_read = extracted.count()
    merge = (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(extracted.alias("s"), "t.user_id = s.user_id")
        .whenMatchedUpdateAll(condition="s.updated_at <> t.updated_at OR t.updated_at IS NULL")
        .whenNotMatchedInsertAll()
    )
    merge.execute()
    metrics = lake.metrics_since(spark, path, version)
    return AccountsReport(
        run_id=run_id,
        watermark_before=since,
        rows_read=rows_read,
        rows_inserted=metrics.get("numTargetRowsInserted", 0),
        rows_updated=metrics.get("numTargetRowsUpdated", 0),
        forget_requested=len(gone),
    )
