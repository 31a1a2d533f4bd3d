"""ALS against popularity on data with planted structure, and the holdout split."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F

from recsys.model.als import AlsParams, fit, popularity, with_rating
from recsys.model.metrics import ranking_metrics
from recsys.model.split import latest_holdout, random_holdout
from recsys.model.topk import recommend


def _planted(spark):
    """Four taste groups of 30 users; each user plays most of their group's 12 artists, plus a
    few of 8 globally popular ones. Popularity can only recommend the global hits."""
    rng = random.Random(3)
    rows = []
    for user in range(120):
        group = user % 4
        for artist in rng.sample(range(group * 12, group * 12 + 12), 9):
            rows.append((user, artist, float(rng.randint(3, 30)), f"u{user}"))
        for artist in rng.sample(range(48, 56), 3):
            rows.append((user, artist, float(rng.randint(20, 60)), f"u{user}"))
    return spark.createDataFrame(rows, "user_idx int, artist_idx int, confidence double, user_key string")


def test_holdout_is_deterministic_and_keeps_every_pair_once(spark):
    data = _planted(spark)
    train, test = random_holdout(data, share=0.2, seed=42, min_items=5)
    again_train, again_test = random_holdout(data.repartition(7), share=0.2, seed=42, min_items=5)
    assert sorted(test.collect()) == sorted(again_test.collect())
    assert train.count() + test.count() == data.count()
    per_user = test.groupBy("user_idx").count().select(F.min("count"), F.max("count")).first()
    assert tuple(per_user) == (2, 2)  # floor(0.2 * 12)


def test_latest_holdout_keeps_back_each_users_latest_fifth_and_drops_users_with_few_artists(spark):
    """The default validation split: per user the floor(20%) (at least one) most recently played
    artists, ties by the smaller artist id; users with fewer than 5 artists are left out of both."""
    from datetime import datetime

    from chispa import assert_df_equality

    day = [datetime(2026, 10, d) for d in range(1, 11)]
    rows = [(0, a, 1.0, day[a]) for a in range(10)]  # 10 artists: the 2 latest held out
    rows += [(1, 20 + a, 1.0, day[0]) for a in range(6)]  # 6, all at one time: 1 held, by artist id
    rows += [(2, 30 + a, 1.0, day[a]) for a in range(4)]  # 4: too few to split
    data = spark.createDataFrame(rows, "user_idx int, artist_idx int, confidence double, last_ts timestamp")

    train, test = latest_holdout(data, share=0.2)

    held = spark.createDataFrame([(0, 9, 1.0, day[9]), (0, 8, 1.0, day[8]), (1, 20, 1.0, day[0])],
                                 "user_idx int, artist_idx int, confidence double, last_ts timestamp")
    assert_df_equality(test, held, ignore_row_order=True, ignore_nullable=True)
    kept = data.filter("user_idx < 2").exceptAll(held)
    assert_df_equality(train, kept, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("scaling", ["linear", "log", "bm25"])
def test_als_beats_popularity_on_planted_tastes(spark, scaling):
    data = _planted(spark)
    train, test = random_holdout(data, share=0.2, seed=42)
    users = test.select("user_idx").distinct()
    model, _ = fit(train, AlsParams(rank=8, reg_param=0.1, alpha=1.0, max_iter=10, scaling=scaling))
    als = ranking_metrics(recommend(model, users, train, 10), test, 10, 56, user="user_idx", item="artist_idx")
    pop = ranking_metrics(popularity(train, users, 10), test, 10, 56, user="user_idx", item="artist_idx")
    assert als["ndcg"] > pop["ndcg"] + 0.2 and als["recall"] > pop["recall"]
    recs = recommend(model, users, train, 10)
    assert recs.join(train, on=["user_idx", "artist_idx"], how="inner").count() == 0


def test_bm25_discounts_heavy_users_and_ubiquitous_artists(spark):
    rows = [(0, 0, 5.0), (0, 1, 5.0), (1, 0, 5.0), (2, 0, 5.0), (2, 1, 50.0), (2, 2, 50.0)]
    data = spark.createDataFrame(rows, "user_idx int, artist_idx int, confidence double")
    got = {(r.user_idx, r.artist_idx): r.rating
           for r in with_rating(data, AlsParams(scaling="bm25", bm25_k1=1.2, bm25_b=0.75)).collect()}
    assert got[(0, 1)] > got[(0, 0)]  # artist 0 is everyone's: lower idf
    assert got[(1, 0)] > got[(2, 0)]  # same count, but user 2 plays far more overall
    with pytest.raises(ValueError, match="scaling must be one of linear, log, bm25"):
        with_rating(data, AlsParams(scaling="sqrt"))


def test_users_and_artists_with_only_zero_confidence_train_and_are_never_recommended_back(spark):
    """Real listening logs have pairs with no positive signal (only skipped plays, unlikes): users
    and artists with nothing else made Spark's normal equations singular at rank 32
    (`SingularMatrixException`) before such pairs were kept out of the ratings."""
    rng = random.Random(1)
    rows = [(u, a, float(rng.randint(1, 3))) for u in range(60) for a in rng.sample(range(30), 8)]
    rows += [(u, a, 0.0) for u in range(60, 70) for a in range(5)]  # users who only skipped
    rows += [(u, a, 0.0) for u in range(0, 60, 3) for a in (40, 41)]  # artists only ever skipped
    data = spark.createDataFrame(rows, "user_idx int, artist_idx int, confidence double")

    model, _ = fit(data, AlsParams(rank=32, reg_param=0.1, alpha=1.0, max_iter=5))

    assert {r.id for r in model.itemFactors.select("id").collect()}.isdisjoint({40, 41})
    assert {r.id for r in model.userFactors.select("id").collect()}.isdisjoint(range(60, 70))
    recs = recommend(model, data.select("user_idx").distinct(), data, 10)
    assert recs.select("user_idx").distinct().count() == 60  # users with factors all get lists
    assert recs.join(data, on=["user_idx", "artist_idx"], how="inner").count() == 0  # skipped ones included


@pytest.mark.slow
def test_als_beats_popularity_clearly_on_the_generated_world(spark):
    """The generator's world must carry what real listening carries (users who play an artist
    predict the other artists they play), or no model can beat popularity on the demo: libraries
    drawn only by genre and popularity once left the best ALS level with global popularity."""
    from datetime import date, datetime, timedelta

    from recsys.datagen.behaviour import DayGenerator
    from recsys.datagen.world import build_catalog, build_population
    from recsys.gold.interactions import DEFAULT_WEIGHTS, interactions
    from recsys.model.search import START
    from recsys.model.split import latest_holdout
    from recsys.silver.clean import with_completion

    catalog = build_catalog(7, 800)
    population = build_population(7, 2000, catalog)
    rows = []
    for day in range(7):
        for event in DayGenerator(7, catalog, population, day, date(2026, 10, 1) + timedelta(days=day)).events():
            p, card = event.payload, event.payload["card"]
            rows.append((p["event_type"], p["user_id"], card["artist_id"], datetime.fromtimestamp(event.ts_ms / 1000),
                         card.get("played_ms"), card.get("duration_ms")))
    events = spark.createDataFrame(rows, "event_type string, user_key string, artist_id string, "
                                         "event_time timestamp, played_ms long, duration_ms long") \
        .withColumn("count", F.lit(1)).transform(with_completion)
    pairs = interactions(events, DEFAULT_WEIGHTS).select(
        F.col("user_key").cast("int").alias("user_idx"), F.col("artist_id").cast("int").alias("artist_idx"),
        "confidence", "last_ts")
    train, test = (df.persist() for df in latest_holdout(pairs, 0.2))
    users = test.select("user_idx").distinct()

    model, _ = fit(train, START)

    def ndcg(recs):
        return ranking_metrics(recs, test, 10, 800, user="user_idx", item="artist_idx")["ndcg"]

    als, pop = ndcg(recommend(model, users, train, 10)), ndcg(popularity(train, users, 10))
    assert als >= 1.5 * pop, (als, pop)
