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
        redis=dataclasses.replace(base_cfg.redis, url=f"redis://127.0.0.1:{_free_port()}"),
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


@pytest.mark.slow
def test_local_servers_require_passwords_that_no_command_line_shows(base_cfg, tmp_path):
    import os
    import stat
    from pathlib import Path

    import psycopg2
    import redis as redis_py

    from recsys.services import _services_dir

    cfg = dataclasses.replace(
        base_cfg,
        postgres=dataclasses.replace(base_cfg.postgres, port=_free_port(), database="locked", password="pg-pw-1"),
        redis=RedisConfig(url=f"redis://127.0.0.1:{_free_port()}", password="redis-pw-1"),
        services=ServicesConfig(manage=True, state_dir=str(tmp_path / "state")),
    )
    pg, rd = postgres_endpoint(cfg), redis_endpoint(cfg)
    try:
        services_up(cfg)
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=pg.host, port=pg.port, user=cfg.postgres.user, dbname="locked")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host=pg.host, port=pg.port, user=cfg.postgres.user, dbname="locked", password="guess")
        with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(host=rd.host, port=rd.port).ping()
        assert redis.connect(cfg.redis).ping()
        pid = int((_services_dir(cfg, "redis") / "redis.pid").read_text())
        assert b"redis-pw-1" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert stat.S_IMODE(os.stat(cfg.services.state_dir).st_mode) in (0o700, 0o701)

        # Servers made before passwords (trust, no requirepass) are locked on the next services-up.
        hba = _services_dir(cfg, "postgres") / "data" / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        os.kill(int((_services_dir(cfg, "postgres") / "data" / "postmaster.pid").read_text().split()[0]), 1)  # reload
        redis.connect(cfg.redis).config_set("requirepass", "")
        services_up(cfg)
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=pg.host, port=pg.port, user=cfg.postgres.user, dbname="locked")
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(host=rd.host, port=rd.port).ping()

        services_down(cfg)  # a converted server starts again (its data folder is still 0700)
        assert [line.split(": ")[1].split(" ")[0] for line in services_up(cfg)] == ["started", "started"]
        with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        services_down(cfg)


def test_a_remote_server_that_does_not_answer_is_not_started(base_cfg, tmp_path):
    cfg = dataclasses.replace(
        base_cfg,
        postgres=PostgresConfig(host="127.0.0.2", port=5432, connect_timeout_s=1),
        services=ServicesConfig(manage=True, state_dir=str(tmp_path)),
    )
    with pytest.raises(ServiceUnavailable, match="PostgreSQL at 127.0.0.2:5432 is not reachable"):
        services_up(cfg)
