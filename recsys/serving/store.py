"""The Redis key layout of published recommendations, and the reader the API uses.

With P = `publish.prefix` and V a published version (the batch id of `gold/recommendations`):

| key | type | holds |
| --- | --- | --- |
| `P:recs:live` | string | the live version V; switched atomically, last, by `publish` |
| `P:recs:versions` | list | versions newest first: live, then those kept for `--rollback` |
| `P:recs:V:meta` | hash | `models` (alias -> model version), `shards`, `users` (alias -> count), `published_at` |
| `P:recs:V:<alias>:<shard>` | hash | user_key -> list JSON, shard = crc32(user_key) mod `shards` |
| `P:recs:V:segments` | hash | segment (`age_group|country`, `*` = global) -> cold-start list JSON |

A list is `{"v": model version, "src": "als"|"segment"|"global", "items": [[artist_id, name, score], ...]}`,
best first (scores as decimal strings, 4 places). Versions that leave the `publish.keep_versions` window get a TTL of
`publish.expire_after_s`. A reader reads `live` once and then only keys of that version, so it
never mixes two versions; kept versions outlive any in-flight read.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import redis

GLOBAL_SEGMENT = "*"


def live_key(prefix: str) -> str:
    return f"{prefix}:recs:live"


def versions_key(prefix: str) -> str:
    return f"{prefix}:recs:versions"


def meta_key(prefix: str, version: str) -> str:
    return f"{prefix}:recs:{version}:meta"


def shard_key(prefix: str, version: str, alias: str, shard: int) -> str:
    return f"{prefix}:recs:{version}:{alias}:{shard}"


def segments_key(prefix: str, version: str) -> str:
    return f"{prefix}:recs:{version}:segments"


def shard_of(user_key: str, shards: int) -> int:
    """The same as Spark's `crc32(user_key) % shards`."""
    return zlib.crc32(user_key.encode("utf-8")) % shards


def version_keys(prefix: str, version: str, meta: dict[bytes, bytes]) -> list[str]:
    """Every key of a published version, from its meta hash."""
    shards = int(meta.get(b"shards", b"0"))
    aliases = json.loads(meta.get(b"models", b"{}"))
    return [meta_key(prefix, version), segments_key(prefix, version),
            *(shard_key(prefix, version, a, s) for a in aliases for s in range(shards))]


@dataclass(frozen=True)
class Answer:
    version: str            # the published version it came from
    model_version: str
    source: str             # als | segment | global
    items: list[tuple[str, str, float]]


class RecommendationStore:
    def __init__(self, client: redis.Redis, prefix: str):
        self.client, self.prefix = client, prefix
        self._meta: dict[str, tuple[int, dict[str, str]]] = {}

    def live(self) -> str | None:
        value = self.client.get(live_key(self.prefix))
        return value.decode() if value else None

    def _version_meta(self, version: str) -> tuple[int, dict[str, str]]:
        if version not in self._meta:  # a version's meta never changes once live
            meta = self.client.hgetall(meta_key(self.prefix, version))
            self._meta = {version: (int(meta.get(b"shards", b"0")), json.loads(meta.get(b"models", b"{}")))}
        return self._meta[version]

    def get(self, user_key: str, alias: str, segment: str) -> Answer | None:
        """The user's list for `alias` from the live version, else the segment's, else the global one."""
        version = self.live()
        if version is None:
            return None
        shards, models = self._version_meta(version)
        if alias not in models:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(shard_key(self.prefix, version, alias, shard_of(user_key, shards)), user_key)
        pipe.hmget(segments_key(self.prefix, version), [segment, GLOBAL_SEGMENT])
        own, (seg, glob) = pipe.execute()
        if own is not None:
            payload = json.loads(own)
            return Answer(version, payload["v"], payload["src"], _items(payload))
        cold = seg if seg is not None else glob
        if cold is None:
            return None
        items = _items(json.loads(cold))
        return Answer(version, models[alias], "segment" if seg is not None else "global", items)


def _items(payload: dict) -> list[tuple[str, str, float]]:
    return [(artist, name, float(score)) for artist, name, score in payload["items"]]
