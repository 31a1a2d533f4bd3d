"""Sticky A/B assignment: a user's variant is a pure function of (salt, user_key).

bucket = first 8 bytes of SHA-256(`experiment.salt` + ":" + user_key) mod `experiment.buckets`;
variants own consecutive bucket ranges in name order (`experiment.variants`: name ->
"model_alias:buckets"). Same user, same salt: same variant, on every server and in every batch
job, with no assignment table. A new salt reshuffles everyone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recsys.config import ConfigError, ExperimentConfig


@dataclass(frozen=True)
class Variant:
    """An experiment arm: the model alias it serves and the hash buckets it owns."""
    name: str
    alias: str
    buckets: range


def variants(cfg: ExperimentConfig) -> list[Variant]:
    """The configured variants with their bucket ranges; a one-line error when they do not add up."""
    out, start = [], 0
    for name in sorted(cfg.variants):
        alias, _, size = cfg.variants[name].partition(":")
        try:
            width = int(size)
        except ValueError:
            raise ConfigError(f"experiment.variants.{name}: expected 'model_alias:buckets', "
                              f"got {cfg.variants[name]!r}") from None
        if not alias or width <= 0:
            raise ConfigError(f"experiment.variants.{name}: expected 'model_alias:buckets' with buckets > 0, "
                              f"got {cfg.variants[name]!r}")
        out.append(Variant(name, alias, range(start, start + width)))
        start += width
    if start != cfg.buckets:
        raise ConfigError(f"experiment.variants: buckets add up to {start}, not experiment.buckets = {cfg.buckets}")
    return out


def bucket_of(salt: str, user_key: str, buckets: int) -> int:
    """The stable bucket of a user: a salted SHA-256 of the pseudonymous key, modulo `buckets`."""
    digest = hashlib.sha256(f"{salt}:{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def assign(cfg: ExperimentConfig, user_key: str, table: list[Variant] | None = None) -> Variant:
    """The variant a user is in; the same in every process and run while the salt and split stay."""
    table = table or variants(cfg)
    bucket = bucket_of(cfg.salt, user_key, cfg.buckets)
    return next(v for v in table if bucket in v.buckets)


def aliases(cfg: ExperimentConfig) -> list[str]:
    """The distinct model aliases the experiment serves, in variant order."""
    return list(dict.fromkeys(v.alias for v in variants(cfg)))
