"""`make services-up` / `services-down`: start what is missing, idempotently; stop only our own."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from recsys.config import PostgresConfig, RedisConfig, ServicesConfig
from recsys.endpoints import ServiceUnavailable, postgres_endpoint, redis_endpoint
from recsys.services import services_down, services_up
from recsys.stores import postgres, redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_services_start_idempotently_and_stop(base_cfg, tmp_path):
    cfg = dataclasses.replace(
        base_cfg,
        postgres=dataclasses.replace(base_cfg.postgres, port=_free_port(), database="probe"),
        redis=RedisConfig(url=f"redis://127.0.0.1:{_free_port()}"),
        services=ServicesConfig(manage=True, state_dir=str(tmp_path / "state")),
    )
    try:
        assert [line.split(": ")[1].split(" ")[0] for line in services_up(cfg)] == ["started", "started"]
        assert [line.split(": ")[1] for line in services_up(cfg)] == ["already answering"] * 2
        with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("probe",)
        assert redis.connect(cfg.redis).ping()
    finally:
        down = services_down(cfg)
    assert [line.split(": ")[1] for line in down] == ["stopped", "stopped"]
    assert not postgres_endpoint(cfg).answers() and not redis_endpoint(cfg).answers()
    assert [line.split(": ")[1] for line in services_down(cfg)] == ["nothing of ours running"] * 2


def test_a_remote_server_that_does_not_answer_is_not_started(base_cfg, tmp_path):
    cfg = dataclasses.replace(
        base_cfg,
        postgres=PostgresConfig(host="127.0.0.2", port=5432, connect_timeout_s=1),
        services=ServicesConfig(manage=True, state_dir=str(tmp_path)),
    )
    with pytest.raises(ServiceUnavailable, match="PostgreSQL at 127.0.0.2:5432 is not reachable"):
        services_up(cfg)
