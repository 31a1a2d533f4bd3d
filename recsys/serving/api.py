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

Every `/v1` call needs `Authorization: Bearer <token>` (`recsys/serving/auth.py`): a user token
reads only its own user's list, a service token with `events:write` posts events; 401 without a
valid token, 403 for another user or a missing scope, 429 past the per-credential rate limit.

The user id is turned into the pseudonymous key at the door; Redis only ever sees the key.
"""


import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import redis
import uvicorn
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from recsys.config import Config
from recsys.experiment import assign, variants
from recsys.keys import features_key, pseudonym, segment_name
from recsys.landing.contract import event_errors
from recsys.landing.writer import LandingWriter
from recsys.serving.auth import (
    EVENTS_WRITE,
    Caller,
    Forbidden,
    RateLimiter,
    Unauthorized,
    require_scope,
    require_user,
    verify,
)
from recsys.serving.store import RecommendationStore
from recsys.stores.redis import connect, text


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


def _segment(client: redis.Redis, prefix: str, user_key: str) -> str:
    age, country = client.hmget(features_key(prefix, user_key), ["age_group", "country"])
    return segment_name(text(age), text(country))


def impressions(user_id: str, answer: Recommendations) -> list[dict[str, Any]]:
    """The impression events for an answer, one per item shown."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [{
        "event_id": str(uuid.uuid4()), "event_type": "impression", "event_ts": now, "user_id": user_id,
        "card": {"artist_id": item.artist_id, "artist_name": item.name},
        "recommendation": {"request_id": answer.request_id, "model_version": answer.model_version,
                           "variant": answer.variant, "position": item.rank - 1, "score": item.score},
        "context": {"source": "recommendation"},
    } for item in answer.items]


def create_app(cfg: Config) -> FastAPI:
    """The FastAPI app: recommendations from the live Redis version, events to the landing zone."""
    secret = cfg.require_secret("privacy.pseudonym_secret")
    jwt_secret = cfg.require_secret("auth.jwt_secret")
    table = variants(cfg.experiment)  # fails at startup, not per request, on a bad split
    state: dict[str, Any] = {}
    limiter = RateLimiter(cfg.auth.rate_per_s, cfg.auth.burst)

    def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
        try:
            who = verify(cfg.auth, jwt_secret, authorization)
        except Unauthorized as err:
            raise HTTPException(401, str(err), headers={"WWW-Authenticate": "Bearer"}) from None
        wait = limiter.allow(who.subject)
        if wait:
            raise HTTPException(429, "rate limit exceeded for this credential",
                                headers={"Retry-After": str(max(1, round(wait)))})
        return who

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        client = connect(cfg.redis)
        state.update(client=client, store=RecommendationStore(client, cfg.publish.prefix),
                     landing=LandingWriter(cfg.landing.path, cfg.serving.impression_batch,
                                           cfg.serving.impression_flush_s))
        yield
        state["landing"].close()
        client.close()

    app = FastAPI(title="recsys", version="1", lifespan=lifespan,
                  description="Artist recommendations, impressions and click feedback.")
    app.add_middleware(BodyLimit, max_bytes=cfg.limits.max_body_bytes)
    limits = cfg.limits

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations)
    def recommendations(user_id: Annotated[str, Path(max_length=limits.max_string_chars)],
                        who: Annotated[Caller, Depends(caller)],
                        k: Annotated[int, Query(ge=1, le=cfg.recommend.top_k)] = cfg.serving.default_k,
                        ) -> Recommendations:
        user_id = user_id.strip()
        _allowed(lambda: require_user(who, user_id))
        user_key = pseudonym(secret, user_id)
        variant = assign(cfg.experiment, user_key, table)
        answer = state["store"].get(user_key, variant.alias, _segment(state["client"], cfg.gold.redis_prefix,
                                                                      user_key))
        if answer is None:
            raise HTTPException(503, f"no recommendations published for model alias {variant.alias!r} yet")
        body = Recommendations(
            user_id=user_id, request_id=uuid.uuid4().hex, model_version=answer.model_version, variant=variant.name,
            source=answer.source, items=[Item(artist_id=a, name=n, score=s, rank=r)
                                         for r, (a, n, s) in enumerate(answer.items[:k], start=1)])
        state["landing"].add(impressions(user_id, body))
        return body

    @app.post("/v1/events", status_code=202, response_model=Accepted)
    def post_events(who: Annotated[Caller, Depends(caller)],
                    payload: Annotated[dict[str, Any] | list[Any], Body()]) -> Accepted:
        _allowed(lambda: require_scope(who, EVENTS_WRITE))
        events = payload if isinstance(payload, list) else [payload]
        if len(events) > limits.max_events_per_request:
            raise HTTPException(413, f"{len(events)} events in one request; limits.max_events_per_request is "
                                     f"{limits.max_events_per_request}")
        problems = [{"index": i, "reason": reason} for i, e in enumerate(events)
                    for reason in event_errors(e, limits)]
        if not events:
            problems = [{"index": None, "reason": "no events"}]
        if problems:
            raise HTTPException(400, problems)
        state["landing"].add(events)
        return Accepted(accepted=len(events))

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            live = state["store"].live()
        except redis.RedisError as err:
            return JSONResponse({"status": "down", "reason": f"redis: {type(err).__name__}"}, status_code=503)
        status = 200 if live else 503
        return JSONResponse({"status": "ok" if live else "no version live", "live_version": live}, status_code=status)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, err: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"redis unavailable ({type(err).__name__})"}, status_code=503)

    return app


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
