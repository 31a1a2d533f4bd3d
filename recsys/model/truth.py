"""The generator's answer key: what users really play next, as a second evaluation beside validation.

`jobs/generate.py` writes `<landing>/_meta/truth/future_plays.csv.gz`: plays per (user_id,
artist_id) in the `datagen.future_days` after the generated period, which never reach the
landing zone. A model trained on everything gold holds should rank the artists a user goes on to
discover: the relevant set is a user's future artists minus every artist they already have in
gold (those are never recommended back). Only for generated data; other landing zones have no
truth and training reports validation alone.

Raw user ids meet the pseudonym here, in memory, exactly as silver makes it; nothing keyed by
them is written or logged.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.frames import Persisted
from recsys.model.als import ITEM, USER
from recsys.silver.privacy import pseudonymizer
from recsys.tables import ARTIST_ID, USER_ID, USER_KEY

FUTURE_PLAYS = "_meta/truth/future_plays.csv.gz"
SCHEMA = "user_id string, artist_id string, plays int"


def future_plays_path(cfg: Config) -> str:
    """Where the generator leaves the plays of the days after the landing window (its ground truth)."""
    return f"{cfg.landing.path.rstrip('/')}/{FUTURE_PLAYS}"


def future_discoveries(spark: SparkSession, cfg: Config, interactions: DataFrame, *,
                       keep: Persisted) -> DataFrame | None:
    """(user_idx, artist_idx) a user plays in the future window and has no interaction with yet,
    for users in `interactions`; None when there is no truth file, no pseudonym secret, or no such
    pair to score against (`datagen.future_days` 0 writes a file without plays): metrics of 0.0
    logged as the truth would read as a model that finds nothing. Persisted by `keep`, so telling
    whether there are any does not compute them a second time for the scoring.
    """
    path = future_plays_path(cfg)
    if not cfg.privacy.pseudonym_secret or not lake.file_exists(spark, path):
        return None
    pseudonymize = pseudonymizer(spark, cfg.privacy.pseudonym_secret)
    plays = spark.read.csv(path, header=True, schema=SCHEMA).filter(F.col("plays") > 0)
    users = lake.read(spark, lake.table_path(cfg.lake, "gold", "id_map_users")).select(USER_KEY, USER)
    artists = lake.read(spark, lake.table_path(cfg.lake, "gold", "id_map_artists")).select(ARTIST_ID, ITEM)
    keyed = plays.select(pseudonymize(F.trim(USER_ID)).alias(USER_KEY), F.trim(ARTIST_ID).alias(ARTIST_ID))
    pairs = keyed.join(users, on=USER_KEY, how="inner").join(artists, on=ARTIST_ID, how="inner")
    known = interactions.select(USER).distinct()
    discoveries = keep(pairs.select(USER, ITEM).distinct()
                       .join(known, on=USER, how="inner")
                       .join(interactions.select(USER, ITEM), on=[USER, ITEM], how="left_anti"))
    return None if discoveries.isEmpty() else discoveries
