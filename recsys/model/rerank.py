"""The learned re-ranker at scoring time: its features, its click probability, and ALS lists
re-ordered by it. Training lives with the feedback it learns from (`recsys.feedback.reranker`);
batch scoring (`recsys.model.batch`) uses only this module.
"""

from __future__ import annotations

import tempfile

import mlflow
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys.config import Config
from recsys.tables import ARTIST_ID, USER_KEY

NUMERIC = ("score", "position", "log_listeners", "trending_rank", "log_followers", "genre_overlap")
CATEGORICAL = ("age_group", "country")
UNRANKED = 1000.0  # artists off the trending chart


def with_ranker_features(feedback: DataFrame, artist_stats: DataFrame, user_features: DataFrame) -> DataFrame:
    """Attach the artist's and the user's features to impression-level rows (artist_id, user_key)."""
    artists = artist_stats.select(ARTIST_ID, F.col("listeners").cast("double").alias("artist_listeners"),
                                  F.col("trending_rank").cast("double").alias("trending_rank"),
                                  F.col("followers").cast("double").alias("artist_followers"),
                                  F.col("genres").alias("_genres"))
    users = user_features.select(USER_KEY, "age_group", "country", F.col("top_genres").alias("_top"))
    joined = feedback.join(artists, on=ARTIST_ID, how="left").join(users, on=USER_KEY, how="left")
    overlap = F.size(F.array_intersect(F.coalesce("_genres", F.array()), F.coalesce("_top", F.array()))) / \
        F.greatest(F.size(F.coalesce("_top", F.array())), F.lit(1))
    return joined.withColumn("genre_overlap", overlap.cast("double")).drop("_genres", "_top") \
        .fillna({"age_group": "unknown", "country": "unknown"})


def prepared(df: DataFrame) -> DataFrame:
    """The model's input columns from rows carrying `with_ranker_features`' columns."""
    return df.select(
        "*",
        F.log1p(F.coalesce(F.col("artist_listeners"), F.lit(0.0))).alias("log_listeners"),
        F.log1p(F.coalesce(F.col("artist_followers"), F.lit(0.0))).alias("log_followers"),
    ).withColumn("score", F.coalesce(F.col("score").cast("double"), F.lit(0.0))) \
        .withColumn("position", F.col("position").cast("double")) \
        .withColumn("trending_rank", F.coalesce(F.col("trending_rank").cast("double"), F.lit(UNRANKED))) \
        .withColumn("genre_overlap", F.coalesce(F.col("genre_overlap"), F.lit(0.0))) \
        .fillna({"age_group": "unknown", "country": "unknown"})


def with_p_click(model: PipelineModel, prepared_rows: DataFrame) -> DataFrame:
    """Prepared rows scored by the re-ranker: `p_click`, the probability of a click."""
    return model.transform(prepared_rows).withColumn("p_click", vector_to_array(F.col("probability"))[1])


def probability(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """Rows with the ranker features, plus `p_click`: the model's click probability."""
    return with_p_click(model, prepared(rows))


def load_reranker(cfg: Config) -> PipelineModel:
    """The registered re-ranker behind `rerank.alias`."""
    return mlflow.spark.load_model(f"models:/{cfg.rerank.name}@{cfg.rerank.alias}", dfs_tmpdir=tempfile.mkdtemp())


def rerank(model: PipelineModel, recs: DataFrame) -> DataFrame:
    """Re-order each (user, model alias) list by click probability; rows need the ranker features,
    `rank` (the ALS order, becoming `position`) and `score`.
    """
    scored = probability(model, recs.withColumn("position", F.col("rank") - 1))
    w = Window.partitionBy(USER_KEY, "model_alias").orderBy(F.desc("p_click"), F.asc("rank"))
    return scored.withColumn("rank", F.row_number().over(w)).select(*recs.columns)
