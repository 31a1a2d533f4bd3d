"""The generator's future plays as an answer key: keyed like silver, only what a user discovers."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

from chispa import assert_df_equality

from recsys import lake
from recsys.config import PrivacyConfig
from recsys.frames import Persisted
from recsys.keys import pseudonym
from recsys.model.truth import FUTURE_PLAYS, future_discoveries

SECRET = "truth-secret"


def _write_truth(landing: Path, rows: list[str]) -> None:
    path = landing / FUTURE_PLAYS
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(["user_id,artist_id,plays", *rows]) + "\n")


def test_future_discoveries_are_new_artists_of_known_users_keyed_like_silver(spark, cfg):
    cfg = dataclasses.replace(cfg, privacy=PrivacyConfig(pseudonym_secret=SECRET))
    _write_truth(Path(cfg.landing.path), [
        " 1001 ,7,3",  # padded id: silver trims before hashing, so must this
        "1001,8,1",  # already in the user's interactions: never recommended, so not relevant
        "1001,9,2",
        "1001,10,0",  # no plays
        "1002,9,2",  # a user without interactions in this build
        "1001,99,1",  # an artist gold has never seen
    ])
    users = [(pseudonym(SECRET, "1001"), 0), (pseudonym(SECRET, "1002"), 1)]
    spark.createDataFrame(users, "user_key string, user_idx int").write.format("delta").save(
        lake.table_path(cfg.lake, "gold", "id_map_users"))
    spark.createDataFrame([("7", 0), ("8", 1), ("9", 2), ("10", 3)], "artist_id string, artist_idx int") \
        .write.format("delta").save(lake.table_path(cfg.lake, "gold", "id_map_artists"))
    interactions = spark.createDataFrame([(0, 1)], "user_idx int, artist_idx int")

    with Persisted() as keep:
        got = future_discoveries(spark, cfg, interactions, keep=keep)

        expected = spark.createDataFrame([(0, 0), (0, 2)], "user_idx int, artist_idx int")
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_no_truth_without_the_file_or_the_secret(spark, cfg):
    interactions = spark.createDataFrame([(0, 1)], "user_idx int, artist_idx int")
    with Persisted() as keep:
        assert future_discoveries(spark, dataclasses.replace(cfg, privacy=PrivacyConfig(pseudonym_secret=SECRET)),
                                  interactions, keep=keep) is None
        _write_truth(Path(cfg.landing.path), ["1001,7,3"])
        assert future_discoveries(spark, dataclasses.replace(cfg, privacy=PrivacyConfig(pseudonym_secret="")),
                                  interactions, keep=keep) is None


def test_no_truth_when_the_file_holds_nothing_to_discover(spark, cfg):
    cfg = dataclasses.replace(cfg, privacy=PrivacyConfig(pseudonym_secret=SECRET))
    spark.createDataFrame([(pseudonym(SECRET, "1001"), 0)], "user_key string, user_idx int").write.format(
        "delta").save(lake.table_path(cfg.lake, "gold", "id_map_users"))
    spark.createDataFrame([("7", 0)], "artist_id string, artist_idx int").write.format("delta").save(
        lake.table_path(cfg.lake, "gold", "id_map_artists"))
    interactions = spark.createDataFrame([(0, 0)], "user_idx int, artist_idx int")
    with Persisted() as keep:
        _write_truth(Path(cfg.landing.path), [])  # `datagen.future_days: 0`: the header alone
        assert future_discoveries(spark, cfg, interactions, keep=keep) is None
        _write_truth(Path(cfg.landing.path), ["1001,7,3"])  # plays of an artist the user already has
        assert future_discoveries(spark, cfg, interactions, keep=keep) is None
