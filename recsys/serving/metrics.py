"""The API's observability: Prometheus metrics at `/metrics` (prometheus-client) and one JSON
access-log line per request.

Metrics: requests by route and status with a latency histogram, Redis errors by kind,
impressions answered / landed / dropped, and the live version being served. With several
worker processes (`serving.workers`), `jobs/serve.py` sets `PROMETHEUS_MULTIPROC_DIR` and every
worker writes there; `/metrics` then sums all of them, whichever worker answers.

Routes are labelled by their template (`/v1/users/{user_id}/recommendations`), never the path,
so neither the metrics nor the access log carry a user id.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

access = logging.getLogger("recsys.access")
RECOMMENDATIONS = "/v1/users/{user_id}/recommendations"
ROUTES = {"/v1/events", "/healthz", "/metrics", "/docs", "/openapi.json"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def route_of(path: str) -> str:
    """The route template a path belongs to (bounded label values: no ids)."""
    if path.startswith("/v1/users/") and path.endswith("/recommendations"):
        return RECOMMENDATIONS
    return path if path in ROUTES else "other"


class ApiMetrics:
    """The API's metrics, in their own registry (several apps may live in one process, as in tests)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        registry = None if self.multiprocess else self.registry  # multi-process values live in files
        self.requests = Counter("recsys_api_requests", "Requests answered, by route and status",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("recsys_api_request_seconds", "Time to answer, by route and status",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=registry)
        self.redis_errors = Counter("recsys_api_redis_errors", "Redis calls that failed or timed out, by kind",
                                    ["kind"], registry=registry)
        self.impressions_answered = Counter("recsys_api_impressions_answered", "Items answered (one impression each)",
                                            registry=registry)
        self.impressions_landed = Counter("recsys_api_landing_lines_written", "Lines written to landing files",
                                          registry=registry)
        self.impressions_dropped = Counter("recsys_api_landing_lines_dropped",
                                           "Lines dropped: the landing zone stayed unwritable and the buffer filled",
                                           registry=registry)
        self.live = Gauge("recsys_api_live_version", "1 for the published version this worker serves",
                          ["version"], multiprocess_mode="mostrecent", registry=registry)
        self._serving: str | None = None

    def redis_error(self, kind: str) -> None:
        """A Redis call failed or timed out."""
        self.redis_errors.labels(kind).inc()

    def impressions(self, n: int) -> None:
        """Items answered."""
        self.impressions_answered.inc(n)

    def landed(self, n: int) -> None:
        """Lines written to landing files."""
        self.impressions_landed.inc(n)

    def dropped(self, n: int) -> None:
        """Lines dropped by the landing writer."""
        self.impressions_dropped.inc(n)

    def serving(self, version: str) -> None:
        """The published version this worker answered from."""
        if version != self._serving:
            if self._serving is not None:
                self.live.labels(self._serving).set(0)
            self.live.labels(version).set(1)
            self._serving = version

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every metric (of every worker, in multi-process mode)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Observed:
    """ASGI middleware: counts and times every request, and writes its access-log line (JSON on
    stderr: time, method, route template, status, milliseconds; no user id, no query string).
    """

    def __init__(self, app: Any, metrics: ApiMetrics, access_log: bool) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on, noting its status and time."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def noted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            seconds = time.perf_counter() - started
            route, code = route_of(scope["path"]), str(status[0])
            self.metrics.requests.labels(route, code).inc()
            self.metrics.latency.labels(route, code).observe(seconds)
            if self.access_log:
                sys.stderr.write(orjson.dumps({
                    "ts": time.time(), "method": scope["method"], "route": route, "status": status[0],
                    "ms": round(seconds * 1000, 2)}).decode() + "\n")
