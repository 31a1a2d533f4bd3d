"""A real Spark standalone cluster: a master and two 1-core workers from the installed pyspark, the
scheduler's chain (`jobs/refresh.py`) sent with `spark-submit --py-files <wheel> --jars .jars/*`,
exactly as the README says, with Spark's adaptive execution on (the test config turns it off). The
silver and gold tables it writes equal a `local[2]` run of the same stages on the same files, also
though an executor JVM is killed (SIGKILL) in the middle of silver; it trains, recommends and
publishes there too, and the API serves the published lists. Every process started here is stopped
at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyspark
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.config import AuthConfig, LakeConfig, PrivacyConfig
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.experiment import assign
from recsys.gold.build import build_gold
from recsys.keys import pseudonym
from recsys.model.batch import flat
from recsys.orchestration.forget import forget_requested
from recsys.serving.auth import bearer
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from tests.conftest import ROOT, isolated

SPARK_HOME = Path(pyspark.__file__).parent
SPEC = GeneratorSpec(users=120, artists=130, days=1, dirt_rate=0.05, future_days=0, seed=41)
AS_OF = "2026-10-02T00:00:00+00:00"
SECRET = "cluster-secret"
JWT_SECRET = "cluster-test-jwt-key-of-32-bytes-at-least"
COMPARED = {"silver": ("events", "events_quarantine", "users", "artists", "tracks"),
            "gold": ("artist_stats", "track_stats", "user_features", "interactions", "id_map_users",
                     "id_map_artists")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as answer:  # noqa: S310
            return int(json.load(answer)["aliveworkers"])
    except (OSError, ValueError, KeyError):  # not up yet; its UI may answer HTML before the JSON is mounted
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    work = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "RECSYS_ENV": "test",
           "RECSYS__PRIVACY__PSEUDONYM_SECRET": SECRET, "RECSYS__AUTH__JWT_SECRET": JWT_SECRET}
    port, ui = _free_port(), _free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    processes = [_spawn([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui)], work / "master.log", env)]
    try:
        for i in range(2):
            processes.append(_spawn(
                [spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--cores", "1",
                 "--memory", "2g", "--host", "127.0.0.1", "--webui-port", str(_free_port()),
                 "--work-dir", str(work / f"worker{i}")], work / f"worker{i}.log", env))
        deadline = time.monotonic() + 90
        while _alive_workers(ui) < 2:
            assert time.monotonic() < deadline, (work / "master.log").read_text()[-3000:]
            time.sleep(0.5)
        subprocess.run([str(ROOT / ".venv" / "bin" / "uv"), "build", "--wheel", "-q", "-o", str(work / "dist")],
                       cwd=ROOT, check=True, capture_output=True)
        yield f"spark://127.0.0.1:{port}", env, work
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _submit(cluster, cfg, job: str, *args: str) -> subprocess.Popen:
    master, env, work = cluster
    wheel = next((work / "dist").glob("recsys-*.whl"))
    jars = ",".join(str(p) for p in sorted((ROOT / ".jars").glob("*.jar")))
    command = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master, "--py-files", str(wheel),
               "--jars", jars, "--conf", "spark.executor.memory=1g", "--conf", "spark.executor.cores=1",
               # Delta rebuilds a table's state with 50 tasks by default: on this lake of a few files,
               # measured as about half of each job's time on the two 1-core workers.
               "--conf", "spark.databricks.delta.snapshotPartitions=2",
               str(ROOT / "jobs" / job), "--env", "test", "--set", "spark.master=", "--set", "spark.jars_dir=",
               "--set", f"lake.root={cfg.lake.root}", "--set", f"landing.path={cfg.landing.path}",
               "--set", f"postgres.database={cfg.postgres.database}", "--set", "ingest.max_files_per_trigger=16",
               "--set", f"gold.redis_prefix={cfg.gold.redis_prefix}",
               # Adaptive execution, Spark's default, which the test config turns off for the local runs:
               # the cluster plans as production does, and must still give the local run's tables.
               "--set", "spark.conf.spark.sql.adaptive.enabled=true", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(job: subprocess.Popen) -> str:
    output, _ = job.communicate(timeout=1500)
    assert job.returncode == 0, output[-4000:]
    return output


def _executors() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True,
                           check=False)
    return [int(pid) for pid in found.stdout.split()]


def _kill_an_executor_while(job: subprocess.Popen, events_log: Path, killed: list[int]) -> None:
    """Once silver has appended its first events (version 1; version 0 is the empty table), with more
    to do, SIGKILL one of the job's executor JVMs (not its worker, which starts a new one)."""
    deadline = time.monotonic() + 1200
    while job.poll() is None and time.monotonic() < deadline:
        executors = _executors()
        if len(executors) >= 2 and (events_log / f"{1:020d}.json").exists():
            os.kill(executors[0], signal.SIGKILL)
            killed.append(executors[0])
            return
        time.sleep(0.2)


def _comparable(df: DataFrame) -> DataFrame:
    """Lineage columns (`_...`) dropped; every other value is compared exactly, doubles too: gold's
    sums and standard deviations do not depend on the order of the partitions."""
    return df.select([c for c in df.columns if not c.startswith("_")])


@pytest.mark.slow
def test_the_chain_on_a_standalone_cluster_equals_local_also_when_an_executor_dies(services, spark, cluster,
                                                                                 tmp_path):
    local = dataclasses.replace(isolated(services, tmp_path, "cluster"),
                                privacy=PrivacyConfig(pseudonym_secret=SECRET))
    on_cluster = dataclasses.replace(local, lake=LakeConfig(root=str(tmp_path / "cluster-lake")))
    generate(local.landing.path, SPEC, on_accounts=lambda rows: upsert_accounts(local.postgres, rows))
    model = ("--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "--set", "mlflow.experiment=cluster",
             "--set", f"model.name=cluster-{tmp_path.name}", "--set", "model.trials=1",
             "--set", "model.min_lift=-1", "--set", "model.min_coverage=0",  # promote on 120 users
             "--set", f"publish.prefix={on_cluster.publish.prefix}")

    # The whole chain in one submit, as a scheduler runs it: one driver, so one start-up on the workers.
    refresh_job = _submit(cluster, on_cluster, "refresh.py", "--now", AS_OF, *model)
    killed: list[int] = []
    events_log = Path(lake.table_path(on_cluster.lake, "silver", "events")) / "_delta_log"
    killer = threading.Thread(target=_kill_an_executor_while, args=(refresh_job, events_log, killed))
    killer.start()
    output = _finish(refresh_job)
    killer.join()
    assert killed, "no executor was killed during silver: it committed no events while two executors ran"
    stages = [line.removeprefix("refresh: ")[:15].rstrip() for line in output.splitlines()
              if line.startswith("refresh: ")]
    assert stages == ["bronze events", "bronze accounts", "forget", "silver", "gold", "feature store", "train",
                      "recommend", "publish"], output[-4000:]

    # The same stages up to gold in this process (local[2]), with the refresh's clock and users.
    cfg, now = local, datetime.fromisoformat(AS_OF)
    ingest_events(spark, cfg)
    ingest_accounts(spark, cfg, run_id="local")
    forget_requested(spark, cfg)
    build_silver(spark, cfg, run_id="local", now=now)
    users = lake.current_version(spark, lake.table_path(cfg.lake, "silver", "users"))
    build_gold(spark, cfg, as_of=now, users_version=users)

    for layer, names in COMPARED.items():
        for name in names:
            a, b = (lake.read(spark, lake.table_path(c.lake, layer, name)) for c in (cfg, on_cluster))
            a, b = _comparable(a), _comparable(b)
            assert a.count() > 0, f"{layer}/{name} is empty"
            assert (a.exceptAll(b).count(), b.exceptAll(a).count()) == (0, 0), f"{layer}/{name} differs"

    _serving_the_cluster_lists(spark, cluster, on_cluster, model)


def _serving_the_cluster_lists(spark, cluster, cfg, model: tuple[str, ...]) -> None:
    """The API serves a user the list the cluster's refresh trained, recommended and published."""
    lists = flat(lake.read(spark, lake.table_path(cfg.lake, "gold", "recommendations")))
    served = {(r.user_key, r.model_alias) for r in lists.select("user_key", "model_alias").distinct().collect()}
    user_id, user_key, alias = next(  # a user whose A/B variant's model has a list
        (i, k, assign(cfg.experiment, k).alias) for i, k in ((str(1000 + u), pseudonym(SECRET, str(1000 + u)))
                                                               for u in range(SPEC.users))
        if (k, assign(cfg.experiment, k).alias) in served)
    expected = [r.artist_id for r in lists.filter((F.col("user_key") == user_key) & (F.col("model_alias") == alias))
                .orderBy("rank").collect()]

    port = _free_port()
    master, env, work = cluster
    api = _spawn([sys.executable, str(ROOT / "jobs" / "serve.py"), "--env", "test",
                  "--set", f"serving.port={port}", "--set", f"publish.prefix={cfg.publish.prefix}",
                  "--set", f"landing.path={cfg.landing.path}", *model], work / "api.log", env)
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None:
            assert api.poll() is None and time.monotonic() < deadline, (work / "api.log").read_text()[-3000:]
            try:
                url = f"http://127.0.0.1:{port}/v1/users/{user_id}/recommendations?k={len(expected)}"
                request = urllib.request.Request(url, headers=bearer(AuthConfig(), JWT_SECRET, user_id))
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    answer = json.load(response)
            except OSError:
                time.sleep(0.5)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)
    assert [item["artist_id"] for item in answer["items"]] == expected
