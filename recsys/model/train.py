"""Train implicit ALS on `gold/interactions`, tracked in MLflow, registered with aliases.

One parent run per training: the search space, the split, the as-of time and the Delta
versions of every input; one child run per trial (`model.trials` configurations of the grid
`model.ranks x reg_params x alphas x scalings`, in order); baselines' metrics; the winner
retrained on all interactions, logged with its id maps and registered as `model.name`. The new
version gets alias `challenger`, and `champion` too when there is no champion yet or when it
beats the champion's NDCG@K on the same validation data by more than `model.promotion_margin`.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, ModelConfig
from recsys.model.als import ITEM, USER, AlsParams, fit, popularity, recommend
from recsys.model.metrics import ranking_metrics
from recsys.model.split import latest_holdout, random_holdout
from recsys.tracking import SPARK_MODEL_REQUIREMENTS, setup_mlflow

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    version: str
    params: AlsParams
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    promoted: bool


def search_space(m: ModelConfig) -> list[AlsParams]:
    def values(text: str, kind):
        return [kind(v) for v in text.split(",") if v.strip()]

    grid = itertools.product(values(m.ranks, int), values(m.reg_params, float), values(m.alphas, float),
                             values(m.scalings, str))
    return [AlsParams(rank=r, reg_param=g, alpha=a, scaling=s.strip(), max_iter=m.max_iter, seed=m.seed)
            for r, g, a, s in grid][: m.trials]


def split(interactions: DataFrame, m: ModelConfig) -> tuple[DataFrame, DataFrame]:
    if m.split == "latest":
        return latest_holdout(interactions, m.holdout_share)
    if m.split == "random":
        return random_holdout(interactions, m.holdout_share, m.seed)
    raise ValueError(f"model.split must be 'latest' or 'random', got {m.split!r}")


def _metrics(recs: DataFrame, test: DataFrame, k: int, n_items: int) -> dict[str, float]:
    return ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM)


def promote(client: MlflowClient, name: str, version: str, score: float, champion_score: float | None,
            margin: float) -> bool:
    """Set `challenger` on `version`; move `champion` to it when it wins by more than `margin`."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    if champion_score is None or score > champion_score + margin:
        client.set_registered_model_alias(name, CHAMPION, version)
        return True
    return False


def _champion_score(name: str, users: DataFrame, train: DataFrame, test: DataFrame, k: int, n_items: int
                    ) -> dict[str, float] | None:
    try:
        model = mlflow.spark.load_model(f"models:/{name}@{CHAMPION}", dfs_tmpdir=tempfile.mkdtemp())
    except MlflowException:
        return None
    return _metrics(recommend(model.stages[-1], users, train, k), test, k, n_items)


def train(spark: SparkSession, cfg: Config) -> TrainResult:
    m = cfg.model
    setup_mlflow(cfg)
    path = lake.table_path(cfg.lake, "gold", "interactions")
    interactions = lake.read(spark, path).select(USER, ITEM, "confidence", "last_ts", "as_of").persist()
    as_of = interactions.agg(F.max("as_of")).first()[0]
    inputs = {"gold/interactions": lake.current_version(spark, path)}
    for table in ("id_map_users", "id_map_artists"):
        inputs[f"gold/{table}"] = lake.current_version(spark, lake.table_path(cfg.lake, "gold", table))
    train_df, test_df = (df.persist() for df in split(interactions, m))
    users = test_df.select(USER).distinct()
    n_items = interactions.select(ITEM).distinct().count()
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/checkpoints/als")

    with mlflow.start_run(run_name="train-als") as parent:
        mlflow.log_params({"k": m.k, "split": m.split, "holdout_share": m.holdout_share, "trials": m.trials,
                           "as_of": str(as_of), **{f"input_version.{k}": v for k, v in inputs.items()}})
        for name, recs in (("global_popularity", popularity(train_df, users, m.k)),):
            mlflow.log_metrics({f"{name}.{k}": v for k, v in _metrics(recs, test_df, m.k, n_items).items()})
        trials = []
        for params in search_space(m):
            with mlflow.start_run(run_name=f"rank{params.rank}-reg{params.reg_param}", nested=True):
                model, seconds = fit(train_df, params)
                scores = _metrics(recommend(model, users, train_df, m.k), test_df, m.k, n_items)
                mlflow.log_params(asdict(params))
                mlflow.log_metrics({**scores, "fit_seconds": seconds})
                trials.append((scores["ndcg"], params, scores))
        best_ndcg, best, best_scores = max(trials, key=lambda t: t[0])
        champion = _champion_score(m.name, users, train_df, test_df, m.k, n_items)
        mlflow.log_params({f"best.{k}": v for k, v in asdict(best).items()})
        mlflow.log_metrics({f"best.{k}": v for k, v in best_scores.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion.{k}": v for k, v in champion.items()})

        final, _ = fit(interactions, best)
        with tempfile.TemporaryDirectory() as tmp:
            for table in ("id_map_users", "id_map_artists"):
                out = Path(tmp) / f"{table}.parquet"
                lake.read(spark, lake.table_path(cfg.lake, "gold", table)).toPandas().to_parquet(out)  # id maps: small
                mlflow.log_artifact(str(out), artifact_path="id_maps")
            info = mlflow.spark.log_model(final, "model", pip_requirements=SPARK_MODEL_REQUIREMENTS,
                                          registered_model_name=m.name, dfs_tmpdir=tmp)
        version = str(info.registered_model_version)
        promoted = promote(MlflowClient(), m.name, version, best_ndcg,
                           None if champion is None else champion["ndcg"], m.promotion_margin)
        mlflow.set_tags({"promoted": str(promoted), "registered_version": version})
    for df in (train_df, test_df, interactions):
        df.unpersist()
    return TrainResult(parent.info.run_id, version, best, best_scores, champion, promoted)
