"""Click attribution on hand-written events, `gold/feedback` kept current from what silver added,
and the A/B statistics against known values."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import mlflow
import numpy as np
import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recsys import lake
from recsys.feedback.abtest import analyze, minimum_detectable_effect, sample_ratio, two_proportions, wilson
from recsys.feedback.attribution import attribute
from recsys.feedback.labels import Labelling, label_impressions
from recsys.tables import GOLD_ARTIST_STATS, GOLD_FEEDBACK, GOLD_USER_FEATURES, SILVER_EVENTS
from tests.conftest import declared_frame

T0 = datetime(2026, 11, 1, 12, 0, 0)
COLUMNS = ("event_id string, event_type string, event_time timestamp, event_date date, user_key string, "
           "artist_id string, request_id string, model_version string, variant string, position int, score double")


def _event(event_id, kind, seconds, user, artist, request, position=0):
    t = T0 + timedelta(seconds=seconds)
    return (event_id, kind, t, t.date(), user, artist, request, "1", "A", position, 0.5)


def test_clicks_are_attributed_to_their_impression_within_the_window(spark):
    events = [
        _event("i1", "impression", 0, "u1", "a1", "r1", 0),
        _event("i2", "impression", 0, "u1", "a2", "r1", 1),
        _event("i3", "impression", 0, "u1", "a3", "r1", 2),
        _event("i4", "impression", 0, "u2", "a1", "r2", 0),
        _event("i5", "impression", 0, "u3", "a1", "r3", 0),
        _event("i6", "impression", 0, "u4", "a1", "r4", 0),
        _event("c1", "click", 30, "u1", "a1", "r1"),        # clicked
        _event("c2", "click", 40, "u1", "a1", "r1"),        # a second click: still one clicked row
        _event("c3", "click", 30, "u1", "a2", "r9"),        # another request: not this impression
        _event("c4", "click", 1801, "u2", "a1", "r2"),      # after the 1800 s window
        _event("c5", "click", -20, "u3", "a1", "r3"),       # 20 s early: client clock skew, accepted
        _event("c6", "click", 10, "u9", "a1", "r4"),        # another user
    ]
    got = attribute(spark.createDataFrame(events, COLUMNS), 1800, 60).select("event_id", "clicked", "clicked_at")
    first_click, early_click = T0 + timedelta(seconds=30), T0 - timedelta(seconds=20)
    expected = spark.createDataFrame(
        [("i1", 1, first_click), ("i2", 0, None), ("i3", 0, None), ("i4", 0, None), ("i5", 1, early_click),
         ("i6", 0, None)], "event_id string, clicked int, clicked_at timestamp")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def _silver_append(spark, cfg, events, written: datetime) -> None:
    rows = spark.createDataFrame(events, COLUMNS)
    lake.append(declared_frame(rows, SILVER_EVENTS, _silver_at=written), SILVER_EVENTS.path(cfg.lake))


def _gold(spark, cfg, followers: int) -> None:
    """gold/artist_stats with every artist at `followers`, and one user's features."""
    artists = spark.createDataFrame([(a, followers) for a in ("a1", "a2")], "artist_id string, followers bigint")
    lake.overwrite(declared_frame(artists, GOLD_ARTIST_STATS), GOLD_ARTIST_STATS.path(cfg.lake))
    users = spark.createDataFrame([("u1", "25-34", "DE")], "user_key string, age_group string, country string")
    lake.overwrite(declared_frame(users, GOLD_USER_FEATURES), GOLD_USER_FEATURES.path(cfg.lake))


def _labels_equal_labelling_all_of_silver(spark, cfg) -> None:
    columns = ("event_id", "clicked", "clicked_at")
    kept = lake.read(spark, GOLD_FEEDBACK.path(cfg.lake)).select(*columns)
    silver = lake.read(spark, SILVER_EVENTS.path(cfg.lake))
    assert_df_equality(kept, attribute(silver, 1800, 60).select(*columns), ignore_row_order=True,
                       ignore_nullable=True)


def _followers(spark, cfg) -> dict[str, float]:
    rows = lake.read(spark, GOLD_FEEDBACK.path(cfg.lake)).select("event_id", "artist_followers").collect()
    return {r.event_id: r.artist_followers for r in rows}


def test_feedback_is_labelled_from_what_silver_added_and_keeps_the_features_it_was_labelled_with(spark, cfg):
    late = T0.replace(hour=23, minute=50)  # its click lands the next day, in a later silver run
    written = iter(datetime(2026, 11, 2, h) for h in range(6))
    _gold(spark, cfg, followers=10)
    _silver_append(spark, cfg, [_event("i1", "impression", 0, "u1", "a1", "r1", 0),
                                _event("i2", "impression", 0, "u1", "a2", "r1", 1),
                                _event("c1", "click", 60, "u1", "a1", "r1")], next(written))
    assert label_impressions(spark, cfg) == Labelling(2, 0, 0, "no labelling before it recorded what it read")
    _silver_append(spark, cfg, [("i3", "impression", late, late.date(), "u1", "a1", "r3", "1", "A", 0, 0.5)],
                   next(written))
    assert label_impressions(spark, cfg) == Labelling(1, 0, 0, None)
    _gold(spark, cfg, followers=999)  # gold moved on after these impressions were labelled

    click = late + timedelta(minutes=15)
    _silver_append(spark, cfg, [("c2", "click", click, click.date(), "u1", "a1", "r3", "1", "A", 0, 0.5)],
                   next(written))
    assert label_impressions(spark, cfg) == Labelling(0, 1, 0, None)  # i3, the day before, clicked now
    _silver_append(spark, cfg, [_event("c3", "click", 120, "u1", "a2", "r1"),
                                _event("i4", "impression", 0, "u1", "a2", "r4", 0),
                                _event("p1", "play", 0, "u2", "a1", None)], next(written))
    assert label_impressions(spark, cfg) == Labelling(1, 1, 0, None)  # i4 added; i2 clicked now
    _labels_equal_labelling_all_of_silver(spark, cfg)
    assert _followers(spark, cfg) == {"i1": 10.0, "i2": 10.0, "i3": 10.0, "i4": 999.0}

    version = lake.current_version(spark, GOLD_FEEDBACK.path(cfg.lake))
    _silver_append(spark, cfg, [_event("p2", "play", 0, "u2", "a2", None)], next(written))
    assert label_impressions(spark, cfg) == Labelling(0, 0, 0, None)  # nothing for feedback: no commit
    assert lake.current_version(spark, GOLD_FEEDBACK.path(cfg.lake)) == version

    with lake.erasure(spark):  # an erasure rewrote silver: the next run labels all of it again
        DeltaTable.forPath(spark, SILVER_EVENTS.path(cfg.lake)).delete(F.col("event_id").isin("i3", "c1"))
    done = label_impressions(spark, cfg)
    assert (done.inserted, done.relabelled, done.deleted) == (0, 1, 1)  # i3 gone, i1 no longer clicked
    assert "is a DELETE, not an append" in done.full_because
    _labels_equal_labelling_all_of_silver(spark, cfg)
    assert _followers(spark, cfg) == {"i1": 10.0, "i2": 10.0, "i4": 999.0}


def test_statistics_match_known_values():
    low, high = wilson(10, 100)
    assert (low, high) == (pytest.approx(0.0552, abs=1e-4), pytest.approx(0.1744, abs=1e-4))
    diff, z, p, ci_low, ci_high = two_proportions(100, 1000, 130, 1000)
    assert (diff, z, p) == (pytest.approx(0.03), pytest.approx(2.1028, abs=1e-3), pytest.approx(0.0355, abs=1e-3))
    assert ci_low < 0.03 < ci_high
    chi2, srm_p = sample_ratio({"A": 5000, "B": 5200}, {"A": 50, "B": 50})
    assert (chi2, srm_p) == (pytest.approx(3.9216, abs=1e-3), pytest.approx(0.0477, abs=1e-3))
    assert minimum_detectable_effect(0.1, 10000, 10000) == pytest.approx(0.011886, abs=1e-5)


def test_a_planted_difference_is_detected_and_an_a_a_test_is_not_too_often():
    rng = np.random.default_rng(11)
    n = 20000
    planted = analyze({"A": (5000, n, int(rng.binomial(n, 0.10))), "B": (5000, n, int(rng.binomial(n, 0.12)))},
                      {"A": 50, "B": 50}, "A", "B")
    assert planted.significant and planted.difference > 0 and not planted.srm and planted.mde < 0.02
    false_positives = sum(
        analyze({"A": (5000, n, int(rng.binomial(n, 0.1))), "B": (5000, n, int(rng.binomial(n, 0.1)))},
                {"A": 50, "B": 50}, "A", "B").significant for _ in range(400))
    assert false_positives / 400 < 0.08  # alpha = 0.05, with room for sampling noise


def test_a_sample_ratio_mismatch_voids_the_result():
    result = analyze({"A": (5000, 50000, 5000), "B": (5600, 56000, 6000)}, {"A": 50, "B": 50}, "A", "B")
    assert result.srm and result.srm_p_value < 1e-6


def _planted_feedback(spark, n=6000, seed=3):
    """Impressions over three days whose clicks follow the artist's followers (strongly) and the
    position (mildly); the ALS score is noise. The re-ranker must find exactly that."""
    rng = np.random.default_rng(seed)
    followers = rng.lognormal(8, 1.5, n)
    position = rng.integers(0, 10, n)
    z = (np.log1p(followers) - 8) / 1.5
    clicked = rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 1.6 * z - 0.12 * position)))
    rows = [(f"r{i // 10}", f"a{i}", f"u{i % 300}", T0.date() + timedelta(days=int(i * 3 // n)), int(position[i]),
             float(rng.random()), float(followers[i]), float(rng.integers(100, 5000)), None, 0.0, "25-34", "DE",
             int(clicked[i])) for i in range(n)]
    return spark.createDataFrame(rows, "request_id string, artist_id string, user_key string, event_date date, "
                                       "position int, score double, artist_followers double, artist_listeners double, "
                                       "trending_rank double, genre_overlap double, age_group string, country string, "
                                       "clicked int")


@pytest.mark.slow
def test_reranker_learns_a_planted_click_preference(spark, mlflow_cfg):
    from recsys.feedback.reranker import train_reranker
    from recsys.model.rerank import load_reranker, rerank

    report = train_reranker(spark, mlflow_cfg, _planted_feedback(spark))
    numeric = {k: v for k, v in report.weights.items() if k in ("score", "position", "log_followers", "log_listeners")}
    assert max(numeric, key=lambda k: abs(numeric[k])) == "log_followers" and numeric["log_followers"] > 0
    assert numeric["position"] < 0 and abs(numeric["score"]) < 0.1
    assert report.auc > 0.75 and report.ndcg_reranked > report.ndcg_als_order and report.promoted

    candidates = spark.createDataFrame(
        [("u1", "champion", 1, "quiet", 0.9, 10.0), ("u1", "champion", 2, "famous", 0.8, 1e6)],
        "user_key string, model_alias string, rank int, artist_id string, score double, artist_followers double",
    ).selectExpr("*", "100.0 as artist_listeners", "cast(null as double) as trending_rank", "0.0 as genre_overlap",
                 "'25-34' as age_group", "'DE' as country")
    reordered = rerank(load_reranker(mlflow_cfg), candidates).orderBy("rank").collect()
    assert [r.artist_id for r in reordered] == ["famous", "quiet"]


def test_too_few_days_of_feedback_fail_the_reranker_before_any_mlflow_run(spark, mlflow_cfg):
    from recsys.feedback.reranker import train_reranker

    cfg = dataclasses.replace(mlflow_cfg, rerank=dataclasses.replace(mlflow_cfg.rerank, holdout_days=3))
    with pytest.raises(ValueError, match=r"feedback spans 3 day\(s\); needs more than rerank.holdout_days = 3"):
        train_reranker(spark, cfg, _planted_feedback(spark, n=300))
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    assert experiment is not None and mlflow.search_runs([experiment.experiment_id]).empty
