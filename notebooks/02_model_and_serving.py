# Databricks notebook source
# MAGIC %md
# MAGIC # 2. Train, recommend, publish, serve
# MAGIC Implicit ALS on gold interactions (tracked in MLflow, registered with aliases), top-K per user for
# MAGIC each model alias of the A/B experiment, an atomic publish to Redis, and the API answering from it.
# MAGIC Run `01_lakehouse` first.

# COMMAND ----------

import httpx
from mlflow import MlflowClient

from recsys import lake
from recsys.config import load_config
from recsys.model.batch import build_recommendations, flat
from recsys.model.train import CHALLENGER, CHAMPION, summary_line, train
from recsys.serving.api import create_app, running
from recsys.serving.auth import bearer
from recsys.serving.publish import publish
from recsys.spark import get_spark

cfg = load_config()
try:
    spark  # noqa: B018  (Databricks provides the session)
except NameError:
    spark = get_spark(cfg.spark, app_name="recsys-notebook")

# COMMAND ----------

# MAGIC %md ## Train: search, baselines, registry

# COMMAND ----------

result = train(spark, cfg)  # the search's trials are child runs of one MLflow run
print(summary_line(result, cfg.model))  # against both popularity baselines, and why it is (not) champion
client = MlflowClient()  # every new version is `challenger` (the B arm); `champion` only when it wins
print({alias: client.get_model_version_by_alias(cfg.model.name, alias).version for alias in (CHAMPION, CHALLENGER)})

# COMMAND ----------

# MAGIC %md ## Batch top-K and publish

# COMMAND ----------

batch = build_recommendations(spark, cfg)
print(batch)
flat(lake.read(spark, lake.table_path(cfg.lake, "gold", "recommendations"))).filter("rank <= 3").show(6)
published = publish(spark, cfg)
print(published)

# COMMAND ----------

# MAGIC %md ## Ask the API
# MAGIC On a cluster the API runs as its own service (`make serve`); here it runs beside the notebook.

# COMMAND ----------

some_user = lake.read(spark, lake.table_path(cfg.lake, "bronze", "events")).select("user_id").first()[0]
with running(create_app(cfg)) as url:
    token = bearer(cfg.auth, cfg.require_secret("auth.jwt_secret"), some_user)  # the user's own token
    answer = httpx.get(f"{url}/v1/users/{some_user}/recommendations", params={"k": 5}, headers=token).json()
print({k: answer[k] for k in ("variant", "model_version", "source")}, [i["name"] for i in answer["items"]])
