"""The Last.fm 2K benchmark's evaluation (`make eval-lastfm`): searched ALS against global and
segment popularity on the documented protocol; `recsys.orchestration.lastfm` runs the pipeline
that feeds it.

Protocol: users with at least 5 artists in gold interactions; per user a random 20% of
artists held out as the test pairs (hash with seed 42, `split.random_holdout`); K = 10; training
artists are excluded from every list. The search (`recsys.model.search`, the same space and
budget as `make train`) never sees the test pairs: it scores trials on a validation split carved
out of the training part the same way (seed 43), and only its winner, refit on the whole
training part, is scored on the test pairs.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys.frames import Persisted
from recsys.model.als import ITEM, USER, AlsParams, fit, popularity
from recsys.model.metrics import ranking_metrics
from recsys.model.search import SearchSpace, TrialOutcome, configuration_failures, run_search
from recsys.model.segments import SEGMENT, UNKNOWN_SEGMENT, segment_of
from recsys.model.split import random_holdout
from recsys.model.topk import recommend
from recsys.tables import USER_KEY

K = 10
VALIDATION_SEED = 43  # the search's validation split inside the training part


def evaluate(spark: SparkSession, interactions: DataFrame, space: SearchSpace, *, max_trials: int,
             budget_s: float, k: int = K, segments: DataFrame | None = None) -> tuple[list[dict], list[TrialOutcome]]:
    """Metrics at `k` on the test pairs for both popularity baselines and the searched ALS, and
    the search's trials (scored on validation).
    """
    train, test = random_holdout(interactions.select(USER, ITEM, "confidence", USER_KEY))
    with Persisted() as keep:
        train, test = keep(train), keep(test)
        fit_part, validation = (keep(df) for df in random_holdout(train, seed=VALIDATION_SEED))
        n_items = interactions.select(ITEM).distinct().count()
        users = test.select(USER, USER_KEY).distinct()
        if segments is not None:
            users = users.join(segments, on=USER_KEY, how="left") \
                .withColumn(SEGMENT, segment_of(F.col("age_group"), F.col("country")))
        else:
            users = users.withColumn(SEGMENT, F.lit(UNKNOWN_SEGMENT))
        rows = []
        for name, recs in (("global popularity", popularity(train, users, k)),
                           ("segment popularity", popularity(train, users, k, segment=SEGMENT))):
            rows.append({"model": name, **ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM), "fit_s": 0.0})

        validation_users = validation.select(USER).distinct()

        def score(number: int, params: AlsParams) -> dict[str, float]:
            with configuration_failures(spark):
                model, _ = fit(fit_part, params)
                recs = recommend(model, validation_users, fit_part, k)
                return ranking_metrics(recs, validation, k, n_items, user=USER, item=ITEM)

        trials = run_search(space, score, max_trials=max_trials, budget_s=budget_s)
        done = [t for t in trials if t.metrics]
        if done:
            best = max(done, key=lambda t: (t.metrics or {})["ndcg"]).params
            model, seconds = fit(train, best)
            recs = recommend(model, users, train, k)
            label = f"ALS searched: rank {best.rank} reg {best.reg_param:.3g} alpha {best.alpha:.3g} {best.scaling}"
            rows.append({"model": label, **ranking_metrics(recs, test, k, n_items, user=USER, item=ITEM),
                         "fit_s": round(seconds, 1)})
    return rows, trials


def format_trials(trials: list[TrialOutcome]) -> str:
    """The search's trials as a fixed-width table."""
    lines = [f"{'trial':>5} {'rank':>4} {'reg':>7} {'alpha':>7} {'scaling':8} {'iter':>4} {'val NDCG':>8} {'s':>5}"]
    for t in trials:
        p = t.params
        value = f"{t.metrics['ndcg']:8.4f}" if t.metrics else f"failed: {t.failure}"
        lines.append(f"{t.number:5d} {p.rank:4d} {p.reg_param:7.3g} {p.alpha:7.3g} {p.scaling:8} {p.max_iter:4d} "
                     f"{value} {t.seconds:5.0f}")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """Benchmark rows (model and ranking metrics) as a fixed-width table."""
    head = f"{'model':60} {'NDCG@10':>8} {'P@10':>7} {'R@10':>7} {'MAP@10':>7} {'hit':>7} {'cover':>7} {'fit s':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:60} {r['ndcg']:8.4f} {r['precision']:7.4f} {r['recall']:7.4f} {r['map']:7.4f} "
                     f"{r['hit_rate']:7.4f} {r['coverage']:7.4f} {r['fit_s']:6.1f}")
    return "\n".join(lines)
