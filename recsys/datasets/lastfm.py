"""HetRec 2011 Last.fm 2K -> contract events and accounts (`jobs/import_lastfm.py --source DIR`).

- One `play` per (user, artist) with `count` = the listening count (`weight`), no track, dated
  deterministically inside that user's tagging period (from `user_taggedartists.dat`, trusted
  dates only), so the sum of `count` per (user, artist) equals `weight` exactly.
- One `follow` per (user, artist) the user tagged, dated by the first day they tagged it. Tag
  rows dated before 2000 (five in the data set) keep their date: the pipeline must distrust
  them, as it would from any producer. Tag rows for artists missing from `artists.dat` (no name,
  which the contract requires) are counted in the report and not emitted.
- An artist's genres are its most frequent tags (up to three); names stay exactly as in
  `artists.dat`, Unicode and odd punctuation included.
- Accounts carry no PII (the data set has none): NULLs, and `signup_at` at first activity.

Files are "written" at the day after the last event, with fixed names, so a rerun replaces the
same files instead of adding copies.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recsys.landing.zone import write_file

TRUSTED_FROM = datetime(2005, 1, 1, tzinfo=UTC)
FALLBACK_PERIOD = (datetime(2008, 1, 1, tzinfo=UTC), datetime(2011, 1, 1, tzinfo=UTC))
GENRES_PER_ARTIST = 3
LINES_PER_FILE = 25_000
_NAMESPACE = uuid.UUID("6f1c2a52-8c1e-4d59-9a57-0c1f0f3b2a11")


@dataclass
class ImportReport:
    """What the Last.fm import wrote: plays, follows, accounts, files, and rows it had to skip."""
    plays: int = 0
    play_count_total: int = 0
    follows: int = 0
    skipped_tag_rows_unknown_artist: int = 0
    untrusted_follow_dates: int = 0
    accounts: int = 0
    files: list[str] = field(default_factory=list)


def _rows(path: Path, encoding: str = "utf-8") -> Iterator[list[str]]:
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)  # header
        yield from reader


def _event_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


def _fraction(*parts: str) -> float:
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


# artist names, tag values, (user, artist, plays) and (user, artist, tag, tagged on)
Dataset = tuple[dict[str, str], dict[str, str], list[tuple[str, str, int]], list[tuple[str, str, str, datetime]]]


def read_dataset(source: str | Path) -> Dataset:
    """The four files the importer needs, as plain Python structures."""
    source = Path(source)
    names = {row[0]: row[1] for row in _rows(source / "artists.dat")}
    tag_values = {row[0]: row[1] for row in _rows(source / "tags.dat", encoding="iso-8859-1")}
    weights = [(u, a, int(w)) for u, a, w in _rows(source / "user_artists.dat")]
    tagged = [
        (u, a, t, datetime(int(y), int(m), int(d), tzinfo=UTC))
        for u, a, t, d, m, y in _rows(source / "user_taggedartists.dat")
    ]
    return names, tag_values, weights, tagged


def convert(source: str | Path) -> tuple[list[dict], list[dict], ImportReport]:
    """Events (contract payloads) and account rows for the data set in `source`."""
    names, tag_values, weights, tagged = read_dataset(source)
    report = ImportReport()

    tag_counts: dict[str, Counter] = defaultdict(Counter)
    first_tagged: dict[tuple[str, str], datetime] = {}
    rows_per_pair: Counter = Counter()
    period: dict[str, list[datetime]] = {}
    for user, artist, tag, day in tagged:
        tag_counts[artist][tag_values.get(tag, tag)] += 1
        key = (user, artist)
        rows_per_pair[key] += 1
        first_tagged[key] = min(day, first_tagged.get(key, day))
        if day >= TRUSTED_FROM:
            lo_hi = period.setdefault(user, [day, day])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], day), max(lo_hi[1], day)
    genres = {
        artist: [tag for tag, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:GENRES_PER_ARTIST]]
        for artist, counts in tag_counts.items()
    }

    def card(artist: str) -> dict:
        out: dict[str, object] = {"artist_id": artist, "artist_name": names[artist]}
        if artist in genres:
            out["genre"] = genres[artist]
        return out

    events: list[dict] = []
    first_seen: dict[str, datetime] = {}
    for user, artist, weight in weights:
        start, end = period.get(user, FALLBACK_PERIOD)
        end = end + timedelta(days=1)
        ts = start + (end - start) * _fraction("play", user, artist)
        ts = ts.replace(microsecond=0)
        events.append({"event_id": _event_id("play", user, artist), "event_type": "play", "event_ts": _iso(ts),
                       "user_id": user, "count": weight, "card": card(artist),
                       "context": {"source": "import"}})
        report.plays += 1
        report.play_count_total += weight
        first_seen[user] = min(ts, first_seen.get(user, ts))
    for (user, artist), day in sorted(first_tagged.items()):
        if artist not in names:
            report.skipped_tag_rows_unknown_artist += rows_per_pair[(user, artist)]
            continue
        ts = day + timedelta(hours=12)
        events.append({"event_id": _event_id("follow", user, artist), "event_type": "follow",
                       "event_ts": _iso(ts), "user_id": user, "card": card(artist),
                       "context": {"source": "import"}})
        report.follows += 1
        report.untrusted_follow_dates += day < TRUSTED_FROM
        if day >= TRUSTED_FROM:
            first_seen[user] = min(ts, first_seen.get(user, ts))

    accounts = [
        {"user_id": user, "signup_at": first_seen.get(user, FALLBACK_PERIOD[0])}
        for user in sorted({u for u, _, _ in weights} | {u for u, _, _, _ in tagged}, key=int)
    ]
    report.accounts = len(accounts)
    return events, accounts, report


def import_lastfm(source: str | Path, landing: str | Path,
                  on_accounts: Callable[[list[dict]], object] | None = None) -> ImportReport:
    """Convert the data set and land it as contract files; `on_accounts(rows)` loads accounts."""
    events, accounts, report = convert(source)
    last = max(datetime.fromisoformat(e["event_ts"].replace("Z", "+00:00")) for e in events)
    written_at = (last + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    for n, start in enumerate(range(0, len(events), LINES_PER_FILE)):
        chunk = events[start:start + LINES_PER_FILE]
        lines = (json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in chunk)
        path = write_file(landing, written_at, lines, name=f"lastfm-2k-{n:04d}", compress=True)
        report.files.append(str(path))
    if on_accounts is not None:
        on_accounts(accounts)
    return report
