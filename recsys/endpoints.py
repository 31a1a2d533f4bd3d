"""Where the servers are, and the one error every job reports when one does not answer."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlparse

from recsys.config import Config

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ServiceUnavailable(RuntimeError):
    """A configured server does not answer; the message names it and its host:port."""


@dataclass(frozen=True)
class Endpoint:
    """A network service the jobs need, named for error messages."""
    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} at {self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """Whether the service is on this machine (so `make services-up` can start it)."""
        return self.host in LOCAL_HOSTS

    def answers(self, timeout_s: float = 1.0) -> bool:
        """Whether a TCP connection opens within `timeout_s`."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def require(self, timeout_s: float = 1.0) -> None:
        """Raise `ServiceUnavailable` naming the service, and how to start it when local, unless it answers."""
        if not self.answers(timeout_s):
            hint = " (start it with `make services-up`)" if self.is_local else ""
            raise ServiceUnavailable(f"{self} is not reachable{hint}")


def postgres_endpoint(cfg: Config) -> Endpoint:
    """The configured PostgreSQL server."""
    return Endpoint("PostgreSQL", cfg.postgres.host, cfg.postgres.port)


def redis_endpoint(cfg: Config) -> Endpoint:
    """The configured Redis server."""
    url = urlparse(cfg.redis.url)
    return Endpoint("Redis", url.hostname or "127.0.0.1", url.port or 6379)
