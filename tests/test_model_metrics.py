"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from recsys.model.metrics import metric_curves, per_user_metrics, ranking_metrics

RECS = [("A", "x", 1), ("A", "y", 2), ("A", "z", 3), ("A", "v", 4), ("B", "p", 1), ("B", "q", 2), ("D", "x", 1)]
TRUTH = [("A", "y"), ("A", "w"), ("B", "p"), ("C", "m")]


@pytest.fixture
def frames(spark):
    return (spark.createDataFrame(RECS, "user string, item string, rank int"),
            spark.createDataFrame(TRUTH, "user string, item string"))


def test_per_user_metrics_match_hand_computation(frames):
    recs, truth = frames
    got = {r.user: r for r in per_user_metrics(recs, truth, k=3).collect()}
    assert set(got) == {"A", "B", "C"}
    a, b, c = got["A"], got["B"], got["C"]
    assert (a.precision, a.recall, a.hit_rate) == (pytest.approx(1 / 3), 0.5, 1.0)
    assert a.ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert a.map == pytest.approx(0.5 / 2)
    assert (b.precision, b.recall, b.ndcg, b.map, b.hit_rate) == (pytest.approx(1 / 3), 1.0, 1.0, 1.0, 1.0)
    assert (c.precision, c.recall, c.ndcg, c.map, c.hit_rate) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_averages_and_coverage(frames):
    recs, truth = frames
    m = ranking_metrics(recs, truth, k=3, n_items=10)
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m == pytest.approx({"precision": 2 / 9, "recall": 0.5, "ndcg": (ndcg_a + 1) / 3, "map": 1.25 / 3,
                               "hit_rate": 2 / 3, "coverage": 0.5})


def test_inputs_are_validated_up_front(spark, frames):
    recs, truth = frames
    with pytest.raises(ValueError, match=r"recommendations lacks columns \['rank'\]"):
        per_user_metrics(recs.drop("rank"), truth, k=3)


def test_curves_agree_with_metrics_at_every_k(frames):
    recs, truth = frames
    curves = metric_curves(recs, truth, max_k=5)
    assert [c["k"] for c in curves] == [1, 2, 3, 4, 5]
    for c in curves:
        at_k = ranking_metrics(recs, truth, k=c["k"], n_items=10)
        assert c == pytest.approx({"k": c["k"], **{m: at_k[m] for m in ("precision", "recall", "ndcg")}})
