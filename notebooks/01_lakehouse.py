# Databricks notebook source
# MAGIC %md
# MAGIC # 1. From the landing zone to gold
# MAGIC Generated events and accounts land as the contract describes; bronze ingests them exactly once
# MAGIC (bad records quarantined with a reason), silver cleans, deduplicates and masks PII, gold builds
# MAGIC features and the implicit-feedback matrix and syncs the feature store (PostgreSQL and Redis).
# MAGIC
# MAGIC Configuration comes from `conf/<RECSYS_ENV>.yaml` and `RECSYS__SECTION__KEY` variables; on a
# MAGIC cluster, point `lake.root` and `landing.path` at object storage and set the secret in the environment.

# COMMAND ----------

import uuid
from datetime import UTC, datetime

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import load_config
from recsys.datagen.generator import generate, read_manifest
from recsys.gold.build import build_gold
from recsys.gold.store import sync_feature_store
from recsys.orchestration.forget import forget_requested
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from recsys.spark import get_spark

cfg = load_config()
try:
    spark  # noqa: B018  (Databricks provides the session)
except NameError:
    spark = get_spark(cfg.spark, app_name="recsys-notebook")

# COMMAND ----------

# MAGIC %md ## Generate a landing zone (skip on real data)

# COMMAND ----------

if read_manifest(cfg.landing.path) is None:
    manifest = generate(cfg.landing.path, cfg.datagen, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    print(f"{manifest['lines']} lines in {manifest['files']} files")

# COMMAND ----------

# MAGIC %md ## Bronze: raw, exactly once

# COMMAND ----------

run_id = uuid.uuid4().hex
bronze = ingest_events(spark, cfg, run_id=run_id)
accounts = ingest_accounts(spark, cfg, run_id=run_id)
print(f"{bronze.rows_bronze} events, {bronze.rows_quarantined} quarantined {bronze.reasons}; "
      f"{accounts.rows_read} accounts, {accounts.forget_requested} deleted at the source")

# COMMAND ----------

# MAGIC %md ## Forget: users deleted at the source (or asked with `make forget`) are erased everywhere

# COMMAND ----------

print(f"{forget_requested(spark, cfg, on_erasure=print)} users forgotten")

# COMMAND ----------

# MAGIC %md ## Silver: clean, deduplicated, PII masked

# COMMAND ----------

silver = build_silver(spark, cfg, run_id=run_id, now=datetime.now(UTC))
print(silver["events"])
lake.read(spark, lake.table_path(cfg.lake, "silver", "users")).select("user_key", "age_group", "country").show(5)

# COMMAND ----------

# MAGIC %md ## Gold: features, interactions, the feature store

# COMMAND ----------

build = build_gold(spark, cfg, as_of=datetime.now(UTC))
synced = sync_feature_store(spark, cfg, stage_suffix=build.build_id[:12])
print(f"gold as of {build.as_of:%Y-%m-%d %H:%M}: outputs {build.outputs}; feature store: {synced}")
lake.read(spark, lake.table_path(cfg.lake, "gold", "interactions")).orderBy("user_idx").show(5)
