"""The event contract as code: `event.schema.json` (a verbatim copy of the contract's) plus the
rules JSON Schema cannot say, for producers that validate before landing (the API).
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator


@functools.cache
def event_schema() -> dict[str, Any]:
    """The landing zone's JSON Schema for one event, as shipped with the package."""
    return json.loads(resources.files("recsys.landing").joinpath("event.schema.json").read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(event_schema())


def event_errors(event: Any) -> list[str]:
    """Why `event` breaks the contract, one reason per problem (empty when it is well-formed)."""
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(event)'}: {e.message}"
              for e in sorted(_validator().iter_errors(event), key=lambda e: list(map(str, e.absolute_path)))]
    ts = event.get("event_ts") if isinstance(event, dict) else None
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts.strip())
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            errors.append(f"event_ts: {ts!r} is not ISO-8601 with Z or an offset")
    card = event.get("card") if isinstance(event, dict) else None
    if isinstance(card, dict) and isinstance(card.get("played_ms"), int) and isinstance(card.get("duration_ms"), int) \
            and card["played_ms"] > card["duration_ms"]:
        errors.append("card.played_ms: longer than card.duration_ms")
    return errors
