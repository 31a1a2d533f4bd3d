"""Train implicit ALS on `gold/interactions`, tracked in MLflow, registered, promoted only on merit.

One parent run per training, holding the search space, the split, the as-of time and the Delta
versions of every input:
1. Validation: per user the latest (or a random) `model.holdout_share` of artists
   (`recsys.model.split`); global and segment (age group x country) popularity on that split
   are the baselines.
2. Search (`recsys.model.search`): each trial an MLflow child run scored on validation; a trial
   that cannot be trained is a FAILED child run with its reason, and the search goes on. If
   every trial fails, `TrainingFailed` names the cause (the job exits 5).
3. The winner on validation is retrained on all interactions. Where the generator's answer key
   exists and holds a discovery (`recsys.model.truth`), it and both baselines are also scored
   on the artists users really go on to play; report and K-curves (PNG) are artifacts under
   `report/`.
4. Registered as `model.name` with alias `challenger`. `champion` moves to it only when
   (a) its NDCG@K beats the best baseline by more than `model.min_lift` (relative),
   (b) it beats the current champion's configuration, refit and scored on the same split, by
   more than `model.promotion_margin`, and (c) its lists look like a recommender's: cosine scores spread,
   and at least `model.min_coverage` of the catalog recommended. `TrainResult.decision` says
   why in one line. Lists everywhere honour `model.recommend_threshold` (cosine, [-1, 1]).
"""

from __future__ import annotations

import logging
import tempfile
import time
import typing
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config, ModelConfig
from recsys.frames import Persisted
from recsys.model.als import ITEM, USER, AlsParams, fit, popularity
from recsys.model.metrics import METRICS, metric_curves, ranking_metrics
from recsys.model.search import SearchSpace, TrialFailed, TrialOutcome, configuration_failures, run_search
from recsys.model.segments import SEGMENT, UNKNOWN_SEGMENT, user_segments
from recsys.model.split import latest_holdout, random_holdout
from recsys.model.topk import recommend
from recsys.model.truth import future_discoveries
from recsys.reporting import image, line_chart, table, write_report
from recsys.tables import AS_OF
from recsys.tracking import SPARK_MODEL_REQUIREMENTS, quiet_registry, setup_mlflow

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
BASELINES = {"global_popularity": None, "segment_popularity": SEGMENT}  # name -> the segment column
MIN_SCORE_STD = 0.01  # cosine scores spread less than this: every list is the same direction


class TrainingFailed(RuntimeError):
    """No model could be trained: every trial failed (the message names the cause)."""


@dataclass(frozen=True)
class Promotion:
    """Whether the new model became champion, and why in one line."""
    promoted: bool
    reason: str


@dataclass(frozen=True)
class TrainResult:
    """One training run: registered version, chosen parameters, its metrics and the champion's, promotion."""
    run_id: str
    version: str
    params: AlsParams
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    promoted: bool
    baselines: dict[str, dict[str, float]]
    decision: str = ""
    truth: dict[str, dict[str, float]] | None = None  # model and baselines on future plays
    trials: int = 0
    failed_trials: int = 0
    search_seconds: float = 0.0


def split(interactions: DataFrame, m: ModelConfig) -> tuple[DataFrame, DataFrame]:
    """Training and validation parts by `model.split`: each user's latest interactions, or a random share."""
    if m.split == "latest":
        return latest_holdout(interactions, m.holdout_share)
    if m.split == "random":
        return random_holdout(interactions, m.holdout_share, m.seed)
    raise ValueError(f"model.split must be 'latest' or 'random', got {m.split!r}")


def _metrics(recs: DataFrame, test: DataFrame, k: int, n_items: int) -> dict[str, float]:
    return ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM)


def decide(score: float, baselines: dict[str, float], champion: tuple[str, float] | None, coverage: float,
           score_std: float, m: ModelConfig) -> Promotion:
    """Whether a model with validation NDCG `score` becomes champion, and why, in one line.

    `baselines` maps a baseline's name to its NDCG on the same split; `champion` is the current
    champion's (version, NDCG) on that split, or None.
    """
    name, best = max(baselines.items(), key=lambda kv: kv[1])
    label = name.replace("_", " ")
    lift = f"{score / best:.2f}x {label} ({best:.4f})" if best > 0 else f"{label} scores 0"
    wanted = best * (1 + m.min_lift)
    problems = []
    if score <= wanted:
        problems.append(f"NDCG@{m.k} {score:.4f} is {lift}, needs more than {1 + m.min_lift:.2f}x")
    if champion is not None and score <= champion[1] + m.promotion_margin:
        problems.append(f"does not beat champion v{champion[0]} ({champion[1]:.4f}) by more than "
                        f"{m.promotion_margin}")
    if score_std < MIN_SCORE_STD:
        problems.append(f"scores do not spread (std {score_std:.4f}): lists collapsed to one direction")
    if coverage < m.min_coverage:
        problems.append(f"recommends {coverage:.1%} of the catalog, needs {m.min_coverage:.0%}")
    if problems:
        kept = f"v{champion[0]}" if champion else "none yet"
        return Promotion(False, f"champion stays {kept}: " + "; ".join(problems))
    over = f", beats champion v{champion[0]} ({champion[1]:.4f})" if champion else ""
    return Promotion(True, f"champion: this one, NDCG@{m.k} {score:.4f} = {lift}{over}")


def promote(client: MlflowClient, name: str, version: str, decision: Promotion) -> bool:
    """Set `challenger` on `version`, and `champion` too when the decision says so."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return decision.promoted


def _champion(name: str, users: DataFrame, train: DataFrame, test: DataFrame, k: int, n_items: int,
              threshold: float) -> tuple[str, dict[str, float]] | None:
    """The current champion's version and its metrics on this split, or None when there is none.

    The champion's configuration (its run's `best.*` params) is refit on this training part:
    its registered model was fit on every interaction of its day, which includes pairs this
    split now holds out, so scoring that model here would reward it for having seen the answers.
    """
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    if not version.run_id:
        return None
    logged = client.get_run(version.run_id).data.params
    kinds = typing.get_type_hints(AlsParams)
    params = AlsParams(**{key: kind(logged[f"best.{key}"]) for key, kind in kinds.items() if f"best.{key}" in logged})
    try:
        with configuration_failures(train.sparkSession):
            model, _ = fit(train, params)
    except TrialFailed as err:  # a recipe that no longer trains cannot defend its title
        log.warning("champion v%s's configuration failed on this data: %s", version.version, err)
        return str(version.version), {**dict.fromkeys(METRICS, 0.0), "coverage": 0.0}
    return str(version.version), _metrics(recommend(model, users, train, k, threshold), test, k, n_items)


def _final_fit(spark: SparkSession, data: DataFrame, params: AlsParams) -> tuple[ALSModel, float]:
    """The winner retrained on all interactions; a failure there is `TrainingFailed`, in one line."""
    try:
        with configuration_failures(spark):
            return fit(data, params)
    except TrialFailed as err:  # reported in one line by the job (exit 5); the cause stays chained
        raise TrainingFailed(f"the winning configuration failed on all interactions: {err}") from err


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


def _trial_rows(outcomes: list[TrialOutcome]) -> list[dict]:
    """One row per trial with the same columns whether it failed or not."""
    return [{"trial": t.number, **asdict(t.params), **{k: (t.metrics or {}).get(k, "") for k in (*METRICS, "coverage")},
             "seconds": round(t.seconds, 1), "failure": t.failure or ""} for t in outcomes]


def _with_segments(spark: SparkSession, cfg: Config, users: DataFrame) -> DataFrame:
    """`user_idx` rows with each user's popularity segment (`unknown|unknown` without features)."""
    return users.join(user_segments(spark, cfg), on=USER, how="left").fillna({SEGMENT: UNKNOWN_SEGMENT})


def _truth_scores(spark: SparkSession, cfg: Config, model: ALSModel, interactions: DataFrame,
                  n_items: int) -> dict[str, dict[str, float]] | None:
    """The final model and both baselines (on all interactions) against the future plays."""
    with Persisted() as keep:
        relevant = future_discoveries(spark, cfg, interactions, keep=keep)
        if relevant is None:
            return None
        users = _with_segments(spark, cfg, relevant.select(USER).distinct())
        k = cfg.model.k
        lists = {"als": recommend(model, users, interactions, k, cfg.model.recommend_threshold),
                 **{name: popularity(interactions, users, k, segment=segment) for name, segment in BASELINES.items()}}
        return {name: _metrics(recs, relevant, k, n_items) for name, recs in lists.items()}


def _inputs(spark: SparkSession, cfg: Config, keep: Persisted) -> tuple[DataFrame, dict[str, int]]:
    """gold/interactions (persisted by `keep`) and the Delta version of every gold table training reads."""
    path = lake.table_path(cfg.lake, "gold", "interactions")
    interactions = keep(lake.read(spark, path).select(USER, ITEM, "confidence", "last_ts", AS_OF))
    inputs = {"gold/interactions": lake.current_version(spark, path)}
    for table_name in ("id_map_users", "id_map_artists", "user_features"):
        table_path = lake.table_path(cfg.lake, "gold", table_name)
        if lake.exists(spark, table_path):
            inputs[f"gold/{table_name}"] = lake.current_version(spark, table_path)
    return interactions, inputs


def _log_id_maps_and_model(spark: SparkSession, cfg: Config, final: ALSModel) -> str:
    """Log the id maps and the model, register it; the new version."""
    with tempfile.TemporaryDirectory() as tmp:
        for table_name in ("id_map_users", "id_map_artists"):
            out = Path(tmp) / f"{table_name}.parquet"
            lake.read(spark, lake.table_path(cfg.lake, "gold", table_name)).toPandas().to_parquet(out)  # small
            mlflow.log_artifact(str(out), artifact_path="id_maps")
        info = mlflow.spark.log_model(final, "model", pip_requirements=SPARK_MODEL_REQUIREMENTS, dfs_tmpdir=tmp)
    with quiet_registry():
        return str(mlflow.register_model(info.model_uri, cfg.model.name).version)


@dataclass
class _Best:
    """The best trial so far: its configuration, validation metrics and (persisted) lists."""

    params: AlsParams
    metrics: dict[str, float]
    recs: DataFrame


@dataclass(frozen=True)
class _Split:
    """What every trial and baseline is scored on."""

    train: DataFrame
    test: DataFrame
    users: DataFrame        # validation users with their segments
    n_items: int
    depth: int              # list length scored (curves go past K)
    threshold: float


def train(spark: SparkSession, cfg: Config) -> TrainResult:
    """Search, train, evaluate against baselines and the champion, register, and promote if the rules allow."""
    with Persisted() as keep:  # every frame training caches, released however it ends
        return _train(spark, cfg, keep)


def _train(spark: SparkSession, cfg: Config, keep: Persisted) -> TrainResult:
    m = cfg.model
    space = SearchSpace.from_config(m)
    setup_mlflow(cfg)
    interactions, inputs = _inputs(spark, cfg, keep)
    as_of = interactions.agg(F.max(AS_OF)).collect()[0][0]
    train_df, test_df = (keep(df) for df in split(interactions, m))
    data = _Split(train_df, test_df, keep(_with_segments(spark, cfg, test_df.select(USER).distinct())),
                  interactions.select(ITEM).distinct().count(), max(m.k, m.curve_max_k), m.recommend_threshold)
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/checkpoints/als")

    with mlflow.start_run(run_name="train-als") as parent:
        mlflow.log_params({"k": m.k, "split": m.split, "holdout_share": m.holdout_share, "max_trials": m.trials,
                           "search_budget_s": m.search_budget_s, "space": str(space), "min_lift": m.min_lift,
                           "recommend_threshold": data.threshold, AS_OF: str(as_of),
                           **{f"input_version.{k}": v for k, v in inputs.items()}})
        lists = {name: keep(popularity(train_df, data.users, data.depth, segment=segment))
                 for name, segment in BASELINES.items()}
        scores = {name: _metrics(recs, test_df, m.k, data.n_items) for name, recs in lists.items()}
        for name, values in scores.items():
            mlflow.log_metrics({f"{name}.{k}": v for k, v in values.items()})

        started = time.monotonic()
        best, outcomes = _search(spark, space, data, m, keep)
        search_seconds = time.monotonic() - started
        failed = [t for t in outcomes if t.failure]
        mlflow.log_metrics({"search_seconds": search_seconds, "trials_completed": len(outcomes) - len(failed),
                            "trials_failed": len(failed)})

        champion = _champion(m.name, data.users, train_df, test_df, m.k, data.n_items, data.threshold)
        spread, low, high = best.recs.agg(F.stddev_pop("score"), F.min("score"), F.max("score")).collect()[0]
        spread = spread or 0.0
        decision = decide(best.metrics["ndcg"], {n: s["ndcg"] for n, s in scores.items()},
                          champion and (champion[0], champion[1]["ndcg"]), best.metrics["coverage"], spread, m)
        mlflow.log_params({f"best.{k}": v for k, v in asdict(best.params).items()})
        best_scores = {**best.metrics, "score_std": spread, "score_min": low or 0.0, "score_max": high or 0.0}
        mlflow.log_metrics({f"best.{k}": v for k, v in best_scores.items()})
        if champion is not None:
            mlflow.log_metrics({f"champion.{k}": v for k, v in champion[1].items()})

        final, final_seconds = _final_fit(spark, interactions, best.params)
        mlflow.log_metric("final_fit_seconds", final_seconds)
        truth = _truth_scores(spark, cfg, final, interactions, data.n_items)
        for name, values in (truth or {}).items():
            mlflow.log_metrics({f"truth.{name}.{k}": v for k, v in values.items()})

        rows = [{"model": "ALS (best trial)", **best_scores},
                *({"model": name.replace("_", " "), **v} for name, v in scores.items()),
                *([{"model": f"current champion v{champion[0]}", **champion[1]}] if champion else []),
                *({"model": f"future plays: {name.replace('_', ' ')}", **v} for name, v in (truth or {}).items())]
        summary = {"as of": as_of, "split": f"{m.split} {m.holdout_share:.0%}", "K": m.k,
                   "recommend threshold (cosine)": data.threshold, "validation users": data.users.count(),
                   "trials": f"{len(outcomes)} ({len(failed)} failed) in {search_seconds:.0f}s",
                   "promotion": decision.reason,
                   **{f"best {k}": v for k, v in asdict(best.params).items()},
                   **{f"input version {k}": v for k, v in inputs.items()}}
        _log_report(f"Training run {parent.info.run_id}", summary, rows, _trial_rows(outcomes),
                    _curves(data, best.recs, lists))

        version = _log_id_maps_and_model(spark, cfg, final)
        promoted = promote(MlflowClient(), m.name, version, decision)
        mlflow.set_tags({"promoted": str(promoted), "promotion_reason": decision.reason,
                         "registered_version": version})
    return TrainResult(parent.info.run_id, version, best.params, best_scores, champion and champion[1], promoted,
                       scores, decision.reason, truth, len(outcomes), len(failed), search_seconds)


def _search(spark: SparkSession, space: SearchSpace, data: _Split, m: ModelConfig,
            keep: Persisted) -> tuple[_Best, list[TrialOutcome]]:
    """Run the search, each trial an MLflow child run; the best trial (its lists kept by `keep`), or
    `TrainingFailed` if none trained.
    """
    best: _Best | None = None

    def evaluate(number: int, params: AlsParams) -> dict[str, float]:
        nonlocal best
        with mlflow.start_run(run_name=f"trial-{number}", nested=True):  # FAILED when an error leaves it
            mlflow.log_params(asdict(params))
            try:
                with configuration_failures(spark):
                    model, seconds = fit(data.train, params)
                    recs = keep(recommend(model, data.users, data.train, data.depth, data.threshold))
                    trial = _metrics(recs, data.test, m.k, data.n_items)
            except TrialFailed as err:
                mlflow.set_tag("failure", str(err))
                raise
            mlflow.log_metrics({**trial, "fit_seconds": seconds})
        if best is None or trial["ndcg"] > best.metrics["ndcg"]:
            if best is not None:
                keep.release(best.recs)
            best = _Best(params, trial, recs)
        else:
            keep.release(recs)
        return trial

    outcomes = run_search(space, evaluate, max_trials=m.trials, budget_s=m.search_budget_s)
    if best is None:
        failed = [t.failure for t in outcomes if t.failure]
        cause, n = Counter(failed).most_common(1)[0] if failed else ("no trial ran", 0)
        mlflow.set_tag("failure", cause)
        raise TrainingFailed(f"all {len(outcomes)} trials failed; {n} of them: {cause}")
    return best, outcomes


def _curves(data: _Split, best_recs: DataFrame, lists: dict[str, DataFrame]) -> dict[str, list[dict[str, float]]]:
    """Metric curves over K for the best trial and each baseline."""
    return {"ALS": metric_curves(best_recs, data.test, data.depth, user=USER, item=ITEM),
            **{name.replace("_", " "): metric_curves(recs, data.test, data.depth, user=USER, item=ITEM)
               for name, recs in lists.items()}}


def summary_line(result: TrainResult, m: ModelConfig) -> str:
    """One line for the console: ALS against both baselines, on validation and on future plays."""
    def trio(scores: dict[str, float], model: float) -> str:
        return (f"NDCG@{m.k} {model:.4f} (global popularity {scores['global_popularity']:.4f}, "
                f"segment popularity {scores['segment_popularity']:.4f})")

    line = (f"v{result.version} {trio({n: s['ndcg'] for n, s in result.baselines.items()}, result.metrics['ndcg'])}"
            f" on the {m.split} {m.holdout_share:.0%}")
    if result.truth:
        line += "; future plays " + trio({n: s["ndcg"] for n, s in result.truth.items()}, result.truth["als"]["ndcg"])
    failed = f", {result.failed_trials} failed" if result.failed_trials else ""
    return (f"{line}; {result.trials} trials{failed} in {result.search_seconds:.0f}s; coverage "
            f"{result.metrics['coverage']:.0%}, scores {result.metrics['score_min']:.2f}..."
            f"{result.metrics['score_max']:.2f}; {result.decision}")
