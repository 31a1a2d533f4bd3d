"""Who may call the API: signed bearer tokens, and a rate limit per credential.

Tokens are JWTs (HS256, PyJWT) with an expiry, issued by `auth.issuer` for `auth.audience` and
signed with `auth.jwt_secret` (environment only). A user token's subject is the user id: it
reads that user's recommendations and nothing else. A service token carries the scope
`events:write` and may post events. Missing, expired, forged or foreign-audience tokens are 401;
a valid token for another user, or without the scope, is 403. Each credential (the token's
subject) gets `auth.rate_per_s` requests per second with bursts of `auth.burst`; beyond that, 429.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from recsys.config import AuthConfig

ALGORITHM = "HS256"
EVENTS_WRITE = "events:write"


class Unauthorized(Exception):
    """No usable token: missing, malformed, expired, or not signed by us (401)."""


class Forbidden(Exception):
    """A valid token that does not allow this request (403)."""


def mint(cfg: AuthConfig, secret: str, subject: str, scopes: Sequence[str] = (), ttl_s: int | None = None) -> str:
    """A signed token for `subject` (a user id, or a service name with scopes), valid `ttl_s` seconds."""
    now = int(time.time())
    claims = {"sub": subject, "iss": cfg.issuer, "aud": cfg.audience, "iat": now,
              "exp": now + (ttl_s if ttl_s is not None else cfg.token_ttl_s)}
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer(cfg: AuthConfig, secret: str, subject: str, scopes: Sequence[str] = ()) -> dict[str, str]:
    """HTTP headers carrying a fresh token for `subject`."""
    return {"Authorization": f"Bearer {mint(cfg, secret, subject, scopes)}"}


@dataclass(frozen=True)
class Caller:
    """Who a verified token says is calling."""
    subject: str
    scopes: frozenset[str]


def _token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required")
    return token


def _claims(cfg: AuthConfig, secret: str, token: str) -> dict:
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM], audience=cfg.audience, issuer=cfg.issuer,
                          options={"require": ["exp", "sub", "iss", "aud"]}, leeway=cfg.leeway_s)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is not valid") from None


class Verifier:
    """Each API worker's check of `Authorization: Bearer <jwt>` headers, which keeps the tokens it
    proved until they expire: a token seen before costs a lookup and a clock read instead of a
    signature check and a JSON parse (PyJWT took 12% of a recommendation request's time under load;
    `benchmarks/README.md`).

    Keyed by the whole token, signature included, so any other token is verified anew. What PyJWT
    checks once holds for the token's life (signature, issuer, audience, issued-at), except the
    expiry, which is checked again on every use with the same leeway. Bounded like `RateLimiter`.
    """

    def __init__(self, cfg: AuthConfig, secret: str, max_tokens: int = 100_000) -> None:
        self.cfg, self.secret, self.max_tokens = cfg, secret, max_tokens
        self._proved: dict[str, tuple[Caller, float]] = {}

    def __call__(self, authorization: str | None) -> Caller:
        """The caller the header proves, or `Unauthorized` (missing, malformed, expired, forged)."""
        token = _token(authorization)
        proved = self._proved.get(token)
        if proved is not None:
            if time.time() < proved[1]:
                return proved[0]
            self._proved.pop(token, None)
            raise Unauthorized("the token has expired")
        claims = _claims(self.cfg, self.secret, token)
        if len(self._proved) >= self.max_tokens:
            self._proved.clear()  # bounded memory: a token dropped is simply verified again
        caller = Caller(str(claims["sub"]), frozenset(str(claims.get("scope", "")).split()))
        self._proved[token] = (caller, float(claims["exp"]) + self.cfg.leeway_s)
        return caller


def require_user(caller: Caller, user_id: str) -> None:
    """Only the user themself reads their recommendations."""
    if caller.subject != user_id:
        raise Forbidden("this token is for another user")


def require_scope(caller: Caller, scope: str) -> None:
    """The token must carry `scope`."""
    if scope not in caller.scopes:
        raise Forbidden(f"this token lacks the scope {scope!r}")


class RateLimiter:
    """A token bucket per credential: `rate_per_s` sustained, `burst` at once; thread-safe."""

    def __init__(self, rate_per_s: float, burst: int, max_credentials: int = 100_000) -> None:
        self.rate, self.burst, self.max_credentials = rate_per_s, float(burst), max_credentials
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, credential: str) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(credential, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self.max_credentials and credential not in self._buckets:
                self._buckets.clear()  # bounded memory: idle buckets are full anyway
            if tokens < 1:
                self._buckets[credential] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[credential] = (tokens - 1, now)
            return 0.0
