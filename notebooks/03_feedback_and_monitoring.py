# Databricks notebook source
# MAGIC %md
# MAGIC # 3. Close the loop: feedback, A/B, re-ranker, drift
# MAGIC The API's impressions and posted clicks landed in the landing zone; ingesting them again turns them
# MAGIC into labelled feedback (clicked or not), CTR per model version and variant, the A/B analysis, a
# MAGIC re-ranker learned from what users click, and drift checks against the champion's training data.
# MAGIC Run `01_lakehouse` and `02_model_and_serving` first.

# COMMAND ----------

import dataclasses
import uuid
from datetime import UTC, datetime

from recsys import lake
from recsys.bronze.events import ingest_events
from recsys.config import load_config
from recsys.feedback.build import build_feedback
from recsys.feedback.reranker import train_reranker
from recsys.model.batch import build_recommendations
from recsys.monitor.build import run_monitor
from recsys.silver.build import build_silver
from recsys.spark import get_spark

cfg = load_config()
try:
    spark  # noqa: B018  (Databricks provides the session)
except NameError:
    spark = get_spark(cfg.spark, app_name="recsys-notebook")

# COMMAND ----------

# MAGIC %md ## Ingest what the API logged

# COMMAND ----------

run_id = uuid.uuid4().hex
print(ingest_events(spark, cfg, run_id=run_id))
print(build_silver(spark, cfg, run_id=run_id, now=datetime.now(UTC))["events"])

# COMMAND ----------

# MAGIC %md ## Feedback, CTR and the A/B analysis

# COMMAND ----------

feedback = build_feedback(spark, cfg)
print(f"{feedback.impressions} impressions, {feedback.clicks} clicked; A/B: {feedback.ab}")
lake.read(spark, lake.table_path(cfg.lake, "gold", "ctr")).orderBy("variant", "position").show(10)

# COMMAND ----------

# MAGIC %md ## What drives clicks: the re-ranker

# COMMAND ----------

reranker = train_reranker(spark, cfg)
print(f"AUC {reranker.auc:.3f}; click NDCG {reranker.ndcg_reranked:.3f} re-ranked vs {reranker.ndcg_als_order:.3f}")
print(sorted(reranker.weights.items(), key=lambda kv: -abs(kv[1]))[:6])

# COMMAND ----------

# MAGIC %md Re-order the ALS lists with it (in production: `rerank.enabled: true`, alias `champion`).

# COMMAND ----------

with_reranker = dataclasses.replace(cfg, rerank=dataclasses.replace(cfg.rerank, enabled=True, alias="challenger"))
reranked = build_recommendations(spark, with_reranker)
print(reranked)

# COMMAND ----------

# MAGIC %md ## Drift against the champion's training snapshot

# COMMAND ----------

monitor = run_monitor(spark, cfg)
for check in monitor.checks:
    print(f"{'ALERT' if check.alert else 'ok':5} {check.kind:10} {check.name:24} psi {check.psi:.4f} js {check.js:.4f}")
