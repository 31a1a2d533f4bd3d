"""The generator writes the contract's landing zone, with exactly the dirt its manifest declares."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from recsys.datagen.generator import GeneratorSpec, generate, read_manifest
from recsys.sources.accounts import TABLE
from recsys.stores import postgres
from tests.conftest import CONTRACTS_DIR

SMALL = GeneratorSpec(users=200, artists=120, days=3, dirt_rate=0.3, future_days=2, seed=11)


def landed_files(landing: Path) -> list[Path]:
    return sorted(p for p in (landing / "events").rglob("*") if p.is_file())


def landed_lines(landing: Path) -> list[str]:
    lines = []
    for path in landed_files(landing):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            lines.extend(handle.read().splitlines())
    return lines


@pytest.fixture(scope="module")
def small_landing(tmp_path_factory) -> tuple[Path, dict]:
    landing = tmp_path_factory.mktemp("landing")
    return landing, generate(landing, SMALL)


def test_files_follow_the_contract_layout_and_none_is_left_half_written(small_landing):
    landing, manifest = small_landing
    files = landed_files(landing)
    assert len(files) == manifest["files"]
    for path in files:
        rel = path.relative_to(landing / "events")
        assert rel.parts[0].startswith("dt=2026-10-0") and rel.parts[1].startswith("hour=")
        assert path.name.endswith((".json", ".json.gz"))
    assert {p.suffix for p in files} == {".json", ".gz"}
    assert not list((landing / ".staging").iterdir())


def test_every_line_is_schema_valid_except_exactly_the_injected_bad_ones(small_landing):
    landing, manifest = small_landing
    validator = Draft202012Validator(json.loads((CONTRACTS_DIR / "event.schema.json").read_text()))
    lines = landed_lines(landing)
    assert len(lines) == manifest["lines"]
    invalid = 0
    for line in lines:
        try:
            invalid += not validator.is_valid(json.loads(line))
        except json.JSONDecodeError:
            invalid += 1
    expected = sum(k["count"] for k in manifest["dirt"].values() if k["violates_schema"])
    assert invalid == expected > 0


def test_every_kind_of_dirt_is_injected_and_counted(small_landing):
    _, manifest = small_landing
    assert all(kind["count"] > 0 for kind in manifest["dirt"].values()), manifest["dirt"]
    assert set(manifest["events"]) == {"play", "like", "unlike", "follow", "unfollow", "playlist_add",
                                       "impression", "click"}


def test_duplicates_resend_the_same_event_id(small_landing):
    landing, manifest = small_landing
    ids = Counter()
    for line in landed_lines(landing):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "event_id" in event:
            ids[event["event_id"]] += 1
    assert sum(n - 1 for n in ids.values() if n > 1) == manifest["dirt"]["duplicate"]["count"]


def test_same_seed_same_landing_zone(tmp_path, small_landing):
    landing, _ = small_landing
    again = tmp_path / "again"
    generate(again, SMALL)

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in landed_files(root)}

    assert digest(again) == digest(landing)
    other = tmp_path / "other"
    generate(other, GeneratorSpec(**{**SMALL.__dict__, "seed": 12}))
    assert digest(other) != digest(landing)


def test_append_days_adds_later_days_and_keeps_counting(tmp_path):
    landing = tmp_path / "landing"
    spec = GeneratorSpec(users=60, artists=120, days=1, dirt_rate=0.05, future_days=1, seed=3)
    first = generate(landing, spec)
    with pytest.raises(FileExistsError, match="--append-days"):
        generate(landing, spec)
    after = generate(landing, spec, append_days=2)
    assert after["days_generated"] == 3 and after["end_exclusive"] == "2026-10-04"
    assert after["lines"] == len(landed_lines(landing)) > first["lines"]
    days = {json.loads(line)["event_ts"][:10] for line in landed_lines(landing)
            if line.endswith("}") and '"event_ts":"2026' in line}
    assert {"2026-10-01", "2026-10-02", "2026-10-03"} <= days
    with pytest.raises(FileNotFoundError, match="no generated data"):
        generate(tmp_path / "empty", spec, append_days=1)


def test_ground_truth_future_plays_are_not_in_the_landing_zone(small_landing):
    landing, manifest = small_landing
    with gzip.open(landing / "_meta" / "truth" / "future_plays.csv.gz", "rt") as handle:
        future = handle.read().splitlines()[1:]
    assert len(future) > 100
    end = datetime.fromisoformat(read_manifest(landing)["end_exclusive"]).replace(tzinfo=UTC)
    latest = max(ts for ts in map(_event_time, landed_lines(landing)) if ts and ts.year == 2026)
    assert end - timedelta(hours=1) < latest < end + timedelta(hours=3)  # sessions running past midnight


def _event_time(line: str) -> datetime | None:
    try:
        ts = json.loads(line).get("event_ts")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(ts, bool) or ts is None:
        return None
    if isinstance(ts, int):
        return datetime.fromtimestamp(ts / 1000, UTC)
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def test_clicks_follow_the_click_model(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, GeneratorSpec(users=400, artists=200, days=3, dirt_rate=0.0, future_days=0, seed=5))
    shown, clicked = Counter(), Counter()
    for line in landed_lines(landing):
        event = json.loads(line)
        if event["event_type"] in ("impression", "click"):
            rec, card = event["recommendation"], event["card"]
            key = (rec["variant"], card["artist_rank"] <= 20, rec["position"] < 3)
            (shown if event["event_type"] == "impression" else clicked)[key] += 1

    def ctr(select) -> float:
        return sum(clicked[k] for k in shown if select(k)) / sum(shown[k] for k in shown if select(k))

    assert ctr(lambda k: k[0] == "B") > ctr(lambda k: k[0] == "A")
    assert ctr(lambda k: k[1]) > ctr(lambda k: not k[1])
    assert ctr(lambda k: k[2]) > ctr(lambda k: not k[2])


def test_generated_accounts_land_in_postgres_with_pii_and_nulls(cfg, tmp_path):
    from recsys.sources.accounts import upsert_accounts

    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {TABLE}")
    generate(tmp_path / "landing", GeneratorSpec(users=300, artists=120, days=1, future_days=0),
             on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(email), count(date_of_birth), count(latitude), count(country_code),"
                    f" count(DISTINCT country_code) FROM {TABLE}")
        rows, emails, births, coords, countries, distinct_countries = cur.fetchone()
    assert rows == emails == 300
    assert 250 < births < 300 and 240 < coords < 300 and countries < 300
    assert distinct_countries >= 8
