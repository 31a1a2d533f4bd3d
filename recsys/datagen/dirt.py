"""Every kind of dirt the contract says real producers send, each at its own rate.

A record gets at most one kind. `outcome` says what the pipeline must do with it, so tests can
prove each kind was handled: quarantined in bronze or silver (with that reason), dropped as a
duplicate, normalized, masked, or kept. `violates_schema` says whether the record breaks
`event.schema.json`.
"""

from __future__ import annotations

import bisect
import copy
import json
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate

import numpy as np

Applies = Callable[[dict], bool]


def _always(payload: dict) -> bool:
    return True


def _play_with_track(payload: dict) -> bool:
    return payload["event_type"] == "play" and "duration_ms" in payload["card"]


@dataclass(frozen=True)
class DirtKind:
    """One kind of producer dirt: its share of the dirt rate and what bronze or silver must do with it."""
    name: str
    weight: float  # share of the total dirt rate
    outcome: str
    violates_schema: bool
    applies: Applies = _always


KINDS = (
    DirtKind("not_json", 0.04, "quarantine_bronze", True),
    DirtKind("missing_required", 0.04, "quarantine_bronze", True),
    DirtKind("wrong_type", 0.04, "quarantine_bronze", True),
    DirtKind("unknown_event_type", 0.03, "quarantine_bronze", True),
    DirtKind("ts_future", 0.03, "quarantine_silver", False),
    DirtKind("ts_before_2000", 0.03, "quarantine_silver", False),
    DirtKind("negative_duration", 0.02, "quarantine_silver", True, _play_with_track),
    DirtKind("absurd_duration", 0.02, "quarantine_silver", False, _play_with_track),
    DirtKind("played_over_duration", 0.03, "quarantine_silver", False, _play_with_track),
    DirtKind("duplicate", 0.12, "deduplicate", False),
    DirtKind("unknown_user", 0.04, "keep", False),
    DirtKind("pii_in_event", 0.07, "mask", False),
    DirtKind("user_id_as_number", 0.07, "normalize", False),
    DirtKind("artist_id_as_number", 0.05, "normalize", False),
    DirtKind("ts_epoch_millis", 0.08, "normalize", False),
    DirtKind("ts_with_offset", 0.04, "normalize", False),
    DirtKind("name_variant", 0.10, "normalize", False),
    DirtKind("genre_as_string", 0.06, "normalize", False),
    DirtKind("missing_optional", 0.06, "keep", False),
    DirtKind("unknown_field", 0.04, "keep", False),
)
KIND_BY_NAME = {k.name: k for k in KINDS}
MAX_TRUSTED_DURATION_MS = 6 * 3600 * 1000  # longer than any song: an "absurd" duration


def kind_rates(total: float, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Per-kind rates: `total` split by weight, then any per-kind override."""
    weight_sum = sum(k.weight for k in KINDS)
    rates = {k.name: total * k.weight / weight_sum for k in KINDS}
    for name, rate in (overrides or {}).items():
        if name not in rates:
            raise ValueError(f"unknown dirt kind {name!r}; known: {', '.join(rates)}")
        rates[name] = float(rate)
    if sum(rates.values()) > 1:
        raise ValueError(f"dirt rates add up to {sum(rates.values()):.3f}, more than 1")
    return rates


class Dirtier:
    """Decides, per event, which kind of dirt (if any) it gets, and renders its lines."""

    def __init__(self, rng: np.random.Generator, rates: dict[str, float], accounts: dict[str, dict]):
        self.rng = rng
        self.roll = random.Random(int(rng.integers(2**63))).random
        self.names = list(rates)
        self.cdf = list(accumulate(rates[n] for n in self.names))
        self.accounts = accounts

    def choose(self) -> str | None:
        """Draw a dirt kind for the next record, or None to leave it clean."""
        i = bisect.bisect_right(self.cdf, self.roll())
        return self.names[i] if i < len(self.names) else None

    def render(self, kind: str | None, payload: dict, ts_ms: int, arrival_ms: int
               ) -> tuple[str | None, list[tuple[str, int]]]:
        """The lines to land for one event and the kind actually applied (None when clean)."""
        if kind is None or not KIND_BY_NAME[kind].applies(payload):
            return None, [(_dumps(payload), arrival_ms)]
        if kind == "duplicate":
            line = _dumps(payload)
            resent = arrival_ms + int(self.rng.uniform(0, 6 * 3600 * 1000))
            return kind, [(line, arrival_ms), (line, resent)]
        if kind == "not_json":
            line = _dumps(payload)
            return kind, [(line[: int(self.rng.integers(1, len(line) - 1))], arrival_ms)]
        dirty = copy.deepcopy(payload)
        getattr(self, f"_{kind}")(dirty, datetime.fromtimestamp(ts_ms / 1000, UTC))
        return kind, [(_dumps(dirty), arrival_ms)]

    # Each mutates a copy of a valid payload into one record of its kind.
    def _missing_required(self, p: dict, ts: datetime) -> None:
        del p[("event_id", "event_type", "event_ts", "user_id", "card")[self.rng.integers(5)]]

    def _wrong_type(self, p: dict, ts: datetime) -> None:
        choice = self.rng.integers(3)
        if choice == 0:
            p["count"] = "two"
        elif choice == 1:
            p["event_ts"] = True
        else:
            p["card"] = p["card"]["artist_name"]

    def _unknown_event_type(self, p: dict, ts: datetime) -> None:
        p["event_type"] = ("skip", "share", "PLAY ")[self.rng.integers(3)]

    def _ts_future(self, p: dict, ts: datetime) -> None:
        future = ts.replace(year=ts.year + int(self.rng.integers(1, 40)), day=min(ts.day, 28))
        p["event_ts"] = _epoch_ms(future) if self.rng.random() < 0.5 else future.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _ts_before_2000(self, p: dict, ts: datetime) -> None:
        past = ts.replace(year=int(self.rng.integers(1971, 2000)), day=min(ts.day, 28))
        p["event_ts"] = _epoch_ms(past) if self.rng.random() < 0.5 else past.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _negative_duration(self, p: dict, ts: datetime) -> None:
        p["card"]["duration_ms"] = -int(self.rng.integers(1, 300_000))

    def _absurd_duration(self, p: dict, ts: datetime) -> None:
        p["card"]["duration_ms"] = MAX_TRUSTED_DURATION_MS + int(self.rng.integers(1, 10**9))

    def _played_over_duration(self, p: dict, ts: datetime) -> None:
        p["card"]["played_ms"] = p["card"]["duration_ms"] + int(self.rng.integers(1_000, 600_000))

    def _unknown_user(self, p: dict, ts: datetime) -> None:
        p["user_id"] = str(9_000_000 + int(self.rng.integers(0, 1000)))

    def _pii_in_event(self, p: dict, ts: datetime) -> None:
        account = self.accounts[p["user_id"]]
        p["user"] = {"email": account["email"], "display_name": account["full_name"],
                     "ip": f"203.0.113.{int(self.rng.integers(1, 255))}"}

    def _user_id_as_number(self, p: dict, ts: datetime) -> None:
        p["user_id"] = int(p["user_id"])

    def _artist_id_as_number(self, p: dict, ts: datetime) -> None:
        p["card"]["artist_id"] = int(p["card"]["artist_id"])

    def _ts_epoch_millis(self, p: dict, ts: datetime) -> None:
        p["event_ts"] = _epoch_ms(ts)

    def _ts_with_offset(self, p: dict, ts: datetime) -> None:
        hours = int(self.rng.integers(-8, 10))
        local = ts + timedelta(hours=hours)
        sign = "+" if hours >= 0 else "-"
        p["event_ts"] = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" \
            + f"{sign}{abs(hours):02d}:00"

    def _name_variant(self, p: dict, ts: datetime) -> None:
        name = p["card"]["artist_name"]
        variants = (
            name.upper(), name.lower(), f"  {name} ", f"{name}!!", name.replace(" ", "  "),
            unicodedata.normalize("NFD", name),
        )
        p["card"]["artist_name"] = variants[self.rng.integers(len(variants))]

    def _genre_as_string(self, p: dict, ts: datetime) -> None:
        p["card"]["genre"] = p["card"]["genre"][0]

    def _missing_optional(self, p: dict, ts: datetime) -> None:
        p.pop("context", None)
        for key in ("album_name", "volume", "genre", "artist_rank", "artist_followers", "track_likes"):
            p["card"].pop(key, None)

    def _unknown_field(self, p: dict, ts: datetime) -> None:
        p["client_build"] = f"b{int(self.rng.integers(1000, 9999))}"
        p["card"]["mood"] = "upbeat"


def _epoch_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _dumps(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
