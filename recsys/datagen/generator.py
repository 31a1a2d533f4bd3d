"""Generate a landing zone, the accounts table and the ground truth, day by day.

Memory stays bounded: a day's events are produced as a stream, and each landing hour is written
out as soon as no later day can add to it (events arrive minutes to ~20 hours after they
happen). Outputs beside the landing zone, under `<landing>/_meta/`:

- `manifest.json`: the parameters, lines and files written, logical events per type, and per
  dirt kind the exact number of records injected, what the pipeline must do with them, and
  whether they break `event.schema.json`.
- `truth/affinities.csv.gz`: each user's true artist affinities (library weights).
- `truth/future_plays.csv.gz`: plays per (user, artist) in the `future_days` after the last
  generated day, never put in the landing zone: the answer key for recommendation quality.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from recsys.config import DatagenConfig
from recsys.datagen.behaviour import DAY_MS, HOUR_MS, DayGenerator
from recsys.datagen.dirt import KIND_BY_NAME, Dirtier, kind_rates
from recsys.datagen.world import LIBRARY_SIZE, Catalog, Population, accounts, build_catalog, build_population, rng_for
from recsys.landing.zone import write_file

log = logging.getLogger(__name__)

META_DIR = "_meta"


# The generator's parameters are the `datagen` config section itself; per-kind dirt rates may
# arrive as text from the environment or `--set`, and `kind_rates` reads them as numbers.
GeneratorSpec = DatagenConfig


def manifest_path(landing: str | Path) -> Path:
    """Where the generator writes its manifest in a landing zone."""
    return Path(landing) / META_DIR / "manifest.json"


def read_manifest(landing: str | Path) -> dict | None:
    """The manifest of a generated landing zone, or None when none was generated there."""
    path = manifest_path(landing)
    return json.loads(path.read_text()) if path.exists() else None


class _HourBuffer:
    """Lines waiting for their landing hour to be complete, then written as files."""

    def __init__(self, landing: Path, spec: GeneratorSpec):
        self.landing, self.spec = landing, spec
        self.pending: dict[int, list[str]] = defaultdict(list)  # by hour since the epoch
        self.files = 0

    def add(self, line: str, arrival_ms: int) -> None:
        self.pending[arrival_ms // HOUR_MS].append(line)

    def flush_before(self, limit_ms: int | None, tag: str) -> None:
        rng = rng_for(self.spec.seed, "files", tag)
        for hour in sorted(h for h in self.pending if limit_ms is None or h * HOUR_MS < limit_ms):
            lines = self.pending.pop(hour)
            written_at = datetime.fromtimestamp(hour * 3600, UTC)
            chunks = np.array_split(np.arange(len(lines)), min(self.spec.files_per_hour, len(lines)))
            for n, chunk in enumerate(chunks):
                write_file(self.landing, written_at, (lines[i] for i in chunk), name=f"part-{tag}-{n:03d}",
                           compress=bool(rng.random() < self.spec.gzip_share))
                self.files += 1


def generate(
    landing: str | Path,
    spec: GeneratorSpec,
    *,
    append_days: int | None = None,
    on_accounts: Callable[[list[dict]], object] | None = None,
) -> dict:
    """Write `spec.days` days (or `append_days` more) into `landing`; return the manifest.

    `on_accounts(rows)` receives the account rows on a fresh landing zone (the job loads them
    into PostgreSQL); appending days keeps the accounts as they are.
    """
    landing = Path(landing)
    started = time.monotonic()
    if spec.artists < 2 * LIBRARY_SIZE or spec.users < 1 or spec.days < 0:
        raise ValueError(f"datagen: need artists >= {2 * LIBRARY_SIZE}, users >= 1 and days >= 0; got {spec}")
    previous = read_manifest(landing)
    if append_days is None and previous is not None:
        raise FileExistsError(f"{landing} already holds generated data; use --append-days N to add days")
    if append_days is not None and previous is None:
        raise FileNotFoundError(f"{landing} has no generated data to append to (no {manifest_path(landing)})")
    if previous is not None:
        spec = GeneratorSpec(**{**previous["spec"], "future_days": spec.future_days})
    first_day = previous["days_generated"] if previous else 0
    n_days = append_days if append_days is not None else spec.days
    start = date.fromisoformat(spec.start_date)

    rates = kind_rates(spec.dirt_rate, spec.dirt)
    catalog = build_catalog(spec.seed, spec.artists)
    population = build_population(spec.seed, spec.users, catalog)
    account_rows = accounts(spec.seed, population, start)
    if previous is None and on_accounts is not None:
        on_accounts(account_rows)

    by_user = {row["user_id"]: row for row in account_rows}
    buffer = _HourBuffer(landing, spec)
    dirt: Counter[str] = Counter()
    event_types: Counter[str] = Counter()
    lines = 0
    for day_index in range(first_day, first_day + n_days):
        day = start + timedelta(days=day_index)
        dirtier = Dirtier(rng_for(spec.seed, "dirt", day_index), rates, by_user)
        generator = DayGenerator(spec.seed, catalog, population, day_index, day)
        for event in generator.events():
            event_types[event.payload["event_type"]] += 1
            applied, rendered = dirtier.render(dirtier.choose(), event.payload, event.ts_ms, event.arrival_ms)
            if applied:
                dirt[applied] += 1
            for line, arrival in rendered:
                buffer.add(line, arrival)
                lines += 1
        buffer.flush_before(generator.day_ms + DAY_MS, tag=f"d{day_index:04d}")
        log.info("day %s: %d lines so far", day, lines)
    buffer.flush_before(None, tag=f"d{first_day + n_days - 1:04d}-tail")

    landing_seconds = time.monotonic() - started
    end_day = first_day + n_days
    write_truth(landing, spec, catalog, population, end_day)
    manifest = _merge_manifest(previous, spec, end_day, lines, buffer.files, event_types, dirt)
    manifest["last_run"] = {"days": [first_day, end_day], "lines": lines, "files": buffer.files,
                            "seconds": round(landing_seconds, 2),
                            "truth_seconds": round(time.monotonic() - started - landing_seconds, 2)}
    _write_json_atomically(manifest_path(landing), manifest)
    return manifest


def _merge_manifest(previous: dict | None, spec: DatagenConfig, end_day: int, lines: int, files: int,
                    event_types: Counter, dirt: Counter) -> dict:
    old = previous or {"lines": 0, "files": 0, "events": {}, "dirt": {}}
    merged_types = Counter(old["events"]) + event_types
    merged_dirt = {
        kind.name: {
            "count": old["dirt"].get(kind.name, {}).get("count", 0) + dirt.get(kind.name, 0),
            "outcome": kind.outcome,
            "violates_schema": kind.violates_schema,
        }
        for kind in KIND_BY_NAME.values()
    }
    return {
        "spec": asdict(spec),
        "days_generated": end_day,
        "first_day": spec.start_date,
        "end_exclusive": (date.fromisoformat(spec.start_date) + timedelta(days=end_day)).isoformat(),
        "lines": old["lines"] + lines,
        "files": old["files"] + files,
        "events": dict(sorted(merged_types.items())),
        "dirt": merged_dirt,
    }


def write_truth(landing: Path, spec: GeneratorSpec, catalog: Catalog, population: Population, end_day: int) -> None:
    """True affinities, and the plays of the `future_days` after `end_day` (not landed)."""
    truth = landing / META_DIR / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    with gzip.open(truth / "affinities.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "artist_id", "affinity"])
        for u, user_id in enumerate(population.user_ids):
            for a, w in zip(population.library[u], population.library_weight[u], strict=True):
                writer.writerow([user_id, catalog.artist_ids[a], f"{w:.6f}"])
    future: Counter[tuple[str, str]] = Counter()
    start = date.fromisoformat(spec.start_date)
    for day_index in range(end_day, end_day + spec.future_days):
        day = start + timedelta(days=day_index)
        for event in DayGenerator(spec.seed, catalog, population, day_index, day).events():
            if event.payload["event_type"] == "play":
                future[(event.payload["user_id"], event.payload["card"]["artist_id"])] += 1
    with gzip.open(truth / "future_plays.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "artist_id", "plays"])
        writer.writerows([u, a, n] for (u, a), n in sorted(future.items()))


def _write_json_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
