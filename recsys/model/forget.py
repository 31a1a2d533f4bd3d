"""Forgetting users in what training logged to MLflow: each run's `id_maps/id_map_users.parquet`
(user_key -> user_idx) and the ALS model's `userFactors` (user_idx -> factors).

Artifacts are files under the run's artifact location, which must be a file system Spark and
Python can write (the default local store, or a mounted path); MLflow's API can add artifacts
but not remove a file, and a Spark model directory is many part files. For every run of the
experiment whose id map holds a forgotten key: the factors are rewritten first, without those
users' rows (written beside, then swapped in), then the id map. A crash in between leaves the
id map intact, so a rerun finds the same users again.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.tables import USER_KEY
from recsys.tracking import setup_mlflow

ID_MAP = "id_map_users.parquet"
FACTORS = "userFactors"


def local_artifacts(artifact_uri: str) -> Path:
    """The folder of a run's artifacts; only file-system locations can have files removed."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"cannot forget users in MLflow artifacts at {parsed.scheme}:// locations: "
                         "forgetting rewrites model files in place, which needs a file-system artifact root")
    return Path(parsed.path)


def _replace_dir(spark: SparkSession, folder: Path, gone_ids: list[int]) -> None:
    """Rewrite a Spark parquet folder without the rows whose `id` is in `gone_ids`."""
    fresh = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    rows = spark.read.parquet(str(folder))
    rows.filter(~F.col("id").isin(gone_ids)).coalesce(max(1, len(list(folder.glob("part-*"))))) \
        .write.parquet(str(fresh))
    old = folder.with_name(f".{folder.name}.old.{uuid.uuid4().hex}")
    folder.rename(old)
    fresh.rename(folder)
    shutil.rmtree(old)


def forget_in_models(spark: SparkSession, cfg: Config, user_keys: set[str]) -> int:
    """Remove `user_keys` from every logged id map and ALS model of the experiment; runs rewritten."""
    experiment_id = setup_mlflow(cfg)
    rewritten = 0
    for run in mlflow.search_runs(experiment_ids=[experiment_id], output_format="list"):
        root = local_artifacts(run.info.artifact_uri)
        for id_map in sorted(root.rglob(ID_MAP)):
            frame = pd.read_parquet(id_map)
            gone = frame[USER_KEY].isin(user_keys)
            if not gone.any():
                continue
            ids = [int(i) for i in frame.loc[gone, "user_idx"]]
            for factors in sorted(root.rglob(FACTORS)):
                if factors.is_dir():
                    _replace_dir(spark, factors, ids)
            fresh = id_map.with_name(f".{id_map.name}.{uuid.uuid4().hex}")
            frame[~gone].to_parquet(fresh, index=False)
            fresh.replace(id_map)
            rewritten += 1
    return rewritten
