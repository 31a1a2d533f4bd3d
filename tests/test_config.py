"""Configuration: precedence file < environment < --set, and one clear line for every mistake."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from recsys.cli import EXIT_CONFIG, EXIT_SERVICE, job_parser, run_job, utc_time
from recsys.config import ConfigError, load_config
from recsys.endpoints import Endpoint, ServiceUnavailable
from recsys.stores import postgres, redis
from tests.conftest import ROOT

CONF = """
spark:
  master: local[1]
  shuffle_partitions: 3
postgres:
  port: 15432
lake:
  root: lake-here
"""


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "dev.yaml"
    path.write_text(CONF)
    return path


def test_file_values_are_typed_and_defaults_fill_the_rest(conf_file):
    cfg = load_config(config_file=conf_file, environ={})
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.spark.master == "local[1]"
    assert cfg.redis.db == 0


def test_environment_overrides_file_and_set_overrides_both(conf_file):
    environ = {"RECSYS__SPARK__SHUFFLE_PARTITIONS": "5", "RECSYS__POSTGRES__PORT": "6000"}
    cfg = load_config(config_file=conf_file, environ=environ, overrides=["spark.shuffle_partitions=7"])
    assert cfg.spark.shuffle_partitions == 7
    assert cfg.postgres.port == 6000


def test_set_can_add_one_spark_conf_entry(conf_file):
    cfg = load_config(config_file=conf_file, environ={}, overrides=["spark.conf.spark.sql.ansi.enabled=true"])
    assert cfg.spark.conf == {"spark.sql.ansi.enabled": "true"}


def test_lists_weights_and_names_are_typed_at_load_from_yaml_or_comma_strings(conf_file):
    conf_file.write_text("model:\n  ranks: [8, 32]\n  scalings: [log]\ngold:\n  weights: {like: 2.5}\n")
    cfg = load_config(config_file=conf_file, environ={"RECSYS__MODEL__MAX_ITERS": "5, 10"},
                      overrides=["gold.weights.follow=3"])
    assert (cfg.model.ranks, cfg.model.scalings, cfg.model.max_iters) == ((8, 32), ("log",), (5, 10))
    assert cfg.gold.weights == {"like": 2.5, "follow": 3.0}
    with pytest.raises(ConfigError, match=r"gold.weights.like: expected float, got 'lots' \(from --set"):
        load_config(config_file=conf_file, environ={}, overrides=["gold.weights.like=lots"])
    with pytest.raises(ConfigError, match="gold.confidence: 'sqrt' is not one of log, linear"):
        load_config(config_file=conf_file, environ={}, overrides=["gold.confidence=sqrt"])


def test_env_chooses_the_file(tmp_path, conf_file, monkeypatch):
    monkeypatch.setenv("RECSYS_CONF_DIR", str(conf_file.parent))
    assert load_config(environ={"RECSYS_ENV": "dev"}).spark.shuffle_partitions == 3


def test_relative_paths_are_relative_to_the_project_not_the_working_dir(conf_file, tmp_path):
    cfg = load_config(config_file=conf_file, environ={})
    assert cfg.lake.root == str(tmp_path / "lake-here")
    uri = load_config(config_file=conf_file, environ={}, overrides=["lake.root=s3a://bucket/lake"])
    assert uri.lake.root == "s3a://bucket/lake"


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        ({}, ["spark.mastr=x"], "unknown config key 'spark.mastr' (from --set spark.mastr)"),
        ({"RECSYS__SPORK__MASTER": "x"}, [], "unknown config section 'spork' in spork.master "
                                             "(from environment variable RECSYS__SPORK__MASTER)"),
        ({"RECSYS__POSTGRES__PORT": "abc"}, [], "postgres.port: expected int, got 'abc' "
                                                "(from environment variable RECSYS__POSTGRES__PORT)"),
        ({}, ["spark.ui_enabled=maybe"], "spark.ui_enabled: expected bool, got 'maybe' (from --set spark.ui_enabled)"),
        ({}, ["privacy.pseudonym_secret=s3cr3t"],
         "privacy.pseudonym_secret is a secret and may only come from the environment "
         "(RECSYS__PRIVACY__PSEUDONYM_SECRET), not from --set privacy.pseudonym_secret"),
        ({}, ["nodot=1"], "--set 'nodot=1': expected section.key=value"),
    ],
)
def test_bad_configuration_is_one_line_naming_key_and_source(conf_file, environ, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(config_file=conf_file, environ=environ, overrides=overrides)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_wrong_type_in_the_file_names_the_file(conf_file):
    conf_file.write_text("redis:\n  db: [1, 2]\n")
    with pytest.raises(ConfigError, match=rf"redis.db: expected int, got \[1, 2\] \(from {conf_file}\)"):
        load_config(config_file=conf_file, environ={})


def test_a_secret_in_a_file_is_refused(conf_file):
    conf_file.write_text("postgres:\n  password: hunter2\n")
    with pytest.raises(ConfigError, match="postgres.password is a secret") as err:
        load_config(config_file=conf_file, environ={})
    assert "hunter2" not in str(err.value)


def test_secrets_come_from_the_environment_and_stay_out_of_repr(conf_file):
    cfg = load_config(config_file=conf_file, environ={"RECSYS__PRIVACY__PSEUDONYM_SECRET": "s3cr3t"})
    assert cfg.require_secret("privacy.pseudonym_secret") == "s3cr3t"
    assert "s3cr3t" not in repr(cfg)


def test_a_missing_secret_names_the_variable_to_set(conf_file):
    cfg = load_config(config_file=conf_file, environ={})
    with pytest.raises(ConfigError, match="set it in the environment as RECSYS__PRIVACY__PSEUDONYM_SECRET"):
        cfg.require_secret("privacy.pseudonym_secret")


def test_a_missing_config_file_says_which(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_config(config_file=tmp_path / "nope.yaml", environ={})


def test_a_job_prints_one_line_and_exits_non_zero_on_bad_config(capsys):
    code = run_job(lambda cfg, args: 0, job_parser("x"), ["--env", "test", "--set", "redis.db=one"])
    assert code == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err == "recsys: config error: redis.db: expected int, got 'one' (from --set redis.db)"


def test_a_time_argument_without_an_offset_is_utc_whatever_the_machine_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")  # 4 or 5 hours behind UTC
    time.tzset()
    try:
        assert utc_time("2026-10-02") == datetime(2026, 10, 2, tzinfo=UTC)
        assert utc_time(" 2026-10-02T06:30:00 ") == datetime(2026, 10, 2, 6, 30, tzinfo=UTC)
        assert utc_time("2026-10-02T06:30:00Z") == datetime(2026, 10, 2, 6, 30, tzinfo=UTC)
        assert utc_time("2026-10-02T06:30:00+02:00") == datetime(2026, 10, 2, 4, 30, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(("job", "option"), [("refresh.py", "--now"), ("build_gold.py", "--as-of")])
def test_a_job_refuses_a_time_it_cannot_read_before_it_starts(job, option):
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / job), "--env", "test", option, "yesterday"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        f"error: argument {option}: not an ISO-8601 time: 'yesterday' (e.g. 2026-10-02T06:00:00Z)")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_servers_are_named_with_host_and_port(capsys):
    port = _closed_port()
    cfg = load_config("test", [f"postgres.port={port}", f"redis.url=redis://127.0.0.1:{port}"], environ={})
    with pytest.raises(ServiceUnavailable, match=f"PostgreSQL at 127.0.0.1:{port}"):
        with postgres.connect(cfg.postgres):
            pass
    with pytest.raises(ServiceUnavailable, match=f"Redis at 127.0.0.1:{port} is not reachable"):
        redis.connect(cfg.redis)

    def needs_redis(cfg, args):
        Endpoint("Redis", "127.0.0.1", port).require()

    assert run_job(needs_redis, job_parser("x"), ["--env", "test"]) == EXIT_SERVICE
    assert capsys.readouterr().err.strip() == (
        f"recsys: Redis at 127.0.0.1:{port} is not reachable (start it with `make services-up`)"
    )


def _readme_configuration() -> dict[str, str | None]:
    """Each key of the README's configuration table and its default cell's literal for that key
    (None when the cell is prose: `env only`, `see ...`). `section.a`, `.b` stands for `section.b`.
    """
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str | None] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        key_cell, default_cell = [c.strip() for c in row.strip("|").split("|")][:2]
        keys: list[str] = []
        for key in re.findall(r"`([^`]+)`", key_cell):
            keys.append(keys[-1].rsplit(".", 1)[0] + key if key.startswith(".") else key)
        if default_cell.startswith("empty: "):  # empty, and what it then stands for
            literals = [""] * len(keys)
        else:
            literals = re.findall(r"`([^`]*)`", default_cell) if default_cell.startswith("`") else []
        for i, key in enumerate(keys):
            documented[key] = literals[i] if len(literals) == len(keys) else None
    return documented


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    leaves: dict[str, object] = {}
    for field in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            leaves.update(_leaves(value, f"{prefix}{field.name}."))
        else:
            leaves[f"{prefix}{field.name}"] = value
    return leaves


def test_the_readme_documents_every_key_with_its_local_default():
    cfg = load_config("local", environ={})
    keys = {k: v for k, v in _leaves(cfg).items() if k != "env"}
    documented = _readme_configuration()
    assert sorted(set(keys) - set(documented)) == [], "keys the README's configuration table lacks"
    assert sorted(set(documented) - set(keys)) == [], "keys the README documents that the config lacks"
    for key, literal in documented.items():
        value = keys[key]
        if literal is None:
            continue
        expected = literal if isinstance(value, str) else yaml.safe_load(literal)
        if isinstance(value, str) and Path(value).is_absolute() and not Path(literal).is_absolute():
            expected = str(ROOT / literal)  # relative paths are relative to the project
        shown = list(value) if isinstance(value, tuple) else value
        assert shown == expected, f"{key}: README says {literal!r}, config has {value!r}"
