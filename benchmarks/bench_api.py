"""`make bench-api`: throughput and latency of `GET /v1/users/{id}/recommendations` under `wrk`.

Starts `jobs/serve.py` (the live published version, impressions to a scratch landing zone, access
log to a scratch file) with 1 and then 2 uvicorn workers, and drives it with wrk (C, one thread,
on the same cores) at 1/8/32/128 connections. Each request is a random user from bronze accounts
with that user's own token (minted before the clock starts, by a Lua script wrk runs), so most
hit a stored list. `/healthz` (one Redis GET, no JSON work) at 32 connections is the ceiling
measured in the same run. The last line reads exactly:
`api 32 connections, 1 worker: <N> req/s, p99 <X> ms (healthz <M> req/s)`.
Run `make demo` (or recommend + publish) first. wrk comes with `make setup` (Debian `wrk`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from recsys import lake
from recsys.config import load_config
from recsys.serving.auth import mint
from recsys.spark import get_spark

ROOT = Path(__file__).resolve().parent.parent
LUA = """
local requests = {}
%s
local n = #requests
math.randomseed(%d)
request = function()
  local r = requests[math.random(n)]
  return wrk.format("GET", r[1], {["Authorization"] = "Bearer " .. r[2]})
end
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lua_script(users: list[tuple[str, str]], k: int, path: Path) -> Path:
    rows = "\n".join(f'requests[#requests + 1] = {{"/v1/users/{u}/recommendations?k={k}", "{t}"}}' for u, t in users)
    path.write_text(LUA % (rows, 7))
    return path


def wrk(url: str, connections: int, seconds: float, script: Path | None = None) -> tuple[float, float, float, int]:
    """req/s, p50 ms, p99 ms and non-2xx answers of one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "--timeout", "5s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    rate = float(found.group(1))
    percentiles = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, percentiles["50"], percentiles["99"], int(bad.group(1)) if bad else 0


def serve(port: int, workers: int, scratch: Path) -> subprocess.Popen:
    log = (scratch / f"access-{workers}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "serve.py"), "--set", f"serving.port={port}",
         "--set", f"serving.workers={workers}", "--set", f"landing.path={scratch / 'landing'}"],
        env=os.environ.copy(), stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise SystemExit("the API did not become healthy (is a version published? run make demo)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32,128", help="connection counts")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to measure")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make setup` (it installs Debian's wrk when root)")

    cfg = load_config()
    spark = get_spark(cfg.spark, app_name="recsys-bench-api")
    secret = cfg.require_secret("auth.jwt_secret")
    accounts_path = lake.table_path(cfg.lake, "bronze", "accounts")
    if not lake.exists(spark, accounts_path):
        spark.stop()
        raise SystemExit(f"bench-api serves the lists `make demo` publishes, for the users it ingested: there is "
                         f"no {accounts_path} yet, so run `make demo` first")
    accounts = lake.read(spark, accounts_path)
    ids = [r[0] for r in accounts.select("user_id").orderBy("user_id").limit(5000).collect()]
    spark.stop()
    # Each user's own token; 5,000 users keep every credential far below auth.rate_per_s.
    users = [(u, mint(cfg.auth, secret, u, ttl_s=3600)) for u in ids]
    scratch = Path(tempfile.mkdtemp(prefix="bench-api-"))
    script = lua_script(users, args.k, scratch / "users.lua")
    print(f"GET /v1/users/<id>/recommendations?k={args.k}, {len(users)} users with their own tokens; "
          f"wrk -t1, {args.seconds:.0f} s per level, on this machine's {os.cpu_count()} cores\n")
    print(f"{'workers':>7} {'connections':>11} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    headline = None
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            port = free_port()
            server = serve(port, workers, scratch)
            url = f"http://127.0.0.1:{port}"
            try:
                wrk(url, 8, 2, script)  # warm-up: names cached, connections open
                for connections in (int(c) for c in args.levels.split(",")):
                    rate, p50, p99, bad = wrk(url, connections, args.seconds, script)
                    print(f"{workers:7d} {connections:11d} {rate:8.0f} {p50:8.2f} {p99:8.2f} {bad:8d}", flush=True)
                    if workers == 1 and connections == 32:  # noqa: PLR2004
                        headline = (rate, p99)
                health = wrk(f"{url}/healthz", 32, args.seconds)
                print(f"{workers:7d} {'32 /healthz':>11} {health[0]:8.0f} {health[1]:8.2f} {health[2]:8.2f} "
                      f"{health[3]:8d}", flush=True)
                if workers == 1:
                    ceiling = health[0]
            finally:
                server.terminate()
                server.wait(timeout=60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if headline is not None:
        print(f"\napi 32 connections, 1 worker: {headline[0]:.0f} req/s, p99 {headline[1]:.2f} ms "
              f"(healthz {ceiling:.0f} req/s)")


if __name__ == "__main__":
    main()
