"""Shared fixtures: one SparkSession for the whole run, real PostgreSQL, Redis and MLflow.

The servers are the ones `conf/test.yaml` points at; they are started here when nothing
answers (the same code as `make services-up`), so `pytest` works on a fresh checkout.

`make test` runs the modules on two pytest-xdist workers (`--dist loadfile`: a module's tests
stay together and in order on one worker). Each worker is a process with its own SparkSession,
temporary folders and MLflow store, and here gets a PostgreSQL database and a Redis db of its
own; the two share only the servers, which the first worker to get there starts.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RECSYS_ENV", "test")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# Set in the environment, not only in the fixtures' config, so that the jobs the tests start as
# subprocesses (`--env test`) use the worker's stores too.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under xdist; unset otherwise
if WORKER:
    os.environ["RECSYS__POSTGRES__DATABASE"] = f"recsys_test_{WORKER}"
    os.environ["RECSYS__REDIS__DB"] = str(1 + int(WORKER.removeprefix("gw")))  # db 0 is the unsplit run's
    # A worker's __main__ is execnet's `python -c` bootstrap, with no file. PySpark takes that for
    # its own doctest run and exits (status 0) on the first import of `pyspark.sql.connect`, which
    # MLflow makes when it logs a Spark model. The worker runs this package's tests: say so.
    main = sys.modules["__main__"]
    if getattr(main, "__spec__", None) is None and not hasattr(main, "__file__"):
        main.__file__ = __file__

from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from recsys.config import Config, LakeConfig, LandingConfig, MlflowConfig, load_config  # noqa: E402
from recsys.services import services_up  # noqa: E402
from recsys.tables import Table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LASTFM_DIR = ROOT.parent / "shared" / "data" / "lastfm-2k"
CONTRACTS_DIR = ROOT.parent / "shared" / "contracts"


# The modules that take longest (their tests' times in `make test`'s durations), run first: the
# two workers then share out the short ones at the end instead of one ending on a long module alone.
LONGEST_FIRST = ("test_cluster.py", "test_pii_scan.py", "test_refresh.py", "test_gold_e2e.py", "test_incremental.py",
                 "test_ingest_crash.py", "test_notebooks.py", "test_lastfm_silver.py", "test_lakehouse_e2e.py",
                 "test_model_train.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's tests keep their order


def declared_frame(df: DataFrame, table: Table, **values: object) -> DataFrame:
    """`df` with `table`'s declared columns: its own cast, `values` as literals, the rest NULL."""
    return df.select([(F.col(f.name) if f.name in df.columns else F.lit(values.get(f.name))).cast(f.dataType)
                      .alias(f.name) for f in table.schema.fields])


def isolated(cfg: Config, root: Path, name: str) -> Config:
    """`cfg` with stores of its own: a lake and landing zone under `root`, a fresh PostgreSQL
    database `recsys_test_<name>` and Redis key prefixes of its own, so a module that changes its
    data (deletes an account, reruns a job) cannot change what another module sees.
    """
    from recsys.stores.postgres import fresh_database

    postgres = dataclasses.replace(cfg.postgres, database=f"recsys_test_{name}")
    fresh_database(postgres)
    return dataclasses.replace(
        cfg,
        lake=LakeConfig(root=str(root / "lake")),
        landing=LandingConfig(path=str(root / "landing")),
        postgres=postgres,
        gold=dataclasses.replace(cfg.gold, redis_prefix=f"test-{name}"),
        publish=dataclasses.replace(cfg.publish, prefix=f"test-{name}"),
    )


@pytest.fixture(scope="session")
def base_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The test config, with MLflow in a store of this run's own."""
    cfg = load_config("test")
    store = tmp_path_factory.mktemp("mlflow")
    return dataclasses.replace(
        cfg,
        mlflow=dataclasses.replace(cfg.mlflow, tracking_uri=f"sqlite:///{store / 'mlflow.db'}"),
    )


@pytest.fixture(scope="session")
def services(base_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    # The workers' temporary folders share a parent; the lock there keeps two workers from both
    # finding no server and starting one each.
    lock = tmp_path_factory.getbasetemp().parent / "services.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        services_up(base_cfg)
    return base_cfg


@pytest.fixture(scope="session")
def spark(base_cfg: Config, tmp_path_factory: pytest.TempPathFactory):
    from recsys.spark import get_spark

    scratch = tmp_path_factory.mktemp("spark")
    spark_cfg = dataclasses.replace(
        base_cfg.spark,
        conf={**base_cfg.spark.conf, "spark.sql.warehouse.dir": str(scratch / "warehouse")},
    )
    session = get_spark(spark_cfg, app_name="recsys-tests")
    session.sparkContext.setCheckpointDir(str(scratch / "checkpoints"))
    yield session
    session.stop()


def persisted_rdds(spark) -> dict[int, str]:
    """The session's persisted RDDs by id, with their names; Delta's own caches of the tables' state it
    read ("Delta Table State #n") left out: Delta manages those."""
    return {int(k): str(v) for k, v in spark.sparkContext._jsc.getPersistentRDDs().items()
            if not str(v).startswith("Delta Table State")}


@pytest.fixture(scope="module", autouse=True)
def _drop_caches_after_module() -> Iterator[None]:
    """After each module, drop what the session still caches for tables that module made: cached
    DataFrames and Delta's table-log cache (each table's snapshot, its state and plans).

    Every module builds lakes of its own under a temporary folder, so nothing later reads them.
    Without this the one session's live heap grew past 760 MB (of the 2 GB it then had), and a
    broadcast in `test_refresh` ran out of memory in CI; after `test_gold_rules.py` alone the live
    heap went from 273 MB to 97 MB once both caches were dropped.
    """
    yield
    from pyspark.sql import SparkSession

    from recsys.spark import jvm

    session = SparkSession.getActiveSession()
    if session is not None:
        session.catalog.clearCache()
        jvm(session).org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.fixture
def cfg(services: Config, tmp_path: Path) -> Config:
    """The test config with a lake and landing zone of this test's own."""
    return dataclasses.replace(
        services,
        lake=LakeConfig(root=str(tmp_path / "lake")),
        landing=LandingConfig(path=str(tmp_path / "landing")),
    )


@pytest.fixture
def mlflow_cfg(cfg: Config, tmp_path: Path) -> Iterator[Config]:
    """A config whose MLflow experiment is new for this test."""
    yield dataclasses.replace(cfg, mlflow=MlflowConfig(
        tracking_uri=cfg.mlflow.tracking_uri, experiment=f"test-{tmp_path.name}",
    ))
