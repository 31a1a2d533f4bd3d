"""Train implicit ALS on `gold/interactions`, tracked in MLflow, registered with aliases.

One parent run per training: the search space, the split, the as-of time and the Delta
versions of every input; global and segment (age group x country) popularity baselines; one
child run per trial (`model.trials` configurations of the grid `model.ranks x reg_params x
alphas x scalings`, in order); a PNG of precision/recall/NDCG at K = 1..`model.curve_max_k` for
the best trial against both baselines and an HTML report (artifacts under `report/`). The
winner is retrained on all interactions, logged with its id maps and registered as
`model.name`. The new version gets alias `challenger`, and `champion` too when there is no
champion yet or when it beats the champion's NDCG@K on the same validation data by more than
`model.promotion_margin`. Lists everywhere honour `model.recommend_threshold` (cosine, [-1, 1]).
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
from recsys.model.als import ITEM, USER, AlsParams, fit, popularity
from recsys.model.metrics import metric_curves, ranking_metrics
from recsys.model.segments import SEGMENT, UNKNOWN_SEGMENT, user_segments
from recsys.model.split import latest_holdout, random_holdout
from recsys.model.topk import recommend
from recsys.reporting import image, line_chart, table, write_report
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
    baselines: dict[str, dict[str, float]]


def search_space(m: ModelConfig) -> list[AlsParams]:
    def values(text: str, kind):
        return [kind(v) for v in text.split(",") if v.strip()]

    grid = itertools.product(values(m.ranks, int), values(m.reg_params, float), values(m.alphas, float),
                             values(m.scalings, str))
    return [AlsParams(rank=r, reg_param=g, alpha=a, scaling=s.strip(), max_iter=m.max_iter, seed=m.seed,
                      bm25_k1=m.bm25_k1, bm25_b=m.bm25_b)
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


def _champion_score(name: str, users: DataFrame, train: DataFrame, test: DataFrame, k: int, n_items: int,
                    threshold: float) -> dict[str, float] | None:
    try:
        model = mlflow.spark.load_model(f"models:/{name}@{CHAMPION}", dfs_tmpdir=tempfile.mkdtemp())
    except MlflowException:
        return None
    return _metrics(recommend(model.stages[-1], users, train, k, threshold), test, k, n_items)


def _log_report(title: str, summary: dict[str, object], rows: list[dict], trials: list[dict],
                curves: dict[str, list[dict[str, float]]]) -> None:
    """The K=1..max curves as a PNG and the HTML report, both as run artifacts under `report/`."""
    with tempfile.TemporaryDirectory() as tmp:
        panels = {metric: {label: ([c["k"] for c in curve], [c[metric] for c in curve])
                           for label, curve in curves.items()} for metric in ("precision", "recall", "ndcg")}
        chart = line_chart(Path(tmp) / "metrics_at_k.png", panels, xlabel="K")
        report = write_report(Path(tmp) / "report.html", title, [
            ("Run", [table([{"key": k, "value": v} for k, v in summary.items()])]),
            ("Model against baselines", [table(rows)]),
            ("Precision, recall and NDCG at K", [image(chart)]),
            ("Trials", [table(trials)]),
        ])
        mlflow.log_artifact(str(chart), artifact_path="report")
        mlflow.log_artifact(str(report), artifact_path="report")


def train(spark: SparkSession, cfg: Config) -> TrainResult:
    m = cfg.model
    setup_mlflow(cfg)
    path = lake.table_path(cfg.lake, "gold", "interactions")
    interactions = lake.read(spark, path).select(USER, ITEM, "confidence", "last_ts", "as_of").persist()
    as_of = interactions.agg(F.max("as_of")).first()[0]
    inputs = {"gold/interactions": lake.current_version(spark, path)}
    for table_name in ("id_map_users", "id_map_artists", "user_features"):
        table_path = lake.table_path(cfg.lake, "gold", table_name)
        if lake.exists(spark, table_path):
            inputs[f"gold/{table_name}"] = lake.current_version(spark, table_path)
    train_df, test_df = (df.persist() for df in split(interactions, m))
    users = test_df.select(USER).distinct().join(user_segments(spark, cfg), on=USER, how="left") \
        .fillna({SEGMENT: UNKNOWN_SEGMENT}).persist()
    n_items = interactions.select(ITEM).distinct().count()
    depth = max(m.k, m.curve_max_k)
    threshold = m.recommend_threshold
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/checkpoints/als")

    with mlflow.start_run(run_name="train-als") as parent:
        mlflow.log_params({"k": m.k, "split": m.split, "holdout_share": m.holdout_share, "trials": m.trials,
                           "recommend_threshold": threshold, "as_of": str(as_of),
                           **{f"input_version.{k}": v for k, v in inputs.items()}})
        lists = {"global_popularity": popularity(train_df, users, depth),
                 "segment_popularity": popularity(train_df, users, depth, segment=SEGMENT)}
        scores = {}
        for name, recs in lists.items():
            scores[name] = _metrics(recs.persist(), test_df, m.k, n_items)
            mlflow.log_metrics({f"{name}.{k}": v for k, v in scores[name].items()})
        trials, best = [], None
        for params in search_space(m):
            with mlflow.start_run(run_name=f"rank{params.rank}-reg{params.reg_param}-{params.scaling}", nested=True):
                model, seconds = fit(train_df, params)
                recs = recommend(model, users, train_df, depth, threshold).persist()
                trial = _metrics(recs, test_df, m.k, n_items)
                mlflow.log_params(asdict(params))
                mlflow.log_metrics({**trial, "fit_seconds": seconds})
                trials.append({**asdict(params), **trial, "fit_seconds": seconds})
                if best is None or trial["ndcg"] > best[2]["ndcg"]:
                    if best is not None:
                        best[3].unpersist()
                    best = (params, model, trial, recs)
                else:
                    recs.unpersist()
        best_params, _, best_scores, best_recs = best
        champion = _champion_score(m.name, users, train_df, test_df, m.k, n_items, threshold)
        mlflow.log_params({f"best.{k}": v for k, v in asdict(best_params).items()})
        mlflow.log_metrics({f"best.{k}": v for k, v in best_scores.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion.{k}": v for k, v in champion.items()})
        curves = {"ALS": metric_curves(best_recs, test_df, depth, user=USER, item=ITEM),
                  **{name.replace("_", " "): metric_curves(recs, test_df, depth, user=USER, item=ITEM)
                     for name, recs in lists.items()}}
        rows = [{"model": "ALS (best trial)", **best_scores},
                *({"model": name.replace("_", " "), **v} for name, v in scores.items()),
                *([{"model": "current champion", **champion}] if champion else [])]
        summary = {"as of": as_of, "split": f"{m.split} {m.holdout_share:.0%}", "K": m.k,
                   "recommend threshold (cosine)": threshold, "validation users": users.count(),
                   **{f"best {k}": v for k, v in asdict(best_params).items()},
                   **{f"input version {k}": v for k, v in inputs.items()}}
        _log_report(f"Training run {parent.info.run_id}", summary, rows, trials, curves)

        final, final_seconds = fit(interactions, best_params)
        mlflow.log_metric("final_fit_seconds", final_seconds)
        with tempfile.TemporaryDirectory() as tmp:
            for table_name in ("id_map_users", "id_map_artists"):
                out = Path(tmp) / f"{table_name}.parquet"
                lake.read(spark, lake.table_path(cfg.lake, "gold", table_name)).toPandas().to_parquet(out)  # small
                mlflow.log_artifact(str(out), artifact_path="id_maps")
            info = mlflow.spark.log_model(final, "model", pip_requirements=SPARK_MODEL_REQUIREMENTS,
                                          registered_model_name=m.name, dfs_tmpdir=tmp)
        version = str(info.registered_model_version)
        promoted = promote(MlflowClient(), m.name, version, best_scores["ndcg"],
                           None if champion is None else champion["ndcg"], m.promotion_margin)
        mlflow.set_tags({"promoted": str(promoted), "registered_version": version})
    for df in (train_df, test_df, interactions, users, best_recs, *lists.values()):
        df.unpersist()
    return TrainResult(parent.info.run_id, version, best_params, best_scores, champion, promoted, scores)
