"""`make bench-api`: latency of `GET /v1/users/{id}/recommendations` on loopback.

Starts `jobs/serve.py` (one uvicorn worker, the live published version, impressions written to
a scratch landing zone) in its own process and drives it with an asyncio load generator (httpx)
from this one: at each concurrency level, that many clients send requests back to back for
`--seconds`, over user ids read from bronze accounts (so most hit a stored list). Prints p50,
p99 and requests per second per level. Run `make demo` (or recommend + publish) first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from recsys import lake
from recsys.config import load_config
from recsys.serving.auth import bearer
from recsys.spark import get_spark

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def level(url: str, users: list[tuple[str, dict]], clients: int, seconds: float, k: int
                ) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            i = n
            while time.monotonic() < deadline:
                started = time.perf_counter()
                user, token = users[i % len(users)]
                response = await http.get(f"/v1/users/{user}/recommendations", params={"k": k}, headers=token)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
                i += clients

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    cfg = load_config()
    spark = get_spark(cfg.spark, app_name="recsys-bench-api")
    key = cfg.require_secret("auth.jwt_secret")
    accounts = lake.read(spark, lake.table_path(cfg.lake, "bronze", "accounts"))
    # each user's own token, minted before the clock starts
    users = [(r[0], bearer(cfg.auth, key, r[0])) for r in accounts.select("user_id").limit(2000).collect()]
    spark.stop()
    port = free_port()
    scratch = tempfile.mkdtemp(prefix="bench-api-landing-")
    server = subprocess.Popen([sys.executable, str(ROOT / "jobs" / "serve.py"), "--set", f"serving.port={port}",
                               "--set", f"landing.path={scratch}"], env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the API did not become healthy (is a version published? run make demo)")
        asyncio.run(level(url, users, 4, 2.0, args.k))  # warm-up
        print(f"GET /v1/users/<id>/recommendations?k={args.k}, {len(users)} users, one uvicorn worker, "
              f"{args.seconds:.0f} s per level\n")
        print(f"{'clients':>8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for clients in (int(c) for c in args.levels.split(",")):
            latencies, errors = asyncio.run(level(url, users, clients, args.seconds, args.k))
            ms = np.array(latencies) * 1000
            print(f"{clients:8d} {len(ms):9d} {len(ms) / args.seconds:8.0f} {np.percentile(ms, 50):8.2f} "
                  f"{np.percentile(ms, 99):8.2f} {errors:7d}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
