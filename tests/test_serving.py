"""Publishing to Redis (bulk loading, atomic switch, rollback, failure), A/B assignment, and the API contract."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import jwt
import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient
from pyspark.sql import functions as F

from recsys.config import AuthConfig, ConfigError, ExperimentConfig, LimitsConfig
from recsys.experiment import assign, variants
from recsys.keys import pseudonym
from recsys.landing.contract import event_errors
from recsys.landing.writer import LandingWriter
from recsys.model.batch import as_lists, flat
from recsys.services import start_redis, stop_redis
from recsys.serving.api import create_app
from recsys.serving.auth import EVENTS_WRITE, bearer, mint
from recsys.serving.publish import publish, rollback
from recsys.serving.store import RecommendationStore, live_key, meta_key, shard_key, versions_key
from recsys.stores.redis import HashLoader, connect, load_hashes
from recsys.stores.resp import bulk_strings

SECRET = "serving-test-secret"
JWT_SECRET = "serving-test-jwt-key-of-32-bytes-or-more"
RECS = ("user_key string, model_alias string, model_version string, model_run_id string, rank int, "
        "artist_id string, artist_name string, score float, source string, segment string, batch_id string")
SEGS = "segment string, rank int, artist_id string, artist_name string, score float, batch_id string"


@pytest.fixture
def serving_cfg(cfg, tmp_path):
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    return dataclasses.replace(
        cfg,
        publish=dataclasses.replace(cfg.publish, prefix=prefix, shards=8, keep_versions=2, batch_size=50),
        gold=dataclasses.replace(cfg.gold, redis_prefix=prefix),  # the artist names publish copies
        privacy=dataclasses.replace(cfg.privacy, pseudonym_secret=SECRET),
        experiment=ExperimentConfig(salt="s1", variants={"A": "champion:50", "B": "challenger:50"}),
        auth=AuthConfig(jwt_secret=JWT_SECRET),
        serving=dataclasses.replace(cfg.serving, live_cache_s=0.0),  # tests switch versions and expect it at once
    )


def _as(cfg, subject: str, *scopes: str) -> dict[str, str]:
    return bearer(cfg.auth, JWT_SECRET, subject, scopes)


def _service(cfg) -> dict[str, str]:
    return _as(cfg, "service:test", EVENTS_WRITE)


def _batch(spark, batch: str, users: list[str], offset: int):
    """Three artists per user and alias; which artists depends on `offset`, so versions differ.
    The lists as the batch writes them, the segment lists, and the artists' names."""
    rows = [(u, alias, version, "run", r, f"ar{(i + offset + r) % 50}", f"Artist {(i + offset + r) % 50}",
             0.9 - r / 10, "als", "18-24|DE", batch)
            for i, u in enumerate(users) for alias, version in (("champion", "1"), ("challenger", "2"))
            for r in (1, 2, 3)]
    segs = [("18-24|DE", r, f"ar{40 + r}", f"Artist {40 + r}", 0.5 / r, batch) for r in (1, 2)] + \
           [("*", r, f"ar{30 + r}", f"Artist {30 + r}", 0.4 / r, batch) for r in (1, 2, 3)]
    names = spark.createDataFrame([(f"ar{a}", f"Artist {a}") for a in range(50)],
                                  "artist_id string, artist_name string")
    return as_lists(spark.createDataFrame(rows, RECS)).repartition(4), spark.createDataFrame(segs, SEGS), names


def _expected(lists) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in flat(lists).orderBy("rank").collect():
        out.setdefault((r.user_key, r.model_alias), []).append(r.artist_id)
    return out


def test_assignment_is_sticky_and_follows_the_split():
    cfg = ExperimentConfig(salt="s1", buckets=100, variants={"A": "champion:20", "B": "challenger:80"})
    counts = Counter(assign(cfg, f"user-{i}").name for i in range(20000))
    assert abs(counts["A"] / 20000 - 0.2) < 0.015
    # sticky across processes (API workers, batch jobs): another interpreter with another hash
    # seed assigns every user the same variant
    probe = ("from recsys.config import ExperimentConfig; from recsys.experiment import assign; "
             "cfg = ExperimentConfig(salt='s1', buckets=100, variants={'A': 'champion:20', 'B': 'challenger:80'}); "
             "print(''.join(assign(cfg, f'user-{i}').name for i in range(500)))")
    elsewhere = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert elsewhere == "".join(assign(cfg, f"user-{i}").name for i in range(500))
    other = dataclasses.replace(cfg, salt="s2")
    moved = sum(assign(cfg, f"user-{i}").name != assign(other, f"user-{i}").name for i in range(2000))
    assert moved > 300  # a new salt reshuffles
    with pytest.raises(ConfigError, match="buckets add up to 90, not experiment.buckets = 100"):
        variants(dataclasses.replace(cfg, variants={"A": "champion:10", "B": "challenger:80"}))
    with pytest.raises(ConfigError, match="experiment.variants.A: expected 'model_alias:buckets'"):
        variants(dataclasses.replace(cfg, variants={"A": "champion", "B": "challenger:100"}))


def test_publish_switches_atomically_under_concurrent_readers_and_rolls_back(spark, serving_cfg):
    cfg, prefix = serving_cfg, serving_cfg.publish.prefix
    users = [f"key{i:03d}" for i in range(300)]
    v1, seg1, names = _batch(spark, "b1", users, 0)
    v2, seg2, _ = _batch(spark, "b2", users, 7)
    expected = {"b1": _expected(v1), "b2": _expected(v2)}
    first = publish(spark, cfg, v1, seg1, names)
    assert first.users == {"champion": 300, "challenger": 300} and first.segments == 2

    store = RecommendationStore(connect(cfg.redis), prefix)
    seen, problems, stop = Counter(), [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            for u in users[::10]:
                answer = store.get(u, "challenger", "18-24|DE")
                if answer is None or [a for a, _, _ in answer.items] != expected[answer.version][(u, "challenger")]:
                    problems.append((u, answer))
                seen[answer.version if answer else None] += 1

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    second = publish(spark, cfg, v2, seg2, names)
    stop.set()
    for t in readers:
        t.join()
    assert not problems and seen["b1"] > 0 and second.previous == "b1"
    assert store.get(users[0], "challenger", "x").version == "b2"
    assert publish(spark, cfg, v2, seg2, names).already_live  # publishing the live batch again changes nothing

    assert rollback(cfg) == ("b2", "b1")
    answer = store.get(users[5], "champion", "18-24|DE")
    assert (answer.version, [a for a, _, _ in answer.items]) == ("b1", expected["b1"][(users[5], "champion")])
    cold = store.get("never-seen", "champion", "18-24|DE")
    assert (cold.source, [a for a, _, _ in cold.items]) == ("segment", ["ar41", "ar42"])
    assert [a for a, _, _ in store.get("never-seen", "champion", "65+|FR").items] == ["ar31", "ar32", "ar33"]


def test_failure_mid_publish_leaves_the_previous_version_live(spark, serving_cfg):
    cfg, prefix = serving_cfg, serving_cfg.publish.prefix
    users = [f"key{i:03d}" for i in range(200)]
    good, segs, names = _batch(spark, "good", users, 0)
    publish(spark, cfg, good, segs, names)
    bad, _, _ = _batch(spark, "bad", users, 3)

    @F.udf("string")
    def explode_on_one_user(key):
        if key == "key150":
            raise RuntimeError("executor lost")
        return key

    with pytest.raises(Exception, match="executor lost"):
        publish(spark, cfg, bad.withColumn("user_key", explode_on_one_user("user_key")), segs, names)
    client = connect(cfg.redis)
    assert client.get(live_key(prefix)) == b"good"
    assert not client.exists(meta_key(prefix, "bad"))
    kept = {live_key(prefix).encode(), versions_key(prefix).encode()}
    partial = [k for k in client.scan_iter(f"{prefix}:recs:*") if k not in kept and b":recs:good:" not in k]
    assert all(client.ttl(k) > 0 for k in partial)  # what the failed attempt wrote expires
    assert RecommendationStore(client, prefix).get("key150", "champion", "x").version == "good"


def test_old_versions_expire_beyond_the_kept_window(spark, serving_cfg):
    cfg, prefix = serving_cfg, serving_cfg.publish.prefix
    users = [f"key{i}" for i in range(20)]
    for n in range(3):
        publish(spark, cfg, *_batch(spark, f"v{n}", users, n))
    client = connect(cfg.redis)
    assert client.ttl(meta_key(prefix, "v0")) > 0  # keep_versions = 2: v2 live, v1 kept, v0 expiring
    assert client.ttl(meta_key(prefix, "v1")) == -1 and client.ttl(meta_key(prefix, "v2")) == -1


@pytest.fixture
def api(spark, serving_cfg):
    users = ["42", "7"]
    keys = [pseudonym(SECRET, u) for u in users]
    recs, segs, names = _batch(spark, "api1", keys, 0)
    publish(spark, serving_cfg, recs, segs, names)
    with TestClient(create_app(serving_cfg)) as client:
        yield client, serving_cfg, _expected(recs), keys


def _landed(cfg) -> list[dict]:
    files = sorted(Path(cfg.landing.path, "events").rglob("*.json"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_recommendations_answer_and_log_impressions(api):
    client, cfg, expected, keys = api
    body = client.get("/v1/users/42/recommendations", params={"k": 2}, headers=_as(cfg, "42")).json()
    variant = assign(cfg.experiment, keys[0])
    assert body["variant"] == variant.name and body["source"] == "als"
    assert body["model_version"] == {"champion": "1", "challenger": "2"}[variant.alias]
    assert [i["artist_id"] for i in body["items"]] == expected[(keys[0], variant.alias)][:2]
    assert [i["rank"] for i in body["items"]] == [1, 2] and body["request_id"]
    same = client.get("/v1/users/%2042%20/recommendations", headers=_as(cfg, "42")).json()
    assert same["variant"] == body["variant"]  # same user

    assert all(i["name"] == "Artist " + i["artist_id"][2:] for i in body["items"])  # from the version's artists

    cold = client.get("/v1/users/nobody/recommendations", headers=_as(cfg, "nobody")).json()
    assert cold["source"] == "global" and [i["artist_id"] for i in cold["items"]] == ["ar31", "ar32", "ar33"]
    assert [i["name"] for i in cold["items"]] == ["Artist 31", "Artist 32", "Artist 33"]
    assert client.get("/v1/users/42/recommendations", params={"k": 0}, headers=_as(cfg, "42")).status_code == 422
    assert client.get("/v1/users/42/recommendations", params={"k": 51}, headers=_as(cfg, "42")).status_code == 422

    client.__exit__(None, None, None)  # shutting the app down flushes the landing writer
    landed = _landed(cfg)
    mine = [e for e in landed if e["recommendation"]["request_id"] == body["request_id"]]
    assert [e["card"]["artist_id"] for e in mine] == [i["artist_id"] for i in body["items"]]
    assert all(not event_errors(e) and e["event_type"] == "impression" for e in landed)
    assert {e["recommendation"]["variant"] for e in mine} == {body["variant"]}
    assert [e["recommendation"]["position"] for e in mine] == [0, 1]
    assert len(landed) == 2 + 3 + 3


def test_events_are_validated_before_anything_lands(api):
    client, cfg, _, _ = api
    click = {"event_id": "c1", "event_type": "click", "event_ts": "2026-11-28T21:04:05Z", "user_id": 42,
             "card": {"artist_id": "ar1", "artist_name": "Artist 1"},
             "recommendation": {"request_id": "r1", "model_version": "2", "variant": "B", "position": 0}}
    bad = [click, {**click, "event_id": "c2", "recommendation": None}, {**click, "event_ts": "yesterday"}]
    response = client.post("/v1/events", json=bad, headers=_service(cfg))
    assert response.status_code == 400
    reasons = response.json()["detail"]
    assert {r["index"] for r in reasons} == {1, 2}
    assert any("recommendation" in r["reason"] for r in reasons if r["index"] == 1)
    assert client.post("/v1/events", content=b"{not json",
                       headers={"content-type": "application/json", **_service(cfg)}).status_code == 422
    assert client.post("/v1/events", json=[], headers=_service(cfg)).status_code == 400
    assert client.post("/v1/events", json=click, headers=_service(cfg)).json() == {"accepted": 1}
    client.__exit__(None, None, None)
    assert [e["event_id"] for e in _landed(cfg)] == ["c1"]


@pytest.fixture
def bounded_api(spark, serving_cfg):
    cfg = dataclasses.replace(serving_cfg, limits=LimitsConfig(max_body_bytes=2000, max_events_per_request=3,
                                                               max_string_chars=40, max_count=100))
    recs, segs, names = _batch(spark, "bounded", [pseudonym(SECRET, "42")], 0)
    publish(spark, cfg, recs, segs, names)
    with TestClient(create_app(cfg)) as client:
        yield client, cfg


def test_oversized_or_out_of_bounds_input_is_refused_and_nothing_lands(bounded_api):
    client, cfg = bounded_api
    play = {"event_id": "p1", "event_type": "play", "event_ts": "2026-11-28T21:04:05Z", "user_id": 42,
            "card": {"artist_id": "ar1", "artist_name": "Artist 1"}}
    too_big = json.dumps([play] * 3 + [{**play, "padding": "x" * 2000}]).encode()
    refused = client.post("/v1/events", content=too_big, headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "limits.max_body_bytes (2000 bytes)" in refused.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        yield too_big[:1000]
        yield too_big[1000:]
    chunked = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413

    many = client.post("/v1/events", json=[{**play, "event_id": f"p{i}"} for i in range(4)], headers=_service(cfg))
    assert many.status_code == 413 and "limits.max_events_per_request is 3" in many.json()["detail"]

    click = {**play, "event_id": "c1", "event_type": "click",
             "recommendation": {"request_id": "r1", "model_version": "2", "variant": "B", "position": 0}}
    bad = [play,
           {**play, "event_id": "p2", "count": 101},
           {**play, "event_id": "p3", "card": {"artist_id": "ar1", "artist_name": "y" * 41}},
           {**click, "recommendation": {**click["recommendation"], "model_version": "v1; DROP"}}]
    response = client.post("/v1/events", json=bad[:3], headers=_service(cfg))
    assert response.status_code == 400
    assert {(r["index"], r["reason"]) for r in response.json()["detail"]} == {
        (1, "count: above the maximum 100"), (2, "card.artist_name: longer than 40 characters")}
    label = client.post("/v1/events", json=bad[3], headers=_service(cfg)).json()["detail"]
    assert label == [{"index": 0, "reason": "recommendation.model_version: must be 1-64 of A-Z a-z 0-9 . _ : -"}]
    assert client.get(f"/v1/users/{'9' * 41}/recommendations", headers=_as(cfg, "9" * 41)).status_code == 422
    assert client.post("/v1/events", json=[play, click], headers=_service(cfg)).json() == {"accepted": 2}
    client.__exit__(None, None, None)
    assert sorted(e["event_id"] for e in _landed(cfg)) == ["c1", "p1"]  # only the accepted request landed


def test_only_a_valid_token_for_that_user_reads_a_list_and_only_services_post(api):
    client, cfg, _, _ = api
    url = "/v1/users/42/recommendations"
    assert client.get("/healthz").status_code == 200  # open
    missing = client.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    expired = mint(cfg.auth, JWT_SECRET, "42", ttl_s=-cfg.auth.leeway_s - 5)
    assert client.get(url, headers={"Authorization": f"Bearer {expired}"}).json() == {"detail": "the token has expired"}
    forged = mint(cfg.auth, "not-our-key-but-just-as-long-as-ours!", "42")
    assert client.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    elsewhere = mint(dataclasses.replace(cfg.auth, audience="another-api"), JWT_SECRET, "42")
    assert client.get(url, headers={"Authorization": f"Bearer {elsewhere}"}).status_code == 401
    assert client.get(url, headers={"Authorization": "Basic NDI6eA=="}).status_code == 401
    # Another user's token learns nothing, whether or not the id exists.
    assert client.get(url, headers=_as(cfg, "7")).status_code == 403
    assert client.get("/v1/users/nobody/recommendations", headers=_as(cfg, "7")).status_code == 403
    assert client.get(url, headers=_service(cfg)).status_code == 403
    play = {"event_id": "p1", "event_type": "play", "event_ts": "2026-11-28T21:04:05Z", "user_id": 42,
            "card": {"artist_id": "ar1", "artist_name": "Artist 1"}}
    assert client.post("/v1/events", json=play).status_code == 401
    assert client.post("/v1/events", json=play, headers=_as(cfg, "42")).status_code == 403
    assert client.get(url, headers=_as(cfg, "42")).status_code == 200


def test_a_token_the_api_accepted_is_refused_once_it_expires_and_its_tampered_copies_always(api):
    """Each worker keeps the tokens it verified (`auth.Verifier`): that must not outlive the token."""
    client, cfg, _, _ = api
    url = "/v1/users/42/recommendations"
    token = mint(cfg.auth, JWT_SECRET, "42", ttl_s=3 - cfg.auth.leeway_s)  # usable for 2-3 s, leeway included
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    head, _, signature = token.rpartition(".")
    tampered = f"{head}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert client.get(url, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401
    expires = jwt.decode(token, options={"verify_signature": False})["exp"] + cfg.auth.leeway_s
    time.sleep(max(0.0, expires - time.time() + 0.2))
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).json() == {"detail": "the token has expired"}


def test_each_credential_has_its_own_rate_limit(spark, serving_cfg):
    cfg = dataclasses.replace(serving_cfg, auth=dataclasses.replace(serving_cfg.auth, rate_per_s=0.5, burst=3))
    recs, segs, names = _batch(spark, "limited", [pseudonym(SECRET, "42")], 0)
    publish(spark, cfg, recs, segs, names)
    with TestClient(create_app(cfg)) as client:
        token = _as(cfg, "42")
        codes = [client.get("/v1/users/42/recommendations", headers=token).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/v1/users/42/recommendations", headers=token)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/users/7/recommendations", headers=_as(cfg, "7")).status_code == 200  # not shared


def test_health_and_docs(api, serving_cfg):
    client = api[0]
    assert client.get("/healthz").json() == {"status": "ok", "live_version": "api1"}
    assert "/v1/users/{user_id}/recommendations" in client.get("/openapi.json").json()["paths"]
    connect(serving_cfg.redis).delete(live_key(serving_cfg.publish.prefix))
    assert client.get("/healthz").status_code == 503
    assert client.get("/v1/users/42/recommendations", headers=_as(serving_cfg, "42")).status_code == 503


def test_packaged_schema_is_the_contract():
    from recsys.landing.contract import event_schema
    from tests.conftest import CONTRACTS_DIR

    assert event_schema() == json.loads((CONTRACTS_DIR / "event.schema.json").read_text())


def test_bulk_loader_writes_runs_exactly_and_surfaces_redis_errors(spark, cfg):
    """`bulk_strings` + `HashLoader`: multi-byte text survives the wire encoding, interleaved
    runs of one hash all land, and a Redis error fails the load instead of being counted."""
    prefix = f"t-{uuid.uuid4().hex[:12]}:"
    rows = [(f"h{i % 3}", f"user-{i}", f"Motörhead ✓ {i}" * (i % 4)) for i in range(1000)]
    table = spark.createDataFrame(rows, "hash string, field string, value string").select(
        "hash", bulk_strings(F.col("field"), F.col("value")).alias("entry")).toArrow()
    client = connect(cfg.redis)
    loader = HashLoader(client, prefix, batch_size=64)
    for batch in table.to_batches(max_chunksize=300):
        loader.load(batch.column("hash"), batch.column("entry"))
    assert loader.close() == 1000 and loader.first_sent <= loader.last_reply
    for h in ("h0", "h1", "h2"):
        got = {k.decode(): v.decode() for k, v in client.hgetall(prefix + h).items()}
        assert got == {f: v for hh, f, v in rows if hh == h}

    client.set(prefix + "h9", "a string, not a hash")
    broken = HashLoader(client, prefix, batch_size=64)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        broken.load(pa.array(["h9"]), table.column("entry").combine_chunks().slice(0, 1))
        broken.close()
    client.delete(*(prefix + h for h in ("h0", "h1", "h2", "h9")))


def test_replacing_load_leaves_exactly_the_new_fields_with_a_ttl_even_across_arrow_batches(spark, cfg):
    """`load_hashes(replace=True, ttl_s=...)`, the feature store's write: stale fields of a hash go,
    a hash whose rows span two Arrow batches keeps all of them, and every hash expires."""
    prefix = f"t-{uuid.uuid4().hex[:12]}:"
    client = connect(cfg.redis)
    client.hset(prefix + "a", mapping={"stale": "x", "f0": "old"})
    rows = [("a", f"f{i}", f"v{i}") for i in range(7)] + [("b", "only", "1")]
    entries = spark.createDataFrame(rows, "hash string, field string, value string").coalesce(1).select(
        "hash", bulk_strings(F.col("field"), F.col("value")).alias("entry")).sortWithinPartitions("hash")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")  # "a" spans three batches
    try:
        [loaded] = load_hashes(entries, cfg.redis, prefix, batch_size=2, replace=True, ttl_s=600).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert loaded["added"] == 8
    assert {k.decode(): v.decode() for k, v in client.hgetall(prefix + "a").items()} == \
        {f"f{i}": f"v{i}" for i in range(7)}
    assert client.hgetall(prefix + "b") == {b"only": b"1"}
    assert all(0 < client.ttl(prefix + h) <= 600 for h in ("a", "b"))
    client.delete(prefix + "a", prefix + "b")


def test_reader_still_serves_a_version_published_with_names_in_the_lists(serving_cfg):
    """Rolling back to a version published before names moved to `P:recs:V:artists` still works."""
    client, prefix = connect(serving_cfg.redis), serving_cfg.publish.prefix
    client.hset(meta_key(prefix, "old"), mapping={"models": json.dumps({"champion": "3"}), "shards": 1})
    client.hset(shard_key(prefix, "old", "champion", 0), "k1",
                json.dumps({"v": "3", "src": "als", "items": [["ar1", "Artist One", "0.9"], ["ar2", "Two", "0.5"]]}))
    client.set(live_key(prefix), "old")
    answer = RecommendationStore(client, prefix).get("k1", "champion", "x")
    assert answer.items == [("ar1", "Artist One", 0.9), ("ar2", "Two", 0.5)] and answer.model_version == "3"
    client.delete(meta_key(prefix, "old"), shard_key(prefix, "old", "champion", 0), live_key(prefix))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_stalled_or_down_answers_503_within_the_timeout_and_recovers_by_itself(spark, serving_cfg, tmp_path):
    """A Redis of its own, started and stopped like the local one: SIGSTOP stalls it (connections
    accepted, nothing answered), stop_redis takes it away, start_redis brings it back."""
    port = _free_port()
    cfg = dataclasses.replace(
        serving_cfg, redis=dataclasses.replace(serving_cfg.redis, url=f"redis://127.0.0.1:{port}"),
        services=dataclasses.replace(serving_cfg.services, state_dir=str(tmp_path / "state")),
        serving=dataclasses.replace(serving_cfg.serving, redis_timeout_ms=200, live_cache_s=0.0))
    start_redis(cfg)
    try:
        recs, segs, names = _batch(spark, "outage", [pseudonym(SECRET, "42")], 0)
        publish(spark, cfg, recs, segs, names)
        pid = int((tmp_path / "state" / "services" / "redis" / "redis.pid").read_text())
        with TestClient(create_app(cfg)) as client:
            def timed() -> tuple[int, float]:
                started = time.monotonic()
                answer = client.get("/v1/users/42/recommendations", headers=_as(cfg, "42"))
                seconds = time.monotonic() - started
                print(answer.status_code, round(seconds, 3), answer.text[:200])  # noqa: T201 (shown on failure)
                return answer.status_code, seconds

            assert timed()[0] == 200
            os.kill(pid, signal.SIGSTOP)
            try:
                status, seconds = timed()
                assert status == 503 and seconds < 0.2 + 0.3  # the timeout, plus the app's own time
                assert client.get("/healthz").status_code == 503
            finally:
                os.kill(pid, signal.SIGCONT)
            assert timed()[0] == 200  # the stalled connection was dropped, a new one answers
            stop_redis(cfg)
            status, seconds = timed()
            assert status == 503 and seconds < 0.5
            start_redis(cfg)
            publish(spark, cfg, recs, segs, names)  # whatever the snapshot kept: the API must find the new server
            assert timed()[0] == 200  # the same app, no restart
            metrics = client.get("/metrics").text
            assert 'recsys_api_redis_errors_total{kind="TimeoutError"}' in metrics
            assert 'recsys_api_requests_total{route="/v1/users/{user_id}/recommendations",status="503"}' in metrics
            assert "/v1/users/42" not in metrics  # routes by template: no user ids
    finally:
        stop_redis(cfg)


SERVER = """
import pickle, sys
import uvicorn
from recsys.serving.api import create_app
cfg = pickle.load(open(sys.argv[1], "rb"))
uvicorn.run(create_app(cfg), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def test_sigterm_under_load_lands_every_impression_answered(spark, serving_cfg, tmp_path):
    """Impressions wait in memory (a minute, 100,000 lines) so that only the shutdown can write them."""
    users = [str(u) for u in range(40)]
    recs, segs, names = _batch(spark, "sigterm", [pseudonym(SECRET, u) for u in users], 0)
    publish(spark, serving_cfg, recs, segs, names)
    cfg = dataclasses.replace(
        serving_cfg, landing=dataclasses.replace(serving_cfg.landing, path=str(tmp_path / "landing")),
        serving=dataclasses.replace(serving_cfg.serving, impression_flush_s=60.0, impression_batch=100_000,
                                    access_log=False))
    (tmp_path / "cfg.pickle").write_bytes(pickle.dumps(cfg))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path / "cfg.pickle"), str(port)],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        time.sleep(0.05)
    answered: list[int] = []
    tokens = {u: _as(cfg, u) for u in users}

    def load(n: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in itertools.count(n):
                user = users[i % len(users)]
                try:
                    response = http.get(f"/v1/users/{user}/recommendations", headers=tokens[user])
                except httpx.TransportError:
                    return  # the server has stopped accepting
                if response.status_code == 200:
                    answered.append(len(response.json()["items"]))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    landed = _landed(cfg)
    assert len(answered) > 100 and len(landed) == sum(answered)
    assert len({e["event_id"] for e in landed}) == len(landed)


def test_landing_writer_retries_an_unwritable_zone_and_drops_beyond_its_bound_by_count(tmp_path):
    blocked = tmp_path / "landing"
    blocked.write_text("a file where the landing folder should be")  # every write fails
    writer = LandingWriter(blocked, max_lines=5, flush_s=0.05, max_buffered=12)
    assert writer.add_lines([f'{{"n":{i}}}' for i in range(10)]) == 10
    time.sleep(0.3)  # several failed attempts
    assert writer.failed_writes > 0 and writer.waiting() == 10 and writer.written == 0
    assert writer.add_lines([f'{{"n":{i}}}' for i in range(10, 15)]) == 2  # bounded: 3 dropped, counted
    assert writer.dropped == 3
    blocked.unlink()  # writable again: the retries land everything kept
    deadline = time.monotonic() + 5
    while writer.written < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    lines = [json.loads(line) for f in sorted(blocked.rglob("*.json")) for line in f.read_text().splitlines()]
    assert sorted(e["n"] for e in lines) == list(range(12)) and writer.written == 12
