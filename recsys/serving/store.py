"""The Redis key layout of published recommendations, and the reader the API uses.

With P = `publish.prefix` and V a published version (the batch id of `gold/recommendations`):

| key | type | holds |
| --- | --- | --- |
| `P:recs:live` | string | the live version V; switched atomically, last, by `publish` |
| `P:recs:versions` | list | versions newest first: live, then those kept for `--rollback` |
| `P:recs:V:meta` | hash | `models` (alias -> model version), `shards`, `users` (alias -> count), `published_at` |
| `P:recs:V:<alias>:<shard>` | hash | user_key -> list JSON, shard = crc32(user_key) mod `shards` |
| `P:recs:V:segments` | hash | segment (`age_group|country`, `*` = global) -> cold-start list JSON |
| `P:recs:V:artists` | hash | artist_id -> name, for every artist in the version's lists |

A list is `{"v": model version, "src": "als"|"segment"|"global", "items": [[artist_id, score], ...]}`,
best first (scores as decimal strings, 4 places). Names live once per version in `artists`, not
in every list: lists are half the size, and a reader caches the names it has looked up.
Versions that leave the `publish.keep_versions` window get a TTL of `publish.expire_after_s`.
A reader reads `live` once and then only keys of that version, so it never mixes two versions;
kept versions outlive any in-flight read.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio

from recsys.stores.redis import text

GLOBAL_SEGMENT = "*"


def live_key(prefix: str) -> str:
    """The key holding the live version's name."""
    return f"{prefix}:recs:live"


def versions_key(prefix: str) -> str:
    """The key listing kept versions, newest last."""
    return f"{prefix}:recs:versions"


def version_prefix(prefix: str, version: str) -> str:
    """What every key of a published version starts with."""
    return f"{prefix}:recs:{version}:"


def meta_key(prefix: str, version: str) -> str:
    """A version's metadata hash (model versions, counts, publish time)."""
    return f"{version_prefix(prefix, version)}meta"


def shard_key(prefix: str, version: str, alias: str, shard: int) -> str:
    """One shard hash of an alias's lists (user_key -> list) in a version."""
    return f"{version_prefix(prefix, version)}{alias}:{shard}"


def segments_key(prefix: str, version: str) -> str:
    """A version's cold-start lists by segment."""
    return f"{version_prefix(prefix, version)}segments"


ARTISTS = "artists"


def artists_key(prefix: str, version: str) -> str:
    """A version's artist names (artist_id -> name)."""
    return f"{version_prefix(prefix, version)}{ARTISTS}"


def shard_of(user_key: str, shards: int) -> int:
    """The same as Spark's `crc32(user_key) % shards`."""
    return zlib.crc32(user_key.encode("utf-8")) % shards


def version_keys(prefix: str, version: str, meta: dict[bytes, bytes]) -> list[str]:
    """Every key of a published version, from its meta hash."""
    shards = int(meta.get(b"shards", b"0"))
    aliases = json.loads(meta.get(b"models", b"{}"))
    return [meta_key(prefix, version), segments_key(prefix, version), artists_key(prefix, version),
            *(shard_key(prefix, version, a, s) for a in aliases for s in range(shards))]


def forget_users(client: redis.Redis, prefix: str, user_keys: list[str]) -> int:
    """Delete the users' lists from every version still in Redis (live, kept for rollback, expiring);
    how many lists went. Each user is in one shard per alias, found from the version's meta.
    """
    versions = {text(v) for v in client.lrange(versions_key(prefix), 0, -1)}
    versions |= {(text(k) or "").removeprefix(f"{prefix}:recs:").removesuffix(":meta")
                 for k in client.scan_iter(match=meta_key(prefix, "*"), count=1000)}
    removed = 0
    for version in sorted(v for v in versions if v):
        meta = _Version.from_meta(version, client.hgetall(meta_key(prefix, version)))
        pipe = client.pipeline(transaction=False)
        for alias in meta.models:
            for key in user_keys:
                pipe.hdel(shard_key(prefix, version, alias, shard_of(key, meta.shards)), key)
        removed += sum(pipe.execute())
    return removed


@dataclass(frozen=True)
class _Version:
    name: str
    shards: int
    models: dict[str, str]  # alias -> model version
    names: dict[str, str]   # artist_id -> name, filled as lists are read

    @classmethod
    def from_meta(cls, name: str, meta: Mapping[Any, Any]) -> _Version:
        return cls(name, int(meta.get(b"shards", b"0")), orjson.loads(meta.get(b"models", b"{}")), {})

    def missing_names(self, items: list[list]) -> list[str]:
        """Artists of `items` whose names are not cached yet (older lists carry them inline)."""
        for item in items:
            if len(item) == 3:  # noqa: PLR2004 (a version published before names moved out: [artist_id, name, score]
                self.names.setdefault(item[0], item[1])
        return list({item[0] for item in items if item[0] not in self.names})

    def learn(self, artists: list[str], found: Sequence[bytes | str | None]) -> None:
        """Cache names read from the version's artist hash."""
        self.names.update((a, text(n) or "") for a, n in zip(artists, found, strict=True))

    def items(self, items: list[list]) -> list[tuple[str, str, float]]:
        """(artist_id, name, score), once every name is cached."""
        return [(item[0], self.names[item[0]], float(item[-1])) for item in items]


@dataclass(frozen=True)
class Answer:
    """A list as served: the version it came from, model version, source and (artist_id, name, score) items."""
    version: str            # the published version it came from
    model_version: str
    source: str             # als | segment | global
    items: list[tuple[str, str, float]]


class RecommendationStore:
    """Reads the live version's lists from Redis, caching each version's metadata and names
    (blocking client: for jobs, benchmarks and tests; the API uses `AsyncRecommendationStore`).
    """
    def __init__(self, client: redis.Redis, prefix: str):
        self.client, self.prefix = client, prefix
        self._versions: dict[str, _Version] = {}  # the latest version read

    def live(self) -> str | None:
        """The live version's name, or None before the first publish."""
        return text(self.client.get(live_key(self.prefix))) or None

    def _version(self, name: str) -> _Version:
        version = self._versions.get(name)
        if version is None:  # a version's meta never changes once live
            version = _Version.from_meta(name, self.client.hgetall(meta_key(self.prefix, name)))
            self._versions = {name: version}
        return version

    def _items(self, version: _Version, payload: dict) -> list[tuple[str, str, float]]:
        missing = version.missing_names(payload["items"])
        if missing:
            version.learn(missing, self.client.hmget(artists_key(self.prefix, version.name), missing))
        return version.items(payload["items"])

    def get(self, user_key: str, alias: str, segment: str) -> Answer | None:
        """The user's list for `alias` from the live version, else the segment's, else the global one."""
        live = self.live()
        if live is None:
            return None
        version = self._version(live)
        if alias not in version.models:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(shard_key(self.prefix, live, alias, shard_of(user_key, version.shards)), user_key)
        pipe.hmget(segments_key(self.prefix, live), [segment, GLOBAL_SEGMENT])
        own, (seg, glob) = pipe.execute()
        if own is not None:
            payload = orjson.loads(own)
            return Answer(live, payload["v"], payload["src"], self._items(version, payload))
        cold = seg if seg is not None else glob
        if cold is None:
            return None
        return Answer(live, version.models[alias], "segment" if seg is not None else "global",
                      self._items(version, orjson.loads(cold)))


class AsyncRecommendationStore:
    """The API's reader (`redis.asyncio`): one round trip for a user with a list.

    The live version's name is cached for `live_ttl_s` (a publish reaches every worker within
    it) and each version's meta and artist names for as long as the version is read; a request
    reads `live` once and then only keys of that version, so it never mixes two versions. The
    segment (one more round trip, for the user's features) is looked up only for users without a
    list of their own.
    """
    def __init__(self, client: redis.asyncio.Redis, prefix: str, live_ttl_s: float):
        self.client, self.prefix, self.live_ttl_s = client, prefix, live_ttl_s
        self._live: tuple[float, str | None] = (0.0, None)  # (until, name)
        self._versions: dict[str, _Version] = {}

    async def live(self) -> str | None:
        """The live version's name (cached for `live_ttl_s`), or None before the first publish."""
        now = time.monotonic()
        until, name = self._live
        if now >= until:
            name = text(await self.client.get(live_key(self.prefix))) or None
            self._live = (now + self.live_ttl_s, name)
        return name

    async def _version(self, name: str) -> _Version:
        version = self._versions.get(name)
        if version is None:
            version = _Version.from_meta(name, await self.client.hgetall(meta_key(self.prefix, name)))
            self._versions = {name: version}
        return version

    async def _items(self, version: _Version, payload: dict) -> list[tuple[str, str, float]]:
        missing = version.missing_names(payload["items"])
        if missing:
            version.learn(missing, await self.client.hmget(artists_key(self.prefix, version.name), missing))
        return version.items(payload["items"])

    async def get(self, user_key: str, alias: str, segment: Callable[[], Awaitable[str]]) -> Answer | None:
        """The user's list for `alias` from the live version, else their segment's (`segment()`, called
        only then), else the global one.
        """
        live = await self.live()
        if live is None:
            return None
        version = await self._version(live)
        if alias not in version.models:
            return None
        own = await self.client.hget(shard_key(self.prefix, live, alias, shard_of(user_key, version.shards)), user_key)
        if own is not None:
            payload = orjson.loads(own)
            return Answer(live, payload["v"], payload["src"], await self._items(version, payload))
        seg, glob = await self.client.hmget(segments_key(self.prefix, live), [await segment(), GLOBAL_SEGMENT])
        cold = seg if seg is not None else glob
        if cold is None:
            return None
        return Answer(live, version.models[alias], "segment" if seg is not None else "global",
                      await self._items(version, orjson.loads(cold)))
