"""MLflow: a local SQLite store under the state folder by default, any tracking URI by config."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pyspark
from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

from recsys.config import Config

# Passed explicitly to `mlflow.spark.log_model`: inferring them starts a second Spark JVM
# (measured 25-36 s per model against ~2 s).
SPARK_MODEL_REQUIREMENTS = [f"pyspark=={pyspark.__version__}"]


def tracking_uri(cfg: Config) -> str:
    """The MLflow tracking URI: configured, else a SQLite file under the state directory."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return f"sqlite:///{Path(cfg.services.state_dir) / 'mlflow' / 'mlflow.db'}"


def artifact_root(cfg: Config) -> str:
    """Where MLflow keeps artifacts when the store is local."""
    return str(Path(cfg.services.state_dir) / "mlflow" / "artifacts")


@contextmanager
def quiet_registry() -> Iterator[None]:
    """Silence MLflow's own "Created version ..." prints around `mlflow.register_model`.

    recsys reports the version itself. Not around `log_model`: its autologging guard switches
    MLflow's event stream back on.
    """
    before = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = before


def setup_mlflow(cfg: Config) -> str:
    """Point MLflow at the configured store and make the configured experiment the active one
    (every run that follows lands there); return the experiment id.
    """
    # MLflow logs store migrations and artifact lookups at INFO; recsys reports runs and versions itself.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(cfg.mlflow.registry_uri or uri)
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        location = None if cfg.mlflow.tracking_uri else Path(artifact_root(cfg)).as_uri()
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
