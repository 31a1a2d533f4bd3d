"""Users' popularity segments: age group x country, from the gold feature table.

Segment popularity is the cold-start list and a baseline; a user without features (or a
table that does not exist yet) falls in the `unknown|unknown` segment.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.keys import UNKNOWN, segment_name
from recsys.model.als import USER
from recsys.tables import USER_KEY

SEGMENT = "segment"
UNKNOWN_SEGMENT = segment_name(None, None)


def segment_of(age_group: Column, country: Column) -> Column:
    """The segment of Spark rows; `recsys.keys.segment_name` is the same rule for single values."""
    return F.concat_ws("|", F.coalesce(age_group, F.lit(UNKNOWN)), F.coalesce(country, F.lit(UNKNOWN)))


def user_segments(spark: SparkSession, cfg: Config) -> DataFrame:
    """(user_idx, user_key, segment) for every user in the id map."""
    id_map = lake.read(spark, lake.table_path(cfg.lake, "gold", "id_map_users")).select(USER_KEY, USER)
    features_path = lake.table_path(cfg.lake, "gold", "user_features")
    if not lake.exists(spark, features_path):
        return id_map.withColumn(SEGMENT, F.lit(UNKNOWN_SEGMENT))
    features = lake.read(spark, features_path).select(USER_KEY, segment_of(F.col("age_group"), F.col("country"))
                                                      .alias(SEGMENT))
    return id_map.join(features, on=USER_KEY, how="left").fillna({SEGMENT: UNKNOWN_SEGMENT})
