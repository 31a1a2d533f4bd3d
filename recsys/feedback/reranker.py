"""A learned re-ranker: which impression features drive clicks, and ALS candidates re-ordered by it.

Spark MLlib logistic regression on `gold/feedback` (one row per impression, label `clicked`):
numeric features (ALS score, position, log listeners, trending rank, log followers, genre
overlap with the user's top genres) standardised, so the learned weights compare; age group and
country one-hot. Trained on all but the latest `rerank.holdout_days` days, evaluated on those:
AUC, and NDCG of the clicks within each request ordered by the model against the order ALS
showed them in. Logged and registered as `rerank.name`; alias `champion` when it orders clicks
better than ALS did. With `rerank.enabled`, `recommend` re-orders each user's ALS list with it
(`recsys.model.rerank`: its features and scoring, shared by training here and by batch scoring).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.frames import Persisted
from recsys.model.metrics import ideal_dcg
from recsys.model.rerank import CATEGORICAL, NUMERIC, prepared, with_p_click
from recsys.reporting import bar_chart, image, table, write_report
from recsys.tables import ARTIST_ID, EVENT_DATE
from recsys.tracking import SPARK_MODEL_REQUIREMENTS, quiet_registry, setup_mlflow


@dataclass(frozen=True)
class RerankerReport:
    """The re-ranker's evaluation on held-out days, its learned weights and registered version."""
    auc: float
    ndcg_als_order: float
    ndcg_reranked: float
    weights: dict[str, float]
    version: str
    promoted: bool
    train_rows: int
    test_rows: int


def pipeline(cfg: Config) -> Pipeline:
    """The re-ranker's Spark ML pipeline: categorical encoding, scaling, logistic regression."""
    indexed = [f"{c}_idx" for c in CATEGORICAL]
    onehot = [f"{c}_vec" for c in CATEGORICAL]
    return Pipeline(stages=[
        StringIndexer(inputCols=list(CATEGORICAL), outputCols=indexed, handleInvalid="keep"),
        OneHotEncoder(inputCols=indexed, outputCols=onehot, handleInvalid="keep"),
        VectorAssembler(inputCols=[*NUMERIC, *onehot], outputCol="raw_features", handleInvalid="keep"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
        LogisticRegression(featuresCol="features", labelCol="clicked", regParam=cfg.rerank.reg_param,
                           maxIter=cfg.rerank.max_iter),
    ])


def weights(model: PipelineModel, sample: DataFrame) -> dict[str, float]:
    """Standardised coefficient per feature name (one-hot levels as `age_group=25-34`)."""
    assembled = model.stages[2].transform(model.stages[1].transform(model.stages[0].transform(sample.limit(1))))
    attrs = assembled.schema["raw_features"].metadata["ml_attr"]["attrs"]
    names = {a["idx"]: a["name"] for group in attrs.values() for a in group}
    classifier: LogisticRegressionModel = model.stages[-1]  # type: ignore[assignment]
    coefficients = classifier.coefficients.toArray()
    pretty = {i: n.replace("_vec_", "=") for i, n in names.items()}
    return {pretty[i]: float(c) for i, c in enumerate(coefficients)}


def click_ndcg(scored: DataFrame, order: str, descending: bool) -> float:
    """Mean over requests with a click of NDCG of the clicks when items are ordered by `order`."""
    w = Window.partitionBy("request_id").orderBy(F.desc(order) if descending else F.asc(order), F.asc(ARTIST_ID))
    ranked = scored.withColumn("_r", F.row_number().over(w))
    per_request = ranked.groupBy("request_id").agg(
        F.sum(F.col("clicked") / F.log2(F.col("_r") + 1)).alias("dcg"), F.sum("clicked").alias("n"))
    ideal = ideal_dcg(F.col("n").cast("int"))
    value = per_request.filter(F.col("n") > 0).agg(F.avg(F.col("dcg") / ideal)).collect()[0][0]
    return float(value or 0.0)


def split_by_day(feedback: DataFrame, holdout_days: int) -> tuple[DataFrame, DataFrame]:
    """Feedback before and during the latest `holdout_days` days; fails when there are not enough days."""
    days = sorted(r[0] for r in feedback.select(EVENT_DATE).distinct().collect())
    if len(days) <= holdout_days:
        raise ValueError(f"re-ranker: feedback spans {len(days)} day(s); needs more than rerank.holdout_days "
                         f"= {holdout_days} to hold days out")
    first_test = days[-holdout_days]
    return feedback.filter(F.col(EVENT_DATE) < first_test), feedback.filter(F.col(EVENT_DATE) >= first_test)


def train_reranker(spark: SparkSession, cfg: Config, feedback: DataFrame | None = None) -> RerankerReport:
    """Fit the click model on earlier days, evaluate on the latest, register it and promote it if it helps."""
    setup_mlflow(cfg)
    feedback = feedback if feedback is not None else lake.read(spark, lake.table_path(cfg.lake, "gold", "feedback"))
    days = split_by_day(feedback, cfg.rerank.holdout_days)  # too few days fails here, before any MLflow run
    with Persisted() as keep, mlflow.start_run(run_name="train-reranker"):
        train, test = (keep(prepared(df)) for df in days)
        model = pipeline(cfg).fit(train)
        scored = keep(with_p_click(model, test))
        auc = BinaryClassificationEvaluator(labelCol="clicked", rawPredictionCol="rawPrediction").evaluate(scored)
        als_order = click_ndcg(scored, "position", descending=False)
        reranked = click_ndcg(scored, "p_click", descending=True)
        learned = weights(model, train)
        counts = (train.count(), test.count())
        mlflow.log_params({"features": ",".join(NUMERIC + CATEGORICAL), "reg_param": cfg.rerank.reg_param,
                           "holdout_days": cfg.rerank.holdout_days, "train_rows": counts[0], "test_rows": counts[1]})
        mlflow.log_metrics({"auc": auc, "click_ndcg.als_order": als_order, "click_ndcg.reranked": reranked,
                            **{f"weight.{k}": v for k, v in learned.items() if k in NUMERIC}})
        with tempfile.TemporaryDirectory() as tmp:
            top = sorted(learned.items(), key=lambda kv: -abs(kv[1]))[:15]
            chart = bar_chart(Path(tmp) / "weights.png", "Standardised weights (click log-odds per sd)",
                              [k for k, _ in top], [v for _, v in top])
            (Path(tmp) / "weights.json").write_text(json.dumps(learned, indent=2))
            report = write_report(Path(tmp) / "report.html", "Re-ranker", [
                ("Held-out days", [table([{"AUC": auc, "click NDCG, ALS order": als_order,
                                           "click NDCG, re-ranked": reranked, "train rows": counts[0],
                                           "test rows": counts[1]}])]),
                ("What drives clicks", [image(chart), table([{"feature": k, "weight": v} for k, v in top])]),
            ])
            for path in (chart, report, Path(tmp) / "weights.json"):
                mlflow.log_artifact(str(path), artifact_path="report")
            info = mlflow.spark.log_model(model, "model", pip_requirements=SPARK_MODEL_REQUIREMENTS, dfs_tmpdir=tmp)
        with quiet_registry():
            version = str(mlflow.register_model(info.model_uri, cfg.rerank.name).version)
        promoted = reranked > als_order
        client = MlflowClient()
        client.set_registered_model_alias(cfg.rerank.name, "challenger", version)
        if promoted:
            client.set_registered_model_alias(cfg.rerank.name, "champion", version)
    return RerankerReport(auc, als_order, reranked, learned, version, promoted, *counts)


