"""`jobs/feedback.py`: labelled impressions, CTR, the A/B analysis, its report, and MLflow.

Tables:
- `gold/feedback`: one row per impression with `clicked`, its ALS score and position, and the
  re-ranker's other features (the artist's listeners, trending rank, followers, genre overlap with
  the user's top genres, age group, country) as gold held them when the impression was first
  labelled; kept current from what silver added (`recsys.feedback.labels`);
- `gold/ctr`: impressions, clicks, CTR per model version, variant, position and day;
- `gold/ab_results`: per variant of the experiment, CTR with its interval, and the test of the
  treatment against the control (first variant by name) with the SRM check and the MDE.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.experiment import variants as experiment_variants
from recsys.feedback.abtest import AbResult, analyze
from recsys.feedback.attribution import ctr
from recsys.feedback.labels import Labelling, label_impressions
from recsys.frames import Persisted
from recsys.reporting import bar_chart, image, line_chart, paragraph, table, write_report
from recsys.tables import EVENT_DATE, EVENT_TYPE, GOLD_AB_RESULTS, GOLD_FEEDBACK, SILVER_EVENTS, USER_KEY
from recsys.tracking import setup_mlflow


@dataclass(frozen=True)
class FeedbackReport:
    """What one feedback run found: impressions, clicks, unattributed clicks, the A/B result, and
    what the labelling changed in `gold/feedback`.
    """
    impressions: int
    clicks: int
    unattributed_clicks: int
    ab: AbResult | None
    run_id: str
    labelling: Labelling


def _counts(feedback: DataFrame) -> dict[str, tuple[int, int, int]]:
    rows = feedback.filter(F.col("variant").isNotNull()).groupBy("variant").agg(
        F.countDistinct(USER_KEY).alias("users"), F.count("*").alias("n"), F.sum("clicked").alias("c")).collect()
    return {r["variant"]: (r["users"], r["n"], int(r["c"])) for r in rows}


def ab_analysis(feedback: DataFrame, cfg: Config) -> AbResult | None:
    """The A/B test of the first two variants that have impressions, or None with fewer than two."""
    counts = _counts(feedback)
    shares = {v.name: len(v.buckets) for v in experiment_variants(cfg.experiment)}
    names = [n for n in sorted(shares) if n in counts]
    if len(names) < 2:  # noqa: PLR2004 (a test compares two)
        return None
    f = cfg.feedback
    return analyze({n: counts[n] for n in names}, {n: shares[n] for n in names}, names[0], names[1],
                   alpha=f.alpha, power=f.power, srm_alpha=f.srm_alpha)


def _ab_rows(result: AbResult, experiment: str) -> list[dict]:
    test = {k: v for k, v in asdict(result).items() if k != "variants"}
    return [{"experiment": experiment, **asdict(v), **test} for v in result.variants]


def _ctr_series(rows: list, name: Callable[[Row], str], x: Callable[[Row], object]) -> dict[str, tuple[list, list]]:
    """CTR rows as line-chart series: series name(row) -> (x(row) values, CTRs), in row order."""
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        xs, ys = series.setdefault(name(r), ([], []))
        xs.append(x(r))
        ys.append(r["ctr"])
    return series


def _report(path: Path, result: AbResult | None, by_position: list, by_day: list, totals: dict) -> Path:
    charts = []
    blocks = [table([totals])]
    if result is not None:
        names = [v.variant for v in result.variants]
        errors = [[v.ctr - v.ci_low for v in result.variants], [v.ci_high - v.ctr for v in result.variants]]
        charts.append(bar_chart(path.parent / "ctr_by_variant.png", "CTR per variant (Wilson interval)", names,
                                [v.ctr for v in result.variants], errors, ylabel="CTR"))
        verdict = (f"{result.treatment} - {result.control} = {result.difference:+.4f} CTR "
                   f"(95% CI {result.diff_ci_low:+.4f}..{result.diff_ci_high:+.4f}), p = {result.p_value:.4g}: "
                   f"{'significant' if result.significant else 'not significant'} at {result.alpha}. "
                   f"MDE for this traffic {result.mde:.4f}.")
        srm = (f"Sample ratio mismatch: chi2 = {result.srm_chi2:.2f}, p = {result.srm_p_value:.4g}"
               + (" - assignment is broken, do not trust this result." if result.srm else " - none."))
        blocks += [paragraph(verdict), paragraph(srm, "bad" if result.srm else ""),
                   table([asdict(v) for v in result.variants]), image(charts[-1])]
    else:
        blocks.append(paragraph("Fewer than two variants have impressions: no A/B analysis."))
    by_variant = _ctr_series(by_position, lambda r: r["variant"] or "-", lambda r: r["position"])
    charts.append(line_chart(path.parent / "ctr_by_position.png", {"CTR by position": by_variant}, xlabel="position"))
    by_model = _ctr_series(by_day, lambda r: f"model {r['model_version']}", lambda r: str(r[EVENT_DATE]))
    charts.append(line_chart(path.parent / "ctr_by_day.png", {"CTR by day": by_model}, xlabel="day"))
    return write_report(path, "Feedback and A/B analysis", [
        ("Experiment", blocks), ("CTR by position", [image(charts[-2])]), ("CTR by day and model version",
                                                                           [image(charts[-1])])])


def build_feedback(spark: SparkSession, cfg: Config) -> FeedbackReport:
    """Attribute clicks to impressions into `gold/feedback`, CTR per model version and the A/B report."""
    f = cfg.feedback
    setup_mlflow(cfg)
    labelling = label_impressions(spark, cfg)
    events = lake.read(spark, SILVER_EVENTS.path(cfg.lake))
    with Persisted() as keep:
        feedback = keep(lake.read(spark, GOLD_FEEDBACK.path(cfg.lake)))
        ctr_table = ctr(feedback, "model_version", "variant", "position", EVENT_DATE)
        lake.overwrite(ctr_table, lake.table_path(cfg.lake, "gold", "ctr"))
        totals = feedback.agg(F.count("*").alias("impressions"), F.sum("clicked").alias("clicks")).collect()[0]
        clicks_total = events.filter(F.col(EVENT_TYPE) == "click").count()
        result = ab_analysis(feedback, cfg)
        if result is not None:
            lake.overwrite(spark.createDataFrame(_ab_rows(result, cfg.experiment.name), GOLD_AB_RESULTS.schema),
                           lake.table_path(cfg.lake, "gold", "ab_results"))
        by_position = ctr(feedback, "variant", "position").orderBy("variant", "position").collect()
        by_day = ctr(feedback, "model_version", EVENT_DATE).orderBy("model_version", EVENT_DATE).collect()
        summary = {"impressions": totals["impressions"], "clicks attributed": int(totals["clicks"] or 0),
                   "clicks": clicks_total, "attribution window s": f.attribution_window_s}

        with mlflow.start_run(run_name="feedback") as run, tempfile.TemporaryDirectory() as tmp:
            mlflow.log_params({"attribution_window_s": f.attribution_window_s, "experiment": cfg.experiment.name,
                               "salt": cfg.experiment.salt, "variants": str(cfg.experiment.variants)})
            metrics = {"impressions": summary["impressions"], "clicks": summary["clicks attributed"]}
            if result is not None:
                metrics.update({f"ctr.{v.variant}": v.ctr for v in result.variants})
                metrics.update({"ab.difference": result.difference, "ab.p_value": result.p_value,
                                "ab.srm_p_value": result.srm_p_value, "ab.mde": result.mde})
            metrics.update({f"ctr.model_{r['model_version']}": r["clicks"] / r["impressions"]
                            for r in ctr(feedback, "model_version").collect() if r["model_version"]})
            mlflow.log_metrics(metrics)
            report = _report(Path(tmp) / "report.html", result, by_position, by_day, summary)
            for png in Path(tmp).glob("*.png"):
                mlflow.log_artifact(str(png), artifact_path="report")
            mlflow.log_artifact(str(report), artifact_path="report")
    return FeedbackReport(summary["impressions"], summary["clicks attributed"],
                          clicks_total - summary["clicks attributed"], result, run.info.run_id, labelling)
