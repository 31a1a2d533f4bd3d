"""Cold-start lists and the re-ranker's features: tiny inputs, whole expected DataFrames."""

from __future__ import annotations

import json

from chispa import assert_approx_df_equality, assert_df_equality

from recsys.model.batch import as_lists, cold_start, flat, segment_lists
from recsys.model.rerank import with_ranker_features

LISTS = "segment string, artist_idx int, rank int, score float"


def test_segment_lists_rank_artists_by_the_share_of_a_segments_users_and_add_a_global_list(spark):
    interactions = spark.createDataFrame([(0, 10), (0, 11), (1, 10), (1, 12), (2, 10), (3, 11), (3, 13)],
                                         "user_idx int, artist_idx int")
    segments = spark.createDataFrame([(0, "a"), (1, "a"), (2, "a"), (3, "b")], "user_idx int, segment string")

    got = segment_lists(interactions, segments, k=2)

    expected = spark.createDataFrame([
        ("a", 10, 1, 1.0), ("a", 11, 2, 1 / 3),  # 11 and 12 tie: the smaller id first
        ("b", 11, 1, 1.0), ("b", 13, 2, 1.0),
        ("*", 10, 1, 0.75), ("*", 11, 2, 0.5),
    ], LISTS)
    assert_approx_df_equality(got, expected, 1e-6, ignore_row_order=True, ignore_nullable=True)


def test_cold_start_serves_the_segment_list_topped_up_from_the_global_one_without_repeats(spark):
    lists = spark.createDataFrame([("b", 11, 1, 1.0), ("b", 13, 2, 1.0), ("*", 10, 1, 0.75), ("*", 11, 2, 0.5)],
                                  LISTS)
    users = spark.createDataFrame([("x", "b"), ("y", "c")], "user_key string, segment string")

    got = cold_start(users, lists, k=3)

    expected = spark.createDataFrame([
        ("x", "b", 11, 1, 1.0, "segment"), ("x", "b", 13, 2, 1.0, "segment"), ("x", "b", 10, 3, 0.75, "global"),
        ("y", "c", 10, 1, 0.75, "global"), ("y", "c", 11, 2, 0.5, "global"),  # a segment without a list
    ], "user_key string, segment string, artist_idx int, rank int, score float, source string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_column_order=True, ignore_nullable=True)


def test_ranker_features_join_artist_and_user_features_and_measure_genre_overlap(spark):
    feedback = spark.createDataFrame([("u1", "a1"), ("u2", "a1"), ("u1", "a2")], "user_key string, artist_id string")
    stats = spark.createDataFrame([("a1", 500, 3, 9000, ["rock", "jazz"])],
                                  "artist_id string, listeners long, trending_rank int, followers long, "
                                  "genres array<string>")
    users = spark.createDataFrame([("u1", "25-34", "DE", ["rock", "pop"])],
                                  "user_key string, age_group string, country string, top_genres array<string>")

    got = with_ranker_features(feedback, stats, users)

    expected = spark.createDataFrame([
        ("u1", "a1", 500.0, 3.0, 9000.0, "25-34", "DE", 0.5),  # rock of the user's 2 top genres
        ("u2", "a1", 500.0, 3.0, 9000.0, "unknown", "unknown", 0.0),  # a user without features
        ("u1", "a2", None, None, None, "25-34", "DE", 0.0),  # an artist without statistics
    ], "user_key string, artist_id string, artist_listeners double, trending_rank double, "
       "artist_followers double, age_group string, country string, genre_overlap double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_column_order=True, ignore_nullable=True)


def test_lists_nest_a_row_per_artist_and_flat_gives_them_back(spark):
    rows = spark.createDataFrame([
        ("u1", "champion", "3", "run", 2, "ar2", "Two", 0.5, "als", "18-24|DE", "b1"),
        ("u1", "champion", "3", "run", 1, "ar1", "One", 0.91234, "als", "18-24|DE", "b1"),
        ("u2", "champion", "3", "run", 1, "ar3", 'Th"ree', 0.4, "segment", "65+|FR", "b1"),
        ("u2", "champion", "3", "run", 2, "ar1", "One", 0.3, "global", "65+|FR", "b1"),
    ], "user_key string, model_alias string, model_version string, model_run_id string, rank int, "
       "artist_id string, artist_name string, score float, source string, segment string, batch_id string")

    lists = as_lists(rows)

    got = {r.user_key: (r.source, [i.artist_id for i in r["items"]], json.loads(r.payload)) for r in lists.collect()}
    assert got == {  # best first; a segment list topped up from the global one is a segment list
        "u1": ("als", ["ar1", "ar2"], {"v": "3", "src": "als", "items": [["ar1", "0.9123"], ["ar2", "0.5"]]}),
        "u2": ("segment", ["ar3", "ar1"], {"v": "3", "src": "segment", "items": [["ar3", "0.4"], ["ar1", "0.3"]]}),
    }
    back = flat(lists).drop("source")
    assert_approx_df_equality(back, rows.drop("source"), 1e-6, ignore_row_order=True, ignore_column_order=True,
                              ignore_nullable=True)
