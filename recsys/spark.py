"""The one SparkSession factory: Delta Lake enabled, jars from the local `.jars/` folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recsys.config import ConfigError, SparkConfig

LOG4J2 = Path(__file__).with_name("log4j2.properties")  # quiet, one-line JVM logging (see the file)
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

# Small-machine defaults a user can override through `spark.conf`. Delta reconstructs table
# state with 50 tasks by default, which dominates the run time of small local tables.
LOCAL_DEFAULTS = {
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.enabled": "true",
}


def jvm(spark: SparkSession) -> Any:
    """The driver's JVM gateway (py4j), for the few calls PySpark does not wrap."""
    gateway = spark.sparkContext._jvm
    if gateway is None:
        raise RuntimeError("the SparkSession has no JVM (stopped?)")
    return gateway


def jar_paths(jars_dir: str) -> list[str]:
    """The jars `make jars` resolved, or [] when the platform provides Delta and JDBC itself."""
    if not jars_dir:
        return []
    jars = sorted(str(p) for p in Path(jars_dir).glob("*.jar"))
    if not jars:
        raise ConfigError(
            f"spark.jars_dir: no jars in {jars_dir} (run `make jars`, or set spark.jars_dir "
            "to an empty string when the platform provides Delta Lake and the JDBC driver)"
        )
    return jars


def get_spark(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Return the active session or build one with Delta Lake, the configured jars and conf.

    An empty `master` leaves it to spark-submit, so the same job runs locally and on a cluster.
    """
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    if cfg.master:
        builder = builder.master(cfg.master)
        if cfg.master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's pandas
            builder = builder.config("spark.driver.memory", cfg.driver_memory)
            for key, value in LOCAL_DEFAULTS.items():
                builder = builder.config(key, value)
    jars = jar_paths(cfg.jars_dir)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    builder = (
        builder.config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        # VACUUM lists a table's folders with this many tasks (default 10,000): measured 14 s for a
        # two-file table at the default, 2.5 s at 8.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")  # every timestamp in recsys is UTC
        .config("spark.ui.enabled", str(cfg.ui_enabled).lower())
        .config("spark.hadoop.fs.permissions.umask-mode", "077")  # lake files (bronze holds PII): owner only
        # New tables keep no min/max column statistics in their transaction log: they would copy user
        # values (ids, emails, keys) into log files that outlive forgetting; recsys prunes by partitions.
        .config("spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols", "0")
    )
    if "spark.driver.extraJavaOptions" not in cfg.conf:
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J2}")
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


@contextmanager
def jvm_log_level(spark: SparkSession, level: str) -> Iterator[None]:
    """Set the JVM's log level for a block, then restore it. For failures the caller handles
    and reports in one line (a search trial that cannot be trained): without it, every failed
    task prints its Java stack trace from the executor and the task manager.
    """
    root = jvm(spark).org.apache.logging.log4j.LogManager.getRootLogger()
    before = str(root.getLevel().toString())
    spark.sparkContext.setLogLevel(level)
    try:
        yield
    finally:
        spark.sparkContext.setLogLevel(before)
