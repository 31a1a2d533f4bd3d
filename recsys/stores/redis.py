"""Redis: one client factory; connection failures name the server's host:port."""

from __future__ import annotations

import redis

from recsys.config import RedisConfig
from recsys.endpoints import Endpoint, ServiceUnavailable


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client for the configured server and db, checked with a PING."""
    client = redis.Redis.from_url(
        cfg.url,
        db=cfg.db,
        password=cfg.password or None,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
    )
    try:
        client.ping()
    except redis.ConnectionError as err:
        pool = client.connection_pool.connection_kwargs
        endpoint = Endpoint("Redis", pool.get("host", "?"), pool.get("port", 0))
        raise ServiceUnavailable(f"{endpoint} is not reachable ({type(err).__name__})") from err
    return client
