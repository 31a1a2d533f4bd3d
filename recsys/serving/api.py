"""The recommendations API (`make serve`): FastAPI on uvicorn, reading what `publish` put in Redis.

- `GET /v1/users/{user_id}/recommendations?k=10`: the user's list from the live version for the
  model alias of their A/B variant; users the batch never saw get their segment's list (age group
  and country from the online feature store), else the global one. Each answer lands one
  `impression` event per artist in the landing zone (contract format, batched files), stamped
  with the request id, model version, variant, position and score.
- `POST /v1/events`: one contract event or a list; all are validated first (400 with every
  reason, nothing written), then landed the same way (202). Bounded (`limits.*`): a body over
  `max_body_bytes` or more than `max_events_per_request` events is refused with 413 before
  anything is parsed or written; strings, `count` and labels are checked with the contract (400).
- `GET /healthz`: Redis reachable and a version live. OpenAPI docs at `/docs`.
- `GET /metrics`: Prometheus text (`recsys/serving/metrics.py`).

The fast path (every handler is async, on `redis.asyncio`): a user with a list costs one Redis
round trip (the live version's name and meta are cached, see `AsyncRecommendationStore`), the
answer and impressions are encoded with orjson, and impressions only join an in-memory buffer
that a writer thread moves to the landing zone (`LandingWriter`: bounded, retried, drops
counted; SIGTERM flushes it). Redis failing or slower than `serving.redis_timeout_ms` answers
503 at once, and the client reconnects by itself when Redis is back. `serving.workers` > 1
runs that many uvicorn processes (`jobs/serve.py`), each with its own writer (file names are
uuids, so they cannot collide).

Every `/v1` call needs `Authorization: Bearer <token>` (`recsys/serving/auth.py`): a user token
reads only its own user's list, a service token with `events:write` posts events; 401 without a
valid token, 403 for another user or a missing scope, 429 past the per-credential rate limit.

The user id is turned into the pseudonymous key at the door; Redis only ever sees the key.
"""

import asyncio
import gc
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import redis
import redis.asyncio
import uvicorn
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from recsys.config import Config, load_config
from recsys.experiment import assign, variants
from recsys.keys import features_key, pseudonym, segment_name
from recsys.landing.contract import event_errors
from recsys.landing.writer import LandingWriter, json_line
from recsys.serving.auth import (
    EVENTS_WRITE,
    Caller,
    Forbidden,
    RateLimiter,
    Unauthorized,
    Verifier,
    require_scope,
    require_user,
)
from recsys.serving.metrics import ApiMetrics, Observed
from recsys.serving.store import AsyncRecommendationStore, live_key
from recsys.stores.redis import async_client, text

SERVE_ARGS = "RECSYS_SERVE_ARGS"  # how `make serve` hands its configuration to worker processes


class RedisDown(Exception):
    """Redis failed or did not answer within `serving.redis_timeout_ms`."""


class Item(BaseModel):
    """One recommended artist in a response."""
    artist_id: str
    name: str
    score: float
    rank: int


class Recommendations(BaseModel):
    """A user's recommendations, with the model version and variant that produced them."""
    user_id: str
    request_id: str
    model_version: str
    variant: str
    source: str
    items: list[Item]


class Accepted(BaseModel):
    """How many posted events were accepted."""
    accepted: int


class BodyLimit:
    """ASGI middleware: a request whose body passes `max_bytes` gets 413 before the app reads it
    (declared by Content-Length, or counted as a chunked body streams in).
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on, refusing it once its body is known to be too large."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen, refused = 0, False

        async def counted() -> dict:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not refused:
                refused = True
                await self._refuse(send)
                return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped below
            return message

        async def unless_refused(message: dict) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over limits.max_body_bytes ({self.max_bytes} bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _allowed(check: Callable[[], None]) -> None:
    try:
        check()
    except Forbidden as err:
        raise HTTPException(403, str(err)) from None


def impression_lines(user_id: str, request_id: str, model_version: str, variant: str,
                     items: list[tuple[str, str, float]]) -> list[str]:
    """The impression events of an answer, one JSON line per item shown; event ids are the
    request id and the position (unique without a uuid each).
    """
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [json_line({
        "event_id": f"{request_id}-{position}", "event_type": "impression", "event_ts": now, "user_id": user_id,
        "card": {"artist_id": artist_id, "artist_name": name},
        "recommendation": {"request_id": request_id, "model_version": model_version, "variant": variant,
                           "position": position, "score": score},
        "context": {"source": "recommendation"},
    }) for position, (artist_id, name, score) in enumerate(items)]


def _json(body: Any, status: int = 200) -> Response:
    """A JSON answer encoded with orjson (no pydantic model on the hot path)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, detail: Any) -> Response:
    return _json({"detail": detail}, status)


@dataclass
class _Context:
    """What the routes share: configuration, the per-process clients (set at startup), metrics."""

    cfg: Config
    secret: str
    table: Any
    metrics: ApiMetrics
    caller: Callable[..., Awaitable[Caller]]
    state: dict[str, Any] = field(default_factory=dict)

    async def from_redis(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` within `serving.redis_timeout_ms`, else `RedisDown` (answered 503)."""
        try:
            async with asyncio.timeout(self.cfg.serving.redis_timeout_ms / 1000):
                return await call()
        except (redis.RedisError, TimeoutError) as err:
            self.metrics.redis_error(type(err).__name__)
            raise RedisDown(type(err).__name__) from None


def create_app(cfg: Config) -> FastAPI:
    """The FastAPI app: recommendations from the live Redis version, events to the landing zone."""
    verify = Verifier(cfg.auth, cfg.require_secret("auth.jwt_secret"))
    limiter = RateLimiter(cfg.auth.rate_per_s, cfg.auth.burst)

    async def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
        try:
            who = verify(authorization)
        except Unauthorized as err:
            raise HTTPException(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
        wait = limiter.allow(who.subject)
        if wait:
            raise HTTPException(429, "rate limit exceeded for this credential",
                                headers={"Retry-After": str(max(1, round(wait)))})
        return who

    # variants(): a bad split fails at startup, not per request
    ctx = _Context(cfg, cfg.require_secret("privacy.pseudonym_secret"), variants(cfg.experiment), ApiMetrics(), caller)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        s = cfg.serving
        client = async_client(cfg.redis, s.redis_timeout_ms / 1000)
        landing = LandingWriter(cfg.landing.path, s.impression_batch, s.impression_flush_s, s.impression_buffer_max,
                                on_written=ctx.metrics.landed, on_dropped=ctx.metrics.dropped)
        ctx.state.update(client=client, landing=landing,
                         store=AsyncRecommendationStore(client, cfg.publish.prefix, s.live_cache_s))
        gc.freeze()  # what start-up built lives as long as the process: keep it out of every collection
        yield
        landing.close()  # SIGTERM lands here: what is buffered is written before the process ends
        await client.aclose()

    app = FastAPI(title="recsys", version="1", lifespan=lifespan,
                  description="Artist recommendations, impressions and click feedback.")
    app.add_middleware(BodyLimit, max_bytes=cfg.limits.max_body_bytes)
    app.add_middleware(Observed, metrics=ctx.metrics, access_log=cfg.serving.access_log)
    _recommendation_routes(app, ctx)
    _event_and_ops_routes(app, ctx)
    return app


def _recommendation_routes(app: FastAPI, ctx: _Context) -> None:
    cfg = ctx.cfg

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations,
             responses={503: {"description": "Redis unavailable or slow, or nothing published yet"}})
    async def recommendations(user_id: Annotated[str, Path(max_length=cfg.limits.max_string_chars)],
                              who: Annotated[Caller, Depends(ctx.caller)],
                              k: Annotated[int, Query(ge=1, le=cfg.recommend.top_k)] = cfg.serving.default_k,
                              ) -> Response:
        user_id = user_id.strip()
        _allowed(lambda: require_user(who, user_id))
        user_key = pseudonym(ctx.secret, user_id)
        variant = assign(cfg.experiment, user_key, ctx.table)
        client, store = ctx.state["client"], ctx.state["store"]

        async def segment() -> str:
            age, country = await client.hmget(features_key(cfg.gold.redis_prefix, user_key), ["age_group", "country"])
            return segment_name(text(age), text(country))

        answer = await ctx.from_redis(lambda: store.get(user_key, variant.alias, segment))
        if answer is None:
            return _error(503, f"no recommendations published for model alias {variant.alias!r} yet")
        request_id = uuid.uuid4().hex
        items = answer.items[:k]
        ctx.state["landing"].add_lines(impression_lines(user_id, request_id, answer.model_version, variant.name, items))
        ctx.metrics.impressions(len(items))
        ctx.metrics.serving(answer.version)
        body = {"user_id": user_id, "request_id": request_id, "model_version": answer.model_version,
                "variant": variant.name, "source": answer.source,
                "items": [{"artist_id": a, "name": n, "score": sc, "rank": r}
                          for r, (a, n, sc) in enumerate(items, start=1)]}
        return _json(body)


def _event_and_ops_routes(app: FastAPI, ctx: _Context) -> None:
    limits = ctx.cfg.limits

    @app.post("/v1/events", status_code=202, response_model=Accepted)
    async def post_events(who: Annotated[Caller, Depends(ctx.caller)],
                          payload: Annotated[dict[str, Any] | list[Any], Body()]) -> Response:
        _allowed(lambda: require_scope(who, EVENTS_WRITE))
        events = payload if isinstance(payload, list) else [payload]
        if len(events) > limits.max_events_per_request:
            return _error(413, f"{len(events)} events in one request; limits.max_events_per_request is "
                               f"{limits.max_events_per_request}")
        problems = [{"index": i, "reason": reason} for i, e in enumerate(events)
                    for reason in event_errors(e, limits)]
        if not events:
            problems = [{"index": None, "reason": "no events"}]
        if problems:
            return _error(400, problems)
        ctx.state["landing"].add(events)
        return _json({"accepted": len(events)}, 202)

    @app.exception_handler(RedisDown)
    async def redis_down(_: Request, err: RedisDown) -> Response:
        return _error(503, f"redis unavailable or slower than serving.redis_timeout_ms ({err})")

    @app.get("/healthz")
    async def healthz() -> Response:
        try:
            live = text(await ctx.from_redis(lambda: ctx.state["client"].get(live_key(ctx.cfg.publish.prefix))))
        except RedisDown as err:
            return _json({"status": "down", "reason": f"redis: {err}"}, 503)
        return _json({"status": "ok" if live else "no version live", "live_version": live}, 200 if live else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = ctx.metrics.exposition()
        return Response(body, media_type=content_type)


def app_from_environment() -> FastAPI:
    """The app of one worker process of `make serve` (uvicorn's factory), from the job's arguments."""
    args = json.loads(os.environ[SERVE_ARGS])
    return create_app(load_config(args["env"], args["set"], config_file=args["config"]))


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn on a background thread (port 0: any free one); yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="recsys-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
