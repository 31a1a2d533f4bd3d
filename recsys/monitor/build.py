"""`jobs/monitor.py`: has the world moved since the model was trained?

The reference is the champion's training snapshot (`monitor.reference: champion`: the Delta
versions its MLflow run recorded, silver's through `gold/builds`) or the previous version of
each table (`previous`). Checks, each a PSI and a Jensen-Shannon distance against
`monitor.psi_threshold` / `monitor.js_threshold`:
- data: age group, country, genre mix (users' top genres), event-type mix (the events of the
  window each side's gold build read), artists per user;
- feature: plays in 30 days and distinct artists per user (`gold/user_features`);
- prediction: score of recommended artists and their popularity (listeners), this
  `gold/recommendations` against its previous version;
- model: the best NDCG of successive training runs and daily CTR (`gold/ctr`); an alert when the
  latest falls more than `monitor.max_metric_drop` (relative) below the best before it / the mean.
Writes an HTML report with charts and the metrics to MLflow; any alert makes the job exit 6.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.gold.changes import between
from recsys.model.batch import flat
from recsys.model.train import CHAMPION
from recsys.monitor.drift import Check, categorical_counts, compare, numeric_counts
from recsys.reporting import bar_chart, image, line_chart, paragraph, table, write_report
from recsys.tables import ARTIST_ID, EVENT_DATE, EVENT_TYPE, USER_KEY
from recsys.tracking import setup_mlflow

EXIT_DRIFT = 6
GOLD_INTERACTIONS = "gold/interactions"


@dataclass(frozen=True)
class MonitorReport:
    """One monitor run: the table versions compared, every check, and the MLflow run."""
    reference: dict[str, int]
    current: dict[str, int]
    checks: list[Check]
    run_id: str

    @property
    def alerts(self) -> list[Check]:
        """The checks that crossed their threshold."""
        return [c for c in self.checks if c.alert]


def _version(spark: SparkSession, cfg: Config, layer: str, table: str) -> int | None:
    path = lake.table_path(cfg.lake, layer, table)
    return lake.current_version(spark, path) if lake.exists(spark, path) else None


def reference_versions(spark: SparkSession, cfg: Config, current: dict[str, int]) -> dict[str, int]:
    """Table -> Delta version of the reference snapshot, never one from before users were forgotten
    (the erasure's own version stands in: the same data without them).
    """
    chosen = _chosen_reference(spark, cfg, current)
    return {t: lake.readable(spark, lake.table_path(cfg.lake, *t.split("/")), v) for t, v in chosen.items()}


def champion_inputs(spark: SparkSession, cfg: Config) -> dict[str, int] | None:
    """Table -> the Delta version the champion was trained on: the versions its MLflow run recorded
    (`input_version.*`) and the `silver/events` that the gold build of its `gold/interactions` read.
    None when the model has no champion (or its version no run). MLflow must be set up.
    """
    try:
        run_id = MlflowClient().get_model_version_by_alias(cfg.model.name, CHAMPION).run_id
    except MlflowException:
        return None
    if not run_id:
        return None
    params = mlflow.get_run(run_id).data.params
    ref = {key.removeprefix("input_version."): int(value) for key, value in params.items()
           if key.startswith("input_version.")}
    build = _build_that_wrote(spark, cfg, ref[GOLD_INTERACTIONS]) if GOLD_INTERACTIONS in ref else None
    if build is not None:
        ref["silver/events"] = int(build["inputs"]["silver/events"])
    return ref


def _build_that_wrote(spark: SparkSession, cfg: Config, interactions: int) -> Row | None:
    """The `gold/builds` row of the build that wrote version `interactions` of `gold/interactions`,
    or None when no recorded build did.
    """
    builds_path = lake.table_path(cfg.lake, "gold", "builds")
    if not lake.exists(spark, builds_path):
        return None
    return lake.read(spark, builds_path).filter(F.col("outputs")[GOLD_INTERACTIONS] == interactions).first()


def _chosen_reference(spark: SparkSession, cfg: Config, current: dict[str, int]) -> dict[str, int]:
    if cfg.monitor.reference == "previous":
        return {t: max(v - 1, 0) for t, v in current.items()}
    if cfg.monitor.reference != "champion":
        raise ValueError(f"monitor.reference must be 'champion' or 'previous', got {cfg.monitor.reference!r}")
    ref = champion_inputs(spark, cfg)
    if ref is None:
        raise ValueError(f"monitor.reference = champion, but model {cfg.model.name!r} has no champion "
                         "trained in a recorded run yet")
    return {t: ref.get(t, v) for t, v in current.items()}


def _build_window(spark: SparkSession, cfg: Config, interactions: int) -> tuple[datetime, datetime, int] | None:
    """The window (start, end) and the `silver/events` version of the gold build that wrote version
    `interactions` of `gold/interactions`, or None when no recorded build did.
    """
    build = _build_that_wrote(spark, cfg, interactions)
    if build is None or "silver/events" not in build["inputs"]:
        return None
    end = build["as_of"]
    return end - timedelta(days=cfg.gold.feature_window_days), end, int(build["inputs"]["silver/events"])


def compared_events(spark: SparkSession, cfg: Config, ref: dict[str, int], cur: dict[str, int]
                    ) -> tuple[DataFrame, DataFrame, str]:
    """The reference's and the current `silver/events` the event-type mix compares, and which: the
    events of the window each side's gold build read (the builds that wrote the two versions of
    `gold/interactions`), so history before the windows neither dilutes a shift nor costs a read;
    all of silver at the two versions when a side has no recorded build.
    """
    path = lake.table_path(cfg.lake, "silver", "events")
    ref_side, cur_side = (_build_window(spark, cfg, v[GOLD_INTERACTIONS]) if GOLD_INTERACTIONS in v else None
                          for v in (ref, cur))
    if ref_side is None or cur_side is None:
        return _read(spark, cfg, "silver/events", ref["silver/events"]), \
            _read(spark, cfg, "silver/events", cur["silver/events"]), "all of silver: a side has no recorded gold build"
    events = [between(lake.read(spark, path, version=lake.readable(spark, path, version)), start, end)
              for start, end, version in (ref_side, cur_side)]
    windows = " and ".join(f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})" for start, end, _ in (ref_side, cur_side))
    return events[0], events[1], f"the builds' windows {windows}"


def _read(spark: SparkSession, cfg: Config, name: str, version: int) -> DataFrame:
    layer, table = name.split("/")
    return lake.read(spark, lake.table_path(cfg.lake, layer, table), version=version)


def _distribution_checks(spark: SparkSession, cfg: Config, ref: dict[str, int], cur: dict[str, int]) -> list[Check]:
    m = cfg.monitor

    def check(name: str, kind: str, reference: np.ndarray, current: np.ndarray) -> Check:
        return compare(name, kind, reference, current, m.psi_threshold, m.js_threshold)

    def both(name: str) -> tuple[DataFrame, DataFrame]:
        return _read(spark, cfg, name, ref[name]), _read(spark, cfg, name, cur[name])

    checks = []
    users_ref, users_cur = both("gold/user_features")
    for kind, column in (("data", "age_group"), ("data", "country")):
        _, r, c = categorical_counts(users_ref, users_cur, column)
        checks.append(check(column, kind, r, c))
    _, r, c = categorical_counts(users_ref.select(F.explode("top_genres").alias("g")),
                                 users_cur.select(F.explode("top_genres").alias("g")), "g")
    checks.append(check("genre_mix", "data", r, c))
    if "silver/events" in cur:
        events_ref, events_cur, read = compared_events(spark, cfg, ref, cur)
        _, r, c = categorical_counts(events_ref, events_cur, EVENT_TYPE)
        mix = check("event_type_mix", "data", r, c)
        checks.append(dataclasses.replace(mix, detail=f"{mix.detail}; {read}"))
    inter_ref, inter_cur = both("gold/interactions")
    _, r, c = numeric_counts(inter_ref.groupBy(USER_KEY).count(), inter_cur.groupBy(USER_KEY).count(),
                             "count", m.bins)
    checks.append(check("artists_per_user", "data", r, c))
    for column in ("plays_30d", "distinct_artists"):
        _, r, c = numeric_counts(users_ref, users_cur, column, m.bins)
        checks.append(check(column, "feature", r, c))
    if cur.get("gold/recommendations", 0) > 0:
        recs_ref = flat(_read(spark, cfg, "gold/recommendations", cur["gold/recommendations"] - 1))
        recs_cur = flat(_read(spark, cfg, "gold/recommendations", cur["gold/recommendations"]))
        _, r, c = numeric_counts(recs_ref, recs_cur, "score", m.bins)
        checks.append(check("recommended_score", "prediction", r, c))
        listeners = lake.read(spark, lake.table_path(cfg.lake, "gold", "artist_stats")).select(ARTIST_ID, "listeners")
        _, r, c = numeric_counts(recs_ref.join(listeners, ARTIST_ID), recs_cur.join(listeners, ARTIST_ID),
                                 "listeners", m.bins)
        checks.append(check("recommended_popularity", "prediction", r, c))
    return checks


def _trend_check(name: str, values: list[float], drop: float, against: str) -> Check | None:
    if len(values) < 2:  # noqa: PLR2004 (a trend needs history and a latest value)
        return None
    history = values[:-1]
    base = max(history) if against == "best" else sum(history) / len(history)
    latest = values[-1]
    fall = (base - latest) / base if base > 0 else 0.0
    return Check(name, "model", 0.0, 0.0, fall > drop,
                 f"latest {latest:.4f} vs {against} before {base:.4f}: {-fall:+.1%}")


def _model_checks(spark: SparkSession, cfg: Config) -> tuple[list[Check], dict[str, list]]:
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    runs = mlflow.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'train-als'",
                              order_by=["attributes.start_time ASC"]) if experiment else None
    ndcg = [float(v) for v in runs["metrics.best.ndcg"].dropna()] if runs is not None and len(runs) else []
    ctr_path = lake.table_path(cfg.lake, "gold", "ctr")
    daily = lake.read(spark, ctr_path).groupBy(EVENT_DATE).agg(
        (F.sum("clicks") / F.sum("impressions")).alias("ctr")).orderBy(EVENT_DATE).collect() \
        if lake.exists(spark, ctr_path) else []
    ctr = [float(r[1]) for r in daily]
    trends: dict[str, list] = {"ndcg": ndcg, "ctr_days": [str(r[0]) for r in daily], "ctr": ctr}
    checks = [_trend_check("offline_ndcg", ndcg, cfg.monitor.max_metric_drop, "best"),
              _trend_check("daily_ctr", ctr, cfg.monitor.max_metric_drop, "mean")]
    return [c for c in checks if c is not None], trends


def _log_report(checks: list[Check], trends: dict[str, list], ref: dict, cur: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        distances = [c for c in checks if c.kind != "model"]
        psi_chart = bar_chart(Path(tmp) / "psi.png", "Population stability index", [c.name for c in distances],
                              [c.psi for c in distances])
        trend_chart = line_chart(Path(tmp) / "trends.png", {
            "best NDCG per training run": {"NDCG": (list(range(1, len(trends["ndcg"]) + 1)), trends["ndcg"])},
            "CTR per day": {"CTR": (trends["ctr_days"], trends["ctr"])}}, xlabel="")
        alerts = [c for c in checks if c.alert]
        report = write_report(Path(tmp) / "report.html", "Drift monitor", [
            ("Verdict", [paragraph(f"{len(alerts)} alert(s): {', '.join(c.name for c in alerts)}" if alerts
                                   else "No threshold crossed.", "bad" if alerts else "")]),
            ("Snapshots", [table([{"table": t, "reference version": ref[t], "current version": cur[t]} for t in cur])]),
            ("Checks", [table([asdict(c) for c in checks]), image(psi_chart)]),
            ("Trends", [image(trend_chart)]),
        ])
        (Path(tmp) / "checks.json").write_text(json.dumps([asdict(c) for c in checks], indent=2))
        for path in (psi_chart, trend_chart, report, Path(tmp) / "checks.json"):
            mlflow.log_artifact(str(path), artifact_path="report")


def run_monitor(spark: SparkSession, cfg: Config) -> MonitorReport:
    """Compare current tables with the reference, log the checks to MLflow and write the HTML report."""
    setup_mlflow(cfg)
    names = ("gold/user_features", "gold/interactions", "silver/events", "gold/recommendations")
    current = {n: v for n in names if (v := _version(spark, cfg, *n.split("/"))) is not None}
    ref = reference_versions(spark, cfg, current)
    checks = _distribution_checks(spark, cfg, ref, current)
    model_checks, trends = _model_checks(spark, cfg)
    checks += model_checks
    with mlflow.start_run(run_name="monitor") as run:
        mlflow.log_params({"reference": cfg.monitor.reference, **{f"reference_version.{t}": v for t, v in ref.items()},
                           **{f"current_version.{t}": v for t, v in current.items()}})
        mlflow.log_metrics({**{f"psi.{c.name}": c.psi for c in checks if c.kind != "model"},
                            **{f"js.{c.name}": c.js for c in checks if c.kind != "model"},
                            "alerts": sum(c.alert for c in checks)})
        _log_report(checks, trends, ref, current)
    return MonitorReport(ref, current, checks, run.info.run_id)
