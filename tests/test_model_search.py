"""The hyperparameter search: its space from config, a known-good start, determinism, budgets,
and failed trials that are recorded while the search goes on."""

from __future__ import annotations

import pytest

from recsys.config import ConfigError, load_config
from recsys.model.als import AlsParams, fit
from recsys.model.search import START, SearchSpace, TrialFailed, failure_reason, run_search

SPACE = SearchSpace.from_config(load_config("test", ["model.ranks=8,16,64", "model.reg_param_range=0.01,10",
                                                     "model.alpha_range=1,100", "model.scalings=linear,bm25",
                                                     "model.max_iters=5,10"]).model)


def _score(number: int, p: AlsParams) -> dict[str, float]:
    """A stand-in objective with a known optimum (rank 16, alpha near 20): what is tested here is
    the search's bookkeeping; ALS itself is trained in the tests of `train` and `als`."""
    return {"ndcg": 1.0 / (1 + abs(p.rank - 16) + abs(p.alpha - 20) / 10)}


def test_config_lists_and_ranges_become_the_space_and_bad_ones_fail_at_load_naming_their_key():
    assert SPACE.ranks == (8, 16, 64) and SPACE.reg_param == (0.01, 10.0) and SPACE.scalings == ("linear", "bm25")
    assert SearchSpace.from_config(load_config("test", ["model.reg_param_range=0.5"]).model).reg_param == (0.5, 0.5)
    for field, value, message in (("ranks", "32,x", "model.ranks: expected int, got 'x'"),
                                  ("ranks", " , ", "model.ranks: empty"),
                                  ("alpha_range", "10,1", "model.alpha_range: \\[10.0, 1.0\\] must be"),
                                  ("reg_param_range", "0,1", "model.reg_param_range"),
                                  ("scalings", "linear,tfidf",
                                   "model.scalings: 'tfidf' is not one of linear, log, bm25")):
        with pytest.raises(ConfigError, match=message):
            load_config("test", [f"model.{field}={value}"])


def test_the_first_trial_is_the_known_good_start_moved_into_the_space():
    trials = run_search(SPACE, _score, max_trials=1, budget_s=60)
    p = trials[0].params
    assert (p.rank, p.reg_param, p.alpha, p.scaling, p.max_iter) == (64, 1.0, 10.0, "linear", 10)
    assert START.max_iter == 15  # 10 is the nearest allowed choice


def test_same_seed_same_trials_and_a_budget_cut_is_a_prefix():
    full = run_search(SPACE, _score, max_trials=8, budget_s=60)
    again = run_search(SPACE, _score, max_trials=8, budget_s=60)
    assert [t.params for t in full] == [t.params for t in again]
    assert len({t.params for t in full}) == 8
    cut = run_search(SPACE, _score, max_trials=8, budget_s=0)  # the start runs, no trial after the budget
    assert [t.params for t in cut] == [t.params for t in full[:len(cut)]] and len(cut) == 1


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on():
    def flaky(number: int, p: AlsParams) -> dict[str, float]:
        if number == 1:
            raise TrialFailed("SingularMatrixException: A is not positive definite")
        return _score(number, p)

    trials = run_search(SPACE, flaky, max_trials=4, budget_s=60)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert trials[1].metrics is None and trials[1].failure.startswith("SingularMatrixException")
    assert all(t.metrics for t in trials if t.number != 1)


def test_a_spark_failure_reads_as_its_root_java_exception(spark):
    only_skips = spark.createDataFrame([(u, a, 0.0) for u in range(3) for a in range(3)],
                                       "user_idx int, artist_idx int, confidence double")
    with pytest.raises(Exception) as caught:
        fit(only_skips, AlsParams(rank=4, max_iter=2))
    assert failure_reason(caught.value).startswith("IllegalArgumentException: requirement failed: No ratings")
    assert "\n" not in failure_reason(caught.value)
