"""Names the Spark jobs and the serving process share, in plain Python (no Spark): the
pseudonymous user key, a user's popularity segment, and the online feature store's Redis key.

The API computes these per request, so they must not pull in pyspark; the Spark side
(`recsys.silver.privacy`, `recsys.model.segments`, `recsys.gold.store`) uses the same functions,
so both sides cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac

UNKNOWN = "unknown"


def pseudonym_from_key(key: bytes, user_id: str) -> str:
    """HMAC-SHA-256 of the user id under the secret's bytes, hex: the `user_key`."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(secret: str, user_id: str) -> str:
    """The `user_key` of one user id, as silver makes it."""
    return pseudonym_from_key(secret.encode("utf-8"), user_id)


def forget_token(user_key: str) -> str:
    """SHA-256 of a user key, hex: how the erasure log remembers a forgotten user without naming
    them (the same as Spark's `sha2(user_key, 256)`; one way, so it does not give the key back).
    """
    return hashlib.sha256(user_key.encode("utf-8")).hexdigest()


def segment_name(age_group: str | None, country: str | None) -> str:
    """A user's popularity segment: `age_group|country`, `unknown` for either when missing."""
    return f"{age_group or UNKNOWN}|{country or UNKNOWN}"


def features_key(prefix: str, user_key: str) -> str:
    """The Redis hash holding one user's online features."""
    return f"{prefix}:features:{user_key}"


def artist_names_key(prefix: str) -> str:
    """The Redis hash of the artist catalog's names (artist_id -> name)."""
    return f"{prefix}:artists"
