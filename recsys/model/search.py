"""Hyperparameter search for implicit ALS: Optuna's TPE sampler within a trial count and a time budget.

The space is rank and iterations (choices), regParam and alpha (ranges, log scale) and the
confidence scaling (`recsys.model.als.SCALINGS`). The caller supplies `evaluate(number, params)`,
which trains and scores one configuration on the validation split (in `train.py`, as an MLflow
child run) and raises `TrialFailed` when the configuration cannot be trained; a failed trial is
kept with its reason and the search goes on.

Why Optuna: TPE learns from finished trials which regions score well, where the former fixed
grid spent its 4 trials on alpha 1 only, the value at which ALS on log confidences collapses to
popularity. It is seeded and sequential, so the same seed and scores give the same trials, and a
search cut short by `search_budget_s` (no trial but the first starts after it) is a prefix of the full one.
TPE is multivariate: rank, regParam and alpha interact (a larger rank
needs more regularisation), which independent per-parameter models miss; measured on Last.fm,
the independent sampler spent 14 of 18 trials on rank 32 and never tried rank 64 near the good
regParam and alpha. The first trial is `START`, a configuration that works on implicit listening data (generated
and Last.fm alike), clipped into the configured space, so even a budget of one trial is sensible.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from pyspark.sql import SparkSession

from recsys.config import ModelConfig
from recsys.model.als import AlsParams
from recsys.spark import jvm_log_level

log = logging.getLogger(__name__)

# TPE draws this many trials at random before it models good and bad regions. Optuna's default
# (10) suits long searches; with budgets of about a dozen trials it would leave TPE two.
STARTUP_TRIALS = 5
START = AlsParams(rank=64, reg_param=1.0, alpha=10.0, scaling="linear", max_iter=15)


class TrialFailed(Exception):
    """A configuration that could not be trained (numerical failure, out of memory, ...)."""


@contextmanager
def configuration_failures(spark: SparkSession) -> Iterator[None]:
    """Around training one configuration: the JVM prints no stack trace, and any error leaves as
    `TrialFailed` carrying its one-line reason (`failure_reason`).
    """
    try:
        with jvm_log_level(spark, "FATAL"):
            yield
    except Exception as err:  # one configuration's failure is data, not the end of the run
        raise TrialFailed(failure_reason(err)) from err


@dataclass(frozen=True)
class SearchSpace:
    """The hyperparameter space: choices for rank, iterations and scaling, log ranges for regParam and alpha."""
    ranks: tuple[int, ...]
    reg_param: tuple[float, float]
    alpha: tuple[float, float]
    scalings: tuple[str, ...]
    max_iters: tuple[int, ...]
    seed: int = 42
    bm25_k1: float = 100.0
    bm25_b: float = 0.8

    @classmethod
    def from_config(cls, m: ModelConfig) -> SearchSpace:
        """The space of `model.*` (lists and ranges already checked when the configuration loaded)."""
        return cls(ranks=tuple(m.ranks), reg_param=(m.reg_param_range[0], m.reg_param_range[-1]),
                   alpha=(m.alpha_range[0], m.alpha_range[-1]), scalings=tuple(m.scalings),
                   max_iters=tuple(m.max_iters), seed=m.seed, bm25_k1=m.bm25_k1, bm25_b=m.bm25_b)

    def params(self, rank: int, reg_param: float, alpha: float, scaling: str, max_iter: int) -> AlsParams:
        """A full `AlsParams` from the searched values and the space's fixed ones."""
        return AlsParams(rank=rank, reg_param=reg_param, alpha=alpha, scaling=scaling, max_iter=max_iter,
                         seed=self.seed, bm25_k1=self.bm25_k1, bm25_b=self.bm25_b)

    def suggest(self, trial: optuna.Trial) -> AlsParams:
        """The next configuration Optuna's sampler proposes for `trial`."""
        # rank as a position among the sorted choices: an ordered quantity, so a good rank lends
        # probability to its neighbours instead of being one unrelated category among four
        ranks = sorted(self.ranks)
        return self.params(
            rank=ranks[trial.suggest_int("rank_step", 0, len(ranks) - 1)],
            reg_param=trial.suggest_float("reg_param", *self.reg_param, log=True),
            alpha=trial.suggest_float("alpha", *self.alpha, log=True),
            scaling=trial.suggest_categorical("scaling", list(self.scalings)),
            max_iter=trial.suggest_categorical("max_iter", list(self.max_iters)),
        )

    def start(self) -> dict[str, object]:
        """`START` moved into this space: the nearest choice, the range's bound."""
        def nearest(values: tuple, target: float) -> int:
            return min(values, key=lambda v: (abs(v - target), v))

        return {"rank_step": sorted(self.ranks).index(nearest(self.ranks, START.rank)),
                "reg_param": min(max(START.reg_param, self.reg_param[0]), self.reg_param[1]),
                "alpha": min(max(START.alpha, self.alpha[0]), self.alpha[1]),
                "scaling": START.scaling if START.scaling in self.scalings else self.scalings[0],
                "max_iter": nearest(self.max_iters, START.max_iter)}


@dataclass(frozen=True)
class TrialOutcome:
    """One trial: its configuration, validation metrics (None when it failed), seconds and failure."""
    number: int
    params: AlsParams
    metrics: dict[str, float] | None  # None when the trial failed
    seconds: float
    failure: str | None = None


def run_search(space: SearchSpace, evaluate: Callable[[int, AlsParams], dict[str, float]], *, max_trials: int,
               budget_s: float, objective: str = "ndcg") -> list[TrialOutcome]:
    """Run up to `max_trials` trials, none but the first starting after `budget_s`; every trial,
    failed ones too.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours, below
    with warnings.catch_warnings():  # multivariate TPE is marked experimental; it is Optuna's advice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # for dependent parameters
        sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=STARTUP_TRIALS, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(space.start())
    outcomes: list[TrialOutcome] = []

    def run(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        started = time.monotonic()
        try:
            metrics = evaluate(trial.number, params)
        except TrialFailed as err:
            outcomes.append(TrialOutcome(trial.number, params, None, time.monotonic() - started, str(err)))
            log.info("trial %d failed: %s", trial.number, err)
            raise
        seconds = time.monotonic() - started
        outcomes.append(TrialOutcome(trial.number, params, metrics, seconds))
        log.info("trial %d: %s NDCG %.4f (%.0fs)", trial.number, _label(params), metrics[objective], seconds)
        return metrics[objective]

    started = time.monotonic()
    study.optimize(run, n_trials=1, catch=(TrialFailed,))  # the start always runs
    left = budget_s - (time.monotonic() - started)
    if max_trials > 1 and left > 0:
        study.optimize(run, n_trials=max_trials - 1, timeout=left, catch=(TrialFailed,))
    return outcomes


def _label(p: AlsParams) -> str:
    return f"rank {p.rank} reg {p.reg_param:.3g} alpha {p.alpha:.3g} {p.scaling} {p.max_iter} it"


def failure_reason(err: BaseException) -> str:
    """One line for a failed fit: the root Java exception for Spark failures, else the Python one."""
    java = getattr(err, "java_exception", None)
    if java is not None:
        while java.getCause() is not None:
            java = java.getCause()
        name, message = java.getClass().getSimpleName(), str(java.getMessage() or "")
    else:
        name, message = type(err).__name__, str(err)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{name}: {first}"[:300] if first else name
