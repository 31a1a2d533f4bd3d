"""The event contract as code: `event.schema.json` (a verbatim copy of the contract's) plus the
rules JSON Schema cannot say, for producers that validate before landing (the API), plus our own
bounds (`limits.*`): a `count` maximum, a length limit on strings, and a safe character set for
the labels that become MLflow metric names and file names (`recommendation.model_version`,
`recommendation.variant`). Bronze applies the same count maximum and label rule to landed files.

An event `event_errors` passes is one bronze keeps: the same time forms (`ISO_TIME`, `EPOCH_MS`), no
blank id, no `NaN` (`tests/test_bronze_parse.py` puts the same events through both).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from recsys.config import LimitsConfig

LABEL = r"^[A-Za-z0-9._:-]{1,64}$"  # model versions and variants: safe as MLflow metric and file names
_LABEL = re.compile(LABEL)
# `event_ts` as text: ISO-8601 with `Z` or an offset (`+01:00`, `+0100`); `T` or, as RFC 3339 allows,
# `t` or a space between date and time; `z` for `Z`; seconds and up to 9 digits of fraction optional.
# Bronze keeps what matches (silver reads the time), and the API accepts what matches and is a real time.
ISO_TIME = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$"
EPOCH_MS = r"^\d{1,16}$"  # `event_ts` as an integer: epoch milliseconds
# Ids bronze reads as missing when blank (`missing_required`, where it requires them); the API refuses
# them blank wherever they come (the time, the type and the model version have their own checks).
NOT_BLANK = ("event_id", "user_id", "card.artist_id", "card.track_id", "playlist.playlist_id",
             "recommendation.request_id")
# ASCII, as Java reads `\d` in Spark: 0-9 only.
_ISO_TIME, _EPOCH_MS = re.compile(ISO_TIME, re.ASCII), re.compile(EPOCH_MS, re.ASCII)


@functools.cache
def event_schema() -> dict[str, Any]:
    """The landing zone's JSON Schema for one event, as shipped with the package."""
    return json.loads(resources.files("recsys.landing").joinpath("event.schema.json").read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(event_schema())


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every value in `value` that is no object or list, with its path (`card.genre[0]`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path or "(event)", value


def _leaf_errors(event: Any, limit: int) -> list[str]:
    """Strings longer than `limit`, blank ids (`NOT_BLANK`), and `NaN` or `Infinity`: Python's JSON
    reads them, but RFC 8259 has no such numbers, and bronze quarantines such a line as `not_json`.
    """
    errors = []
    for path, value in _leaves(event):
        if isinstance(value, str):
            if len(value) > limit:
                errors.append(f"{path}: longer than {limit} characters")
            if path in NOT_BLANK and not value.strip():
                errors.append(f"{path}: blank")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{path}: {value} is not a JSON number")
    return errors


def _integer(value: Any) -> int | None:
    """`value` as the integer it is for JSON Schema (`2` or `2.0`), else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time_error(ts: Any) -> str | None:
    """Why `event_ts` is no time bronze keeps, beyond its JSON Schema (which checks no format)."""
    if isinstance(ts, str):
        text = ts.strip()
        if not _ISO_TIME.match(text):
            return f"event_ts: {ts!r} is not ISO-8601 with Z or an offset"
        try:
            datetime.fromisoformat(text.upper())
        except ValueError as err:
            return f"event_ts: {ts!r} is not a real time ({err})"
    elif (ms := _integer(ts)) is not None and ms >= 0 and not _EPOCH_MS.match(str(ms)):
        return f"event_ts: {ts} has more digits than epoch milliseconds (16)"
    return None


def _limit_errors(event: dict, limits: LimitsConfig) -> list[str]:
    errors = _leaf_errors(event, limits.max_string_chars)
    count = _integer(event.get("count"))
    if count is not None and count > limits.max_count:
        errors.append(f"count: above the maximum {limits.max_count}")
    rec = event.get("recommendation")
    for name in ("model_version", "variant"):
        label = rec.get(name) if isinstance(rec, dict) else None
        if isinstance(label, str) and not _LABEL.match(label):
            errors.append(f"recommendation.{name}: must be 1-64 of A-Z a-z 0-9 . _ : -")
    return errors


def event_errors(event: Any, limits: LimitsConfig | None = None) -> list[str]:
    """Why `event` breaks the contract or our bounds, one reason per problem (empty when it is well-formed)."""
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '(event)'}: {e.message}"
              for e in sorted(_validator().iter_errors(event), key=lambda e: list(map(str, e.absolute_path)))]
    if isinstance(event, dict) and (problem := _time_error(event.get("event_ts"))):
        errors.append(problem)
    card = event.get("card") if isinstance(event, dict) else None
    if isinstance(card, dict):
        played, duration = _integer(card.get("played_ms")), _integer(card.get("duration_ms"))
        if played is not None and duration is not None and played > duration:
            errors.append("card.played_ms: longer than card.duration_ms")
    if isinstance(event, dict):
        errors += _limit_errors(event, limits or LimitsConfig())
    return errors
