"""Gold transformations on hand-written silver events."""

from __future__ import annotations

import math
import random
import statistics
from datetime import date, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from recsys.frames import Persisted
from recsys.gold.features import favourite_artists, listening, played_tracks, recent_tracks, summaries
from recsys.gold.interactions import DEFAULT_WEIGHTS, interactions, update_id_map, weights_from
from recsys.gold.stats import Windows, artist_stats, track_stats, trending_rank, trending_sums

T0 = datetime(2026, 10, 1)
EVENTS = ("event_id string, event_type string, event_time timestamp, event_date date, user_key string, "
          "count long, artist_id string, track_id string, completion string, played_ms long, "
          "artist_followers long, genres array<string>")


def _events(spark, rows):
    full = [(f"e{i}", kind, T0 + timedelta(hours=h), (T0 + timedelta(hours=h)).date(), user, count, artist, track,
             completion, played, followers, ["rock"]) for i, (kind, h, user, count, artist, track, completion,
                                                               played, followers) in enumerate(rows)]
    return spark.createDataFrame(full, EVENTS)


def test_favourite_artists_are_capped_newest_first_with_the_users_plays(spark):
    rows = [("play", h, "u1", 2, f"a{h}", None, None, None, None) for h in range(5)]
    rows += [("like", 10, "u1", 1, "a0", "t", None, None, None),
             ("impression", 20, "u1", 1, "a9", None, None, None, None)]
    stats = spark.createDataFrame([(f"a{i}", f"Artist {i}", ["rock"], i, i + 1, 100) for i in range(10)],
                                  "artist_id string, artist_name string, genres array<string>, active_days long, "
                                  "trending_rank int, followers long")
    out = favourite_artists(interactions(_events(spark, rows), DEFAULT_WEIGHTS), stats, cap=3)
    expected = spark.createDataFrame(
        [("u1", [("a0", "Artist 0", ["rock"], 0, 1, 100, 2, T0 + timedelta(hours=10)),
                 ("a4", "Artist 4", ["rock"], 4, 5, 100, 2, T0 + timedelta(hours=4)),
                 ("a3", "Artist 3", ["rock"], 3, 4, 100, 2, T0 + timedelta(hours=3))])],
        "user_key string, favourite_artists array<struct<artist_id:string,artist_name:string,genres:array<string>,"
        "active_days:bigint,trending_rank:int,followers:bigint,user_plays:bigint,last_interaction:timestamp>>")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_recent_tracks_are_the_last_plays_with_a_track_newest_first(spark):
    rows = [("play", h, "u1", 1, "a1", f"t{h}", "full" if h % 2 else "skipped", 1000 * h, None) for h in range(4)]
    rows += [("play", 9, "u1", 5, "a1", None, None, None, None)]
    tracks = spark.createDataFrame([(f"t{h}", f"Song {h}", 1, 3, 7, 1000.0, 0.0) for h in range(4)],
                                   "track_id string, track_name string, active_days long, trending_rank int, "
                                   "likes long, avg_listen_ms double, std_listen_ms double")
    artists = spark.createDataFrame([("a1", "Artist", ["rock"], 10)],
                                    "artist_id string, artist_name string, genres array<string>, followers long")
    out = recent_tracks(played_tracks(_events(spark, rows)), tracks, artists, cap=2)
    expected = spark.createDataFrame(
        [("u1", [(f"t{h}", f"Song {h}", "a1", "Artist", ["rock"], 1, 3, 10, 7, 1000.0, 0.0, completion,
                  T0 + timedelta(hours=h)) for h, completion in ((3, "full"), (2, "skipped"))])],
        "user_key string, recent_tracks array<struct<track_id:string,track_name:string,artist_id:string,"
        "artist_name:string,genres:array<string>,active_days:bigint,trending_rank:int,followers:bigint,likes:bigint,"
        "avg_listen_ms:double,std_listen_ms:double,completion:string,event_time:timestamp>>")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_summaries_count_the_last_30_days_plays_and_the_distinct_artists_played(spark):
    rows = [("play", 0, "u1", 2, "a1", None, None, None, None),   # 30 days and an hour before: not in plays_30d
            ("play", 2, "u1", 1, "a1", None, None, None, None),
            ("play", 3, "u1", 1, "a2", None, None, None, None),
            ("play", 4, "u1", 4, None, None, None, None, None),   # no artist: a play, not an artist
            ("like", 5, "u1", 1, "a3", None, None, None, None),   # liked, never played
            ("follow", 6, "u2", 1, "a1", None, None, None, None)]  # plays nothing: no summary
    events = _events(spark, rows)
    out = summaries(listening(events, T0 + timedelta(days=30, hours=1)), interactions(events, DEFAULT_WEIGHTS))
    got = {r.user_key: (r.plays_30d, r.distinct_artists, r.top_genres) for r in out.collect()}
    assert got == {"u1": (6, 2, ["rock"])}


def test_confidence_weighs_completion_likes_follows_and_subtracts_unfollows(spark):
    rows = [("play", 1, "u1", 1, "a1", "t", "full", 1, None), ("play", 2, "u1", 1, "a1", "t", "skipped", 1, None),
            ("play", 3, "u1", 4, "a1", None, None, None, None), ("like", 4, "u1", 1, "a1", "t", None, None, None),
            ("follow", 5, "u1", 1, "a2", None, None, None, None),
            ("unfollow", 6, "u1", 1, "a2", None, None, None, None),
            ("impression", 7, "u1", 1, "a3", None, None, None, None)]
    out = interactions(_events(spark, rows), DEFAULT_WEIGHTS)
    raw = 1.0 - 0.25 + 4 * 1.0 + 3.0
    expected = spark.createDataFrame(
        [("u1", "a1", raw, 6, T0 + timedelta(hours=4), math.log1p(raw)),
         ("u1", "a2", 0.0, 0, T0 + timedelta(hours=6), 0.0)],
        "user_key string, artist_id string, raw_score double, plays bigint, last_ts timestamp, confidence double")
    assert_approx_df_equality(out.select(*expected.columns), expected, precision=1e-9, ignore_row_order=True,
                              ignore_nullable=True)


def test_raw_scores_are_exact_whatever_the_weights_and_the_order_of_the_events(spark):
    """Weights that are not binary fractions (0.1) add up to the same score, to the last bit, however
    the events are partitioned."""
    draw = random.Random(11)
    rows = [("play", i % 40, f"u{i % 3}", draw.randrange(1, 5), "a1", "t", "full", 1, None) for i in range(900)]
    weights = weights_from({"play_full": 0.1})

    def scores(events) -> dict[str, float]:
        return {r.user_key: r.raw_score for r in interactions(events, weights).collect()}

    one, other = scores(_events(spark, rows).coalesce(1)), scores(_events(spark, rows[::-1]).repartition(5))
    assert one == other
    for user in one:
        plays = sum(count for _, _, u, count, *_ in rows if u == user)
        assert one[user] == plays / 10  # the double nearest the exact sum of 0.1 per play


def test_unknown_weight_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown kinds \\['skip'\\]"):
        weights_from({"skip": "1"})


def test_weights_finer_than_a_millionth_are_refused_not_rounded():
    assert weights_from({"like": "2.125", "play_partial": 0.333333})["play_partial"] == 0.333333
    with pytest.raises(ValueError, match="\\['play_partial'\\] have more than six decimals"):
        weights_from({"play_partial": 1 / 3})


def test_trending_rank_orders_by_recent_growth(spark):
    as_of = T0 + timedelta(days=35)
    rows = ([("play", 24 * 10 + i, "u", 1, "steady", None, None, None, None) for i in range(28)]
            + [("play", 24 * 30 + i, "u", 1, "steady", None, None, None, None) for i in range(7)]
            + [("play", 24 * 31 + i, "u", 1, "rising", None, None, None, None) for i in range(7)])
    expected = spark.createDataFrame([("rising", 1), ("steady", 2)], "artist_id string, trending_rank int")
    sums = _events(spark, rows).groupBy("artist_id").agg(*trending_sums(as_of, 7, 28))
    with Persisted() as keep:
        got = trending_rank(sums, "artist_id", 7, 28, keep=keep)
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_followers_count_net_follows_and_fall_back_to_the_displayed_count(spark):
    rows = [("follow", 1, "u1", 1, "a1", None, None, None, 500), ("follow", 2, "u2", 1, "a1", None, None, None, 500),
            ("unfollow", 3, "u2", 1, "a1", None, None, None, 499), ("follow", 4, "u2", 1, "a1", None, None, None, 500),
            ("play", 5, "u3", 1, "a2", None, None, None, 777), ("play", 6, "u3", 1, "a2", None, None, None, 778)]
    events = _events(spark, rows)
    names = spark.createDataFrame([("a1", "A", ["x"]), ("a2", "B", ["y"])],
                                  "artist_id string, artist_name string, genres array<string>")
    # a1: no plays, 2 net follows (u2 followed, unfollowed, followed again); a2: 2 plays by u3 on one day,
    # no follow events, so the latest displayed count; only played artists have a trending rank
    expected = spark.createDataFrame(
        [("a1", "A", ["x"], 0, 0, 0, None, 2, 0), ("a2", "B", ["y"], 2, 1, 1, 1, 778, 0)],
        "artist_id string, artist_name string, genres array<string>, plays bigint, listeners bigint, "
        "active_days bigint, trending_rank int, followers bigint, likes bigint")
    with Persisted() as keep:
        pairs = interactions(events, DEFAULT_WEIGHTS)
        stats = artist_stats(events, names, pairs, T0 + timedelta(days=1), Windows(90, 7, 28), keep=keep)
        assert_df_equality(stats, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_spread_of_listen_time_is_exact_whatever_the_order_of_the_plays(spark):
    """A track's standard deviation of listen time is the same to the last bit however the plays are
    partitioned (a cluster's partitions are not local's), and is the sample standard deviation (0 for
    a track played once)."""
    draw = random.Random(7)
    played = {f"t{t}": [draw.randrange(20_000_000) for _ in range(600)] for t in range(3)} | {"once": [123_456]}
    rows = [("play", i % 40, f"u{i % 7}", 1, "a1", track, "full", ms, None)
            for track, values in played.items() for i, ms in enumerate(values)]
    tracks = spark.createDataFrame([(t, t.upper(), "a1") for t in played], "track_id string, track_name string, "
                                   "artist_id string")

    def spread(events) -> dict[str, float]:
        with Persisted() as keep:
            stats = track_stats(events, tracks, T0 + timedelta(days=2), Windows(90, 7, 28), keep=keep)
            return {r.track_id: r.std_listen_ms for r in stats.collect()}

    draw.shuffle(rows)
    one, other = spread(_events(spark, rows).coalesce(1)), spread(_events(spark, rows[::-1]).repartition(5))
    assert one == other
    assert one.pop("once") == 0.0
    assert all(math.isclose(one[t], statistics.stdev(played[t]), rel_tol=1e-12) for t in one)


def test_id_maps_keep_old_ids_and_number_new_keys(spark, tmp_path):
    path = str(tmp_path / "gold" / "id_map_users")
    update_id_map(spark, path, spark.createDataFrame([("k2",), ("k1",)], "user_key string"), "user_key", "user_idx")
    update_id_map(spark, path, spark.createDataFrame([("k3",), ("k1",), ("k0",)], "user_key string"),
                  "user_key", "user_idx")
    ids = {r.user_key: r.user_idx for r in spark.read.format("delta").load(path).collect()}
    assert ids == {"k1": 0, "k2": 1, "k0": 2, "k3": 3}
    assert dict(spark.read.format("delta").load(path).dtypes)["user_idx"] == "int"


def test_a_build_as_of_a_past_time_knows_only_users_who_had_signed_up_by_then(spark):
    from datetime import UTC

    from chispa import assert_df_equality

    from recsys.gold.features import signed_up_before

    users = spark.createDataFrame([("old", date(2026, 9, 1)), ("that-day", date(2026, 10, 8)),
                                   ("later", date(2026, 10, 9)), ("undated", None)],
                                  "user_key string, signup_date date")

    got = users.transform(signed_up_before(datetime(2026, 10, 8, 12, 0, tzinfo=UTC)))

    expected = spark.createDataFrame([("old", date(2026, 9, 1)), ("that-day", date(2026, 10, 8)), ("undated", None)],
                                     "user_key string, signup_date date")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_a_build_as_of_a_past_time_sees_each_users_age_group_and_place_as_they_were(spark, tmp_path):
    import time
    from datetime import UTC

    from recsys.gold.build import users_as_of

    path = str(tmp_path / "users")
    schema = "user_key string, signup_date date, age_group string, city string"

    def snapshot(age_group, city):
        spark.createDataFrame([("u1", date(2026, 9, 1), age_group, city)], schema) \
            .write.format("delta").mode("overwrite").save(path)
        time.sleep(0.05)  # commit timestamps are milliseconds

    snapshot("18-24", "Lyon")
    between = datetime.now(UTC)
    time.sleep(0.05)
    snapshot("25-34", "Paris")

    then, then_version = users_as_of(spark, path, between)
    now, now_version = users_as_of(spark, path, datetime.now(UTC))
    before_all, first_version = users_as_of(spark, path, datetime(2026, 9, 2, tzinfo=UTC))
    assert [(r.age_group, r.city) for r in then.collect()] == [("18-24", "Lyon")] and then_version == 0
    assert [(r.age_group, r.city) for r in now.collect()] == [("25-34", "Paris")] and now_version == 1
    assert first_version == 0 and before_all.count() == 1  # older than every commit: the oldest state kept
