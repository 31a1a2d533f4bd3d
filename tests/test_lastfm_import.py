"""The Last.fm 2K importer: nothing lost, names untouched, contract-valid, rerunnable."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
from jsonschema import Draft202012Validator

from recsys.config import load_config
from recsys.datasets.lastfm import import_lastfm
from recsys.keys import pseudonym
from recsys.orchestration.lastfm import BENCHMARK_PSEUDONYM_KEY, benchmark_config
from recsys.sources.accounts import TABLE, upsert_accounts
from recsys.stores import postgres
from tests.conftest import CONTRACTS_DIR, LASTFM_DIR


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    landing = tmp_path_factory.mktemp("lastfm-landing")
    accounts: list[dict] = []
    report = import_lastfm(LASTFM_DIR, landing, on_accounts=accounts.extend)
    events = []
    for path in sorted((landing / "events").rglob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            events.extend(json.loads(line) for line in handle)
    return landing, report, events, accounts


def _dat(name: str, encoding: str = "utf-8") -> list[list[str]]:
    return [line.split("\t") for line in (LASTFM_DIR / name).read_text(encoding=encoding).splitlines()[1:]]


@pytest.mark.slow
def test_play_counts_per_user_and_artist_equal_the_weights(imported):
    _, report, events, _ = imported
    counts = Counter()
    for e in events:
        if e["event_type"] == "play":
            counts[(e["user_id"], e["card"]["artist_id"])] += e["count"]
    expected = {(u, a): int(w) for u, a, w in _dat("user_artists.dat")}
    assert counts == Counter(expected)
    assert report.plays == 92_834 and report.play_count_total == sum(expected.values())


@pytest.mark.slow
def test_events_are_contract_valid_and_names_are_kept_verbatim(imported):
    _, _, events, _ = imported
    validator = Draft202012Validator(json.loads((CONTRACTS_DIR / "event.schema.json").read_text()))
    sample = events[::8]  # every 8th of ~163k: jsonschema checks ~5k events/s
    assert len(sample) > 20_000 and all(validator.is_valid(e) for e in sample)
    names = {row[0]: row[1] for row in _dat("artists.dat")}
    landed = {e["card"]["artist_id"]: e["card"]["artist_name"] for e in events}
    assert all(landed[a] == names[a] for a in landed)
    assert any(not name.isascii() for name in landed.values())


@pytest.mark.slow
def test_follows_genres_and_dates(imported):
    _, report, events, _ = imported
    follows = [e for e in events if e["event_type"] == "follow"]
    assert len(follows) == report.follows > 60_000
    assert report.untrusted_follow_dates == sum(e["event_ts"] < "2000" for e in follows) > 0
    assert len({e["event_id"] for e in events}) == len(events)
    with_genre = [e for e in events if "genre" in e["card"]]
    assert len(with_genre) > 0.9 * len(events) and all(1 <= len(e["card"]["genre"]) <= 3 for e in with_genre)
    plays = [e for e in events if e["event_type"] == "play"]
    assert all("2005" <= e["event_ts"] < "2012" for e in plays)


@pytest.mark.slow
def test_accounts_have_no_pii_and_signup_at_first_activity(imported, cfg):
    _, report, events, accounts = imported
    assert report.accounts == len(accounts) == 1892
    assert all(set(row) == {"user_id", "signup_at"} for row in accounts)
    first = {}
    for e in events:
        if e["event_ts"] >= "2005":
            first[e["user_id"]] = min(e["event_ts"], first.get(e["user_id"], e["event_ts"]))
    assert all(row["signup_at"].strftime("%Y-%m-%dT%H:%M:%SZ") == first[row["user_id"]] for row in accounts)
    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {TABLE}")
    assert upsert_accounts(cfg.postgres, accounts) == 1892
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(full_name), count(email), count(latitude) FROM {TABLE}")
        assert cur.fetchone() == (1892, 0, 0, 0)


@pytest.mark.slow
def test_a_rerun_replaces_the_same_files(imported):
    landing, report, _, _ = imported
    before = {p: p.read_bytes() for p in (landing / "events").rglob("*.json.gz")}
    again = import_lastfm(LASTFM_DIR, landing)
    after = {p: p.read_bytes() for p in (landing / "events").rglob("*.json.gz")}
    assert sorted(again.files) == sorted(report.files) and after == before


def test_the_benchmark_pseudonymises_with_its_public_key_whatever_the_machine_secret():
    """eval-lastfm's holdout hashes ids numbered in pseudonym order, so two machines score the same
    test pairs (and can compare figures with the README's) only if both pseudonymise alike.
    """
    machines = [load_config("test", environ={"RECSYS__PRIVACY__PSEUDONYM_SECRET": s}) for s in ("one", "two")]
    benchmarks = [benchmark_config(machine) for machine in machines]
    keys = {pseudonym(b.privacy.pseudonym_secret, "2") for b in benchmarks}
    assert keys == {pseudonym(BENCHMARK_PSEUDONYM_KEY, "2")}
    assert all(b.lake.root != m.lake.root and b.postgres.database != m.postgres.database
               for b, m in zip(benchmarks, machines, strict=True))
