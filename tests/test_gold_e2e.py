"""Gold on generated data: statistics, point-in-time rebuilds, id maps, and the feature stores."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.datagen.generator import GeneratorSpec, generate
from recsys.gold import store
from recsys.gold.build import build_gold
from recsys.gold.store import FULL_VIEW, PG_TABLE, sync_feature_store
from recsys.keys import features_key
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from recsys.stores import postgres, redis
from tests.conftest import isolated, persisted_rdds

SPEC = GeneratorSpec(users=120, artists=150, days=3, dirt_rate=0.02, future_days=0, seed=31)
AS_OF = datetime(2026, 10, 3, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _refresh(spark, cfg, run):
    ingest_events(spark, cfg)
    ingest_accounts(spark, cfg, run_id=run)
    build_silver(spark, cfg, run_id=run, now=NOW)


@pytest.fixture(scope="module")
def gold(services, spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("gold")
    cfg = dataclasses.replace(
        isolated(services, root, "gold"),
        privacy=dataclasses.replace(services.privacy, pseudonym_secret="gold-secret"),
        ingest=dataclasses.replace(services.ingest, click_events_to_postgres=False),
    )
    generate(cfg.landing.path, SPEC, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    _refresh(spark, cfg, "first")
    first = build_gold(spark, cfg, AS_OF)
    snapshot = {name: lake.read(spark, lake.table_path(cfg.lake, "gold", name)).drop("as_of").collect()
                for name in ("artist_stats", "track_stats", "user_features", "interactions")}
    sync = sync_feature_store(spark, cfg, stage_suffix="first")
    return cfg, first, snapshot, sync


def _gold(spark, cfg, name):
    return lake.read(spark, lake.table_path(cfg.lake, "gold", name))


@pytest.mark.slow
def test_no_feature_sees_the_future(spark, gold):
    cfg, _, _, _ = gold
    assert _gold(spark, cfg, "interactions").agg(F.max("last_ts")).first()[0] < AS_OF.replace(tzinfo=None)
    latest = _gold(spark, cfg, "user_features").select(F.explode("favourite_artists.last_interaction").alias("t"))
    assert latest.agg(F.max("t")).first()[0] < AS_OF.replace(tzinfo=None)
    tracks = _gold(spark, cfg, "user_features").select(F.explode("recent_tracks.event_time").alias("t"))
    assert tracks.agg(F.max("t")).first()[0] < AS_OF.replace(tzinfo=None)


@pytest.mark.slow
def test_statistics_match_an_independent_computation(spark, gold):
    cfg, _, _, _ = gold
    events = lake.read(spark, lake.table_path(cfg.lake, "silver", "events")).filter(
        F.col("event_time") < F.lit(AS_OF)).collect()
    plays, listeners, days = Counter(), defaultdict(set), defaultdict(set)
    for e in events:
        if e.event_type == "play":
            plays[e.artist_id] += e["count"]
            listeners[e.artist_id].add(e.user_key)
            days[e.artist_id].add(e.event_date)
    stats = {r.artist_id: r for r in _gold(spark, cfg, "artist_stats").collect()}
    assert {a: (r.plays, r.listeners, r.active_days) for a, r in stats.items() if r.plays} == \
        {a: (plays[a], len(listeners[a]), len(days[a])) for a in plays}
    assert sorted(r.trending_rank for r in stats.values() if r.trending_rank) == \
        list(range(1, len(plays) + 1))


@pytest.mark.slow
def test_a_point_in_time_rebuild_equals_the_build_made_then(spark, gold):
    cfg, first, snapshot, _ = gold
    generate(cfg.landing.path, SPEC, append_days=2)
    _refresh(spark, cfg, "second")
    assert lake.current_version(spark, lake.table_path(cfg.lake, "silver", "events")) > first.inputs["silver/events"]
    again = build_gold(spark, cfg, AS_OF)
    for name, rows in snapshot.items():
        rebuilt = _gold(spark, cfg, name).drop("as_of")
        expected = spark.createDataFrame(rows, rebuilt.schema)
        assert rebuilt.exceptAll(expected).count() == 0 and expected.exceptAll(rebuilt).count() == 0, name
    exact = build_gold(spark, cfg, AS_OF, silver_version=first.inputs["silver/events"])
    assert exact.inputs["silver/events"] == first.inputs["silver/events"] != again.inputs["silver/events"]
    history = lake.read(spark, lake.table_path(cfg.lake, "gold", "builds")).count()
    assert history == 3


@pytest.mark.slow
def test_id_maps_are_stable_across_builds(spark, gold):
    cfg, _, snapshot, _ = gold
    before = {(r.user_key, r.artist_id): (r.user_idx, r.artist_idx) for r in snapshot["interactions"]}
    build_gold(spark, cfg, NOW)
    after = {(r.user_key, r.artist_id): (r.user_idx, r.artist_idx) for r in _gold(spark, cfg, "interactions").collect()}
    assert len(after) > len(before)
    assert all(after[k] == v for k, v in before.items())
    users = _gold(spark, cfg, "id_map_users")
    assert users.count() == users.select("user_idx").distinct().count()


@pytest.mark.slow
def test_a_build_releases_what_it_cached_and_keeps_what_the_caller_cached(spark, gold):
    cfg, _, _, _ = gold
    mine = lake.read(spark, lake.table_path(cfg.lake, "silver", "artists")).persist()  # a table gold does not write
    mine.count()
    before = persisted_rdds(spark)
    build_gold(spark, cfg, NOW)
    assert persisted_rdds(spark) == before
    assert mine.storageLevel.useMemory
    mine.unpersist()


def _as_json(spark, cfg, columns):
    """`gold/user_features`' `columns` per user as PostgreSQL's jsonb gives them back: JSON values,
    and None for a NULL array (`to_json` of NULL is NULL).
    """
    rows = _gold(spark, cfg, "user_features").select("user_key", *[F.to_json(c).alias(c) for c in columns])
    return {r.user_key: tuple(None if r[c] is None else json.loads(r[c]) for c in columns) for r in rows.collect()}


@pytest.mark.slow
def test_feature_stores_hold_what_gold_holds_and_sync_incrementally(spark, gold):
    cfg, _, snapshot, first_sync = gold
    assert first_sync.changed == len(snapshot["user_features"])

    def features_now():
        return {r.user_key: r for r in _gold(spark, cfg, "user_features").drop("as_of").collect()}

    build_gold(spark, cfg, AS_OF)
    sync_feature_store(spark, cfg, stage_suffix="again")
    earlier = features_now()
    build_gold(spark, cfg, AS_OF + timedelta(hours=6))  # a few users play: their artists' statistics move
    report = sync_feature_store(spark, cfg, stage_suffix="later")
    moved = sum(earlier.get(key) != row for key, row in features_now().items())
    # Only the users whose own features changed are rewritten, not all whose artists' statistics moved.
    assert 0 < report.changed < moved
    arrays = ("favourite_artists", "recent_tracks", "top_genres")
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT user_key, {', '.join(arrays)} FROM {FULL_VIEW}")
        full = {row[0]: tuple(row[1:]) for row in cur.fetchall()}
    assert full == _as_json(spark, cfg, arrays)  # the view rebuilds gold's rows, statistics and all

    build_gold(spark, cfg, NOW)
    assert sync_feature_store(spark, cfg, stage_suffix="now").changed > 0
    assert sync_feature_store(spark, cfg, stage_suffix="noop").changed == 0
    features = {r.user_key: r for r in _gold(spark, cfg, "user_features").collect()}
    sample = sorted(k for k, r in features.items() if r.favourite_artists)[:10]
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {PG_TABLE}")
        assert cur.fetchone()[0] == len(features)
        cur.execute(f"SELECT user_key, age_group, plays_30d, favourite_artists, top_genres FROM {PG_TABLE} "
                    "WHERE user_key = ANY(%s)", (sample,))
        stored = {row[0]: row[1:] for row in cur.fetchall()}
    client = redis.connect(cfg.redis)
    for key in sample:
        f = features[key]
        age, plays_30d, favourites, genres = stored[key]
        assert (age, plays_30d, genres) == (f.age_group, f.plays_30d, list(f.top_genres))
        assert [a["artist_id"] for a in favourites] == [a.artist_id for a in f.favourite_artists]
        cached = client.hgetall(features_key(cfg.gold.redis_prefix, key))
        assert json.loads(cached[b"favourite_artist_ids"]) == [a.artist_id for a in f.favourite_artists]
        assert cached[b"age_group"].decode() == f.age_group
        assert 0 < client.ttl(features_key(cfg.gold.redis_prefix, key)) <= cfg.gold.feature_ttl_s


@pytest.mark.slow
def test_upgrading_to_stored_digests_rewrites_no_user(spark, gold):
    """A lake whose `user_features` predates the stored `feature_hash`: the sync computes the digests
    the build now stores (the same ones), before and after `make migrate`, so no user is rewritten.
    """
    cfg, _, _, _ = gold
    path = lake.table_path(cfg.lake, "gold", "user_features")
    build_gold(spark, cfg, NOW)
    sync_feature_store(spark, cfg, stage_suffix="digests")
    built = {r.user_key: r.feature_hash for r in _gold(spark, cfg, "user_features").collect()}
    assert None not in built.values() and len(set(built.values())) > len(built) / 2
    # The table as builds wrote it before they stored the digest.
    (_gold(spark, cfg, "user_features").drop("feature_hash").write.format("delta").mode("overwrite")
     .option("overwriteSchema", "true").save(path))
    assert sync_feature_store(spark, cfg, stage_suffix="old").changed == 0
    assert lake.migrate(spark, path)  # the column added, every digest NULL
    assert sync_feature_store(spark, cfg, stage_suffix="migrated").changed == 0
    build_gold(spark, cfg, NOW)
    assert sync_feature_store(spark, cfg, stage_suffix="rebuilt").changed == 0
    assert {r.user_key: r.feature_hash for r in _gold(spark, cfg, "user_features").collect()} == built
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT user_key, feature_hash FROM {PG_TABLE}")
        assert dict(cur.fetchall()) == built


@pytest.mark.slow
def test_a_sync_that_failed_half_way_is_redone_whole(spark, gold, monkeypatch):
    """PostgreSQL written, then Redis gone: the sync records nothing, so the next one writes the
    same users again, and both stores end holding what gold holds (a refresh killed in its feature
    store stage and rerun)."""
    cfg = gold[0]
    sync_feature_store(spark, cfg, stage_suffix="before")
    build_gold(spark, cfg, AS_OF + timedelta(hours=12))  # own features moved since that sync
    arrays = ("favourite_artists", "recent_tracks", "top_genres")
    in_gold = _as_json(spark, cfg, arrays)
    favourites_in_gold = {key: [a["artist_id"] for a in row[0] or []] for key, row in in_gold.items()}

    def in_postgres(table=FULL_VIEW):
        with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT user_key, {', '.join(arrays)} FROM {table}")
            return {row[0]: tuple(row[1:]) for row in cur.fetchall()}

    def favourites_in_postgres():
        return {key: [a["artist_id"] for a in row[0] or []] for key, row in in_postgres(PG_TABLE).items()}

    def favourites_in_redis():
        client = redis.connect(cfg.redis)
        cached = {key: client.hget(features_key(cfg.gold.redis_prefix, key), "favourite_artist_ids")
                  for key in in_gold}
        return {key: value and json.loads(value) for key, value in cached.items()}

    attempted = []

    def redis_gone(changed, removed, cfg):
        attempted.append(changed.count())
        raise ConnectionError("Redis went away mid-sync")

    monkeypatch.setattr(store, "write_redis", redis_gone)
    with pytest.raises(ConnectionError):
        sync_feature_store(spark, cfg, stage_suffix="half")
    monkeypatch.undo()
    # half way: the users' rows in PostgreSQL, not yet in Redis (nor the statistics the view joins)
    assert favourites_in_postgres() == favourites_in_gold != favourites_in_redis()
    redone = sync_feature_store(spark, cfg, stage_suffix="redone")
    assert redone.changed == attempted[0] > 0
    assert favourites_in_redis() == favourites_in_gold and in_postgres() == in_gold
