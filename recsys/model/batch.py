"""Batch inference (`jobs/recommend.py`): the top `recommend.top_k` artists per user per model alias.

For each model alias the experiment serves (`experiment.variants`, or the ones asked for), the
registered version behind it is loaded and every user with factors gets the best unseen artists
by the blocked top-K (`recsys.model.topk`), keeping cosine scores >= `model.recommend_threshold`.
Users without factors (no history yet) or left with no list, and accounts without events, get
their segment's most popular artists (age group x country), topped up from global popularity:
`source` says which. The segment lists themselves are kept too, for users the batch never saw.
With `rerank.enabled`, ALS lists are re-ordered by the registered click re-ranker
(`recsys.feedback.reranker`); their `score` stays the ALS cosine.

Tables (overwritten per run, so a rerun of a crashed run gives the same result; Delta history
keeps earlier runs): `gold/recommendations` (user_key, model_alias, model_version, model_run_id,
rank, artist_id, artist_name, score, source, segment, batch_id) and `gold/segment_recommendations`
(segment, rank, artist_id, artist_name, score, batch_id), segment `*` being the global list.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.experiment import aliases as experiment_aliases
from recsys.model.als import ITEM, USER
from recsys.model.rerank import load_reranker, rerank, with_ranker_features
from recsys.model.segments import SEGMENT, UNKNOWN_SEGMENT, segment_of
from recsys.model.topk import recommend_top_k
from recsys.tables import ARTIST_ID, USER_KEY
from recsys.tracking import setup_mlflow

GLOBAL = "*"


class ModelNotFound(LookupError):
    """The registry has no version behind the requested alias or number."""


@dataclass(frozen=True)
class LoadedModel:
    """A registered model loaded for scoring, with the alias, version and run it came from."""
    alias: str
    version: str
    run_id: str
    model: ALSModel


@dataclass(frozen=True)
class BatchReport:
    """What one batch scoring wrote: models used, users, rows by source, the Delta version."""
    batch_id: str
    models: dict[str, str]            # alias -> version
    users: int
    rows: int
    by_source: dict[str, int]
    version: int                      # gold/recommendations Delta version written


def load_model(cfg: Config, ref: str) -> LoadedModel:
    """`ref` is an alias (`champion`) or a version number of `model.name`."""
    client = MlflowClient()
    try:
        mv = client.get_model_version(cfg.model.name, ref) if ref.isdigit() else \
            client.get_model_version_by_alias(cfg.model.name, ref)
    except MlflowException as err:
        raise ModelNotFound(f"model {cfg.model.name!r} has no version {ref!r} in the registry at "
                            f"{mlflow.get_tracking_uri()}: run `make train` first") from err
    pipeline = mlflow.spark.load_model(f"models:/{cfg.model.name}/{mv.version}", dfs_tmpdir=tempfile.mkdtemp())
    return LoadedModel(ref, str(mv.version), mv.run_id or "", pipeline.stages[-1])


def segment_lists(interactions: DataFrame, segments: DataFrame, k: int) -> DataFrame:
    """(segment, artist_idx, rank, score) with the `k` artists most users of each segment have,
    plus segment `*` for everyone; score = share of the segment's users who have the artist.
    """
    pairs = interactions.select(USER, ITEM).join(segments.select(USER, SEGMENT), on=USER, how="inner")
    everyone = pairs.withColumn(SEGMENT, F.lit(GLOBAL))
    both = pairs.unionByName(everyone)
    size = both.groupBy(SEGMENT).agg(F.countDistinct(USER).alias("_users"))
    counts = both.groupBy(SEGMENT, ITEM).agg(F.countDistinct(USER).alias("_n")).join(size, on=SEGMENT)
    w = Window.partitionBy(SEGMENT).orderBy(F.desc("_n"), F.asc(ITEM))
    return counts.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k).select(
        SEGMENT, ITEM, "rank", (F.col("_n") / F.col("_users")).cast("float").alias("score"))


def cold_start(users: DataFrame, lists: DataFrame, k: int) -> DataFrame:
    """Each user's segment list, topped up to `k` from the global one: (user_key, segment, artist_idx,
    rank, score, source).
    """
    own = users.join(lists, on=SEGMENT, how="inner").withColumn("source", F.lit("segment")) \
        .withColumn("_order", F.col("rank"))
    fill = users.crossJoin(lists.filter(F.col(SEGMENT) == GLOBAL).drop(SEGMENT)) \
        .withColumn("source", F.lit("global")).withColumn("_order", F.col("rank") + k)
    both = own.unionByName(fill)
    w = Window.partitionBy(USER_KEY).orderBy("_order")
    dedup = both.withColumn("_first", F.row_number().over(Window.partitionBy(USER_KEY, ITEM).orderBy("_order")))
    return dedup.filter(F.col("_first") == 1).withColumn("rank", F.row_number().over(w)) \
        .filter(F.col("rank") <= k).drop("_order", "_first")


def _reranked(cfg: Config, recs: DataFrame, artist_stats: DataFrame, user_features: DataFrame) -> DataFrame:
    """ALS lists re-ordered by the registered re-ranker (`rerank.enabled`); cold-start lists stay."""
    als = recs.filter(F.col("source") == "als")
    reordered = rerank(load_reranker(cfg), with_ranker_features(als, artist_stats, user_features))
    return reordered.select(*recs.columns).unionByName(recs.filter(F.col("source") != "als"))


def build_recommendations(spark: SparkSession, cfg: Config, refs: list[str] | None = None,
                          batch_id: str | None = None) -> BatchReport:
    """Top-K per user for each served model alias, with cold start for users ALS does not know."""
    setup_mlflow(cfg)
    k, batch_id = cfg.recommend.top_k, batch_id or uuid.uuid4().hex
    refs = refs or experiment_aliases(cfg.experiment)
    gold = {t: lake.read(spark, lake.table_path(cfg.lake, "gold", t))
            for t in ("interactions", "id_map_users", "id_map_artists", "user_features", "artist_stats")}
    seen = gold["interactions"].select(USER, ITEM)
    artists = gold["id_map_artists"].join(gold["artist_stats"].select(ARTIST_ID, "artist_name"), ARTIST_ID, "left")
    # accounts (features) and users with history in this build (not the id map, which keeps
    # forgotten users' ids forever); a known segment sorts before "unknown|unknown"
    segment = segment_of(F.col("age_group"), F.col("country")).alias(SEGMENT)
    everyone = gold["user_features"].select(USER_KEY, segment) \
        .unionByName(gold["interactions"].select(USER_KEY, F.lit(UNKNOWN_SEGMENT).alias(SEGMENT))) \
        .groupBy(USER_KEY).agg(F.min(SEGMENT).alias(SEGMENT))
    everyone = everyone.join(gold["id_map_users"], on=USER_KEY, how="left").persist()
    lists = segment_lists(gold["interactions"], everyone.filter(F.col(USER).isNotNull()), k).persist()

    loaded = {ref: load_model(cfg, ref) for ref in dict.fromkeys(refs)}
    parts = []
    for ref, m in loaded.items():
        als = recommend_top_k(m.model.userFactors, m.model.itemFactors, k, seen, cfg.model.recommend_threshold,
                              cfg.recommend.block_users) \
            .join(everyone, on=USER, how="inner").select(USER_KEY, SEGMENT, ITEM, "rank", "score",
                                                         F.lit("als").alias("source"))
        served = als.select(USER_KEY).distinct()
        cold = cold_start(everyone.join(served, on=USER_KEY, how="left_anti").select(USER_KEY, SEGMENT), lists, k)
        parts.append(als.unionByName(cold.select(*als.columns)).select(
            "*", F.lit(ref).alias("model_alias"), F.lit(m.version).alias("model_version"),
            F.lit(m.run_id).alias("model_run_id")))
    recs = parts[0]
    for part in parts[1:]:
        recs = recs.unionByName(part)
    recs = recs.join(artists, on=ITEM, how="left")
    if cfg.rerank.enabled:
        recs = _reranked(cfg, recs, gold["artist_stats"], gold["user_features"])
    recs = recs.select(
        USER_KEY, "model_alias", "model_version", "model_run_id", F.col("rank").cast("int"), ARTIST_ID,
        "artist_name", F.col("score").cast("float"), "source", SEGMENT, F.lit(batch_id).alias("batch_id"))
    seg = lists.join(artists, on=ITEM, how="left").select(
        SEGMENT, F.col("rank").cast("int"), ARTIST_ID, "artist_name", "score", F.lit(batch_id).alias("batch_id"))

    metadata = json.dumps({"batch_id": batch_id, "models": {r: m.version for r, m in loaded.items()}})
    for name, df in (("segment_recommendations", seg), ("recommendations", recs)):
        lake.overwrite(df, lake.table_path(cfg.lake, "gold", name), metadata)
    path = lake.table_path(cfg.lake, "gold", "recommendations")
    written = lake.read(spark, path)
    by_source = {r["source"]: r["count"] for r in written.groupBy("source").count().collect()}
    report = BatchReport(batch_id, {r: m.version for r, m in loaded.items()},
                         written.select(USER_KEY).distinct().count(), sum(by_source.values()), by_source,
                         lake.current_version(spark, path))
    everyone.unpersist()
    lists.unpersist()
    return report
