"""Lake maintenance: compact small files (OPTIMIZE) and delete unreferenced old files (VACUUM).

The retention rule: VACUUM keeps every file a version younger than `lake.retention_hours` needs,
so time travel works that far back and no further. Two readers rely on time travel: the monitor
compares current tables with a reference version (the champion's training inputs, or the previous
version), and gold reads `silver/users` as it was at `as_of` (and `build_gold --silver-version`
replays an old silver). Before vacuuming, `required_retention_hours` finds the oldest version the
monitor's reference needs; a retention shorter than its age is refused with the table, version and
hours named. Replays and point-in-time builds further back than the retention are not possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from delta.tables import DeltaTable
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.model.train import CHAMPION
from recsys.tables import TABLES
from recsys.tracking import setup_mlflow


class RetentionTooShort(ValueError):
    """`lake.retention_hours` would delete files a time-travel reader still needs."""


@dataclass(frozen=True)
class Maintained:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    vacuumed: int


def _referenced_versions(spark: SparkSession, cfg: Config) -> dict[str, int]:
    """`layer/name` -> the oldest version of it the monitor's reference reads."""
    if cfg.monitor.reference == "previous":
        found = {}
        for name, table in TABLES.items():
            path = table.path(cfg.lake)
            if lake.exists(spark, path):
                found[name] = max(lake.current_version(spark, path) - 1, 0)
        return found
    setup_mlflow(cfg)
    try:
        run_id = MlflowClient().get_model_version_by_alias(cfg.model.name, CHAMPION).run_id
    except MlflowException:
        return {}  # no champion yet: nothing is referenced
    params = mlflow.get_run(run_id).data.params if run_id else {}
    return {key.removeprefix("input_version."): int(value) for key, value in params.items()
            if key.startswith("input_version.") and key.removeprefix("input_version.") in TABLES}


def required_retention_hours(spark: SparkSession, cfg: Config, now: datetime) -> tuple[float, str]:
    """The retention the monitor's reference needs, and which table version needs it ("" for none)."""
    needed, because = 0.0, ""
    for name, version in _referenced_versions(spark, cfg).items():
        path = TABLES[name].path(cfg.lake)
        committed = (DeltaTable.forPath(spark, path).history().filter(F.col("version") == version)
                     .select("timestamp").collect())
        if committed:
            age = (now - committed[0][0].replace(tzinfo=UTC)).total_seconds() / 3600
            if age > needed:
                needed, because = age, f"{name} v{version} (monitor.reference = {cfg.monitor.reference})"
    return needed, because


def maintain(spark: SparkSession, cfg: Config, now: datetime | None = None) -> list[Maintained]:
    """Compact and vacuum every declared table that exists; refuses a too short retention first."""
    now = now or datetime.now(UTC)
    retention = cfg.lake.retention_hours
    needed, because = required_retention_hours(spark, cfg, now)
    if retention < needed:
        raise RetentionTooShort(f"lake.retention_hours = {retention:g} would delete files of {because}, "
                                f"which is {needed:.2f} h old; keep at least that")
    done = []
    # Delta refuses retentions under 7 days unless told the caller checked: the check is above.
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for name, table in TABLES.items():
            path = table.path(cfg.lake)
            if not lake.exists(spark, path):
                continue
            before = _files(spark, path)
            DeltaTable.forPath(spark, path).optimize().executeCompaction()
            doomed = spark.sql(f"VACUUM delta.`{path}` RETAIN {retention} HOURS DRY RUN").count()
            DeltaTable.forPath(spark, path).vacuum(retention)
            done.append(Maintained(name, before, _files(spark, path), doomed))
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    return done


def _files(spark: SparkSession, path: str) -> int:
    return int(DeltaTable.forPath(spark, path).detail().select("numFiles").collect()[0][0])
