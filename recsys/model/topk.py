"""Exact top-K artists per user from ALS factors: blocked matrix multiplication on the executors.

MLlib's `recommendForAllUsers` cross-joins blocks of factors and ranks every (user, artist)
pair through generic rows; here each executor task multiplies a block of its users' factors by
the whole artist matrix (one BLAS call), masks the artists each user already has, and keeps the
best K with `argpartition`. The artist matrix (catalog x rank floats: 20,000 x 64 is 5 MB) is
broadcast; user factors and results never pass through the driver.

Ranking is by the ALS preference, the dot product `u . v`, as the model was trained. Each row
also carries `score`, the cosine between user and artist factors on [-1, 1]: unlike the dot
product it is comparable across users, so `model.recommend_threshold` applies on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.model.als import ITEM, USER

OUTPUT = T.StructType([
    T.StructField(USER, T.IntegerType()), T.StructField(ITEM, T.IntegerType()),
    T.StructField("rank", T.IntegerType()), T.StructField("dot", T.FloatType()),
    T.StructField("score", T.FloatType()),
])
BLOCK_USERS = 1024  # 1024 x 20,000 float32 scores = 80 MB per block


class ItemMatrix:
    """Artist factors as a dense float32 matrix plus the artist_idx of each row."""

    def __init__(self, ids: np.ndarray, factors: np.ndarray):
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order].astype(np.int32)
        self.factors = np.ascontiguousarray(factors[order], dtype=np.float32)
        self.norms = np.linalg.norm(self.factors, axis=1)
        self.lookup = np.full(int(self.ids.max(initial=-1)) + 1, -1, dtype=np.int64)
        self.lookup[self.ids] = np.arange(len(self.ids))

    @classmethod
    def from_frame(cls, item_factors: DataFrame) -> ItemMatrix:
        table = item_factors.select("id", "features").toArrow()
        return cls(table.column("id").to_numpy(), _matrix(table.column("features")))

    def rows_of(self, artist_idx: np.ndarray) -> np.ndarray:
        """Matrix rows of the given artist ids; ids the model does not know are dropped."""
        artist_idx = artist_idx[(artist_idx >= 0) & (artist_idx < len(self.lookup))]
        rows = self.lookup[artist_idx]
        return rows[rows >= 0]


def _matrix(features: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An Arrow list<float> column of equal-length vectors as an (n, rank) float32 array."""
    array = features.combine_chunks() if isinstance(features, pa.ChunkedArray) else features
    n = len(array)
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.float32)


def top_k_block(users: np.ndarray, items: ItemMatrix, k: int, seen_rows: list[np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `users`, the matrix rows of its best `k` unseen items and their dot products,
    best first; ties broken by the smaller artist id. Seen or missing slots come back as -1."""
    scores = users @ items.factors.T
    if seen_rows:
        lengths = np.fromiter((len(s) for s in seen_rows), dtype=np.int64, count=len(seen_rows))
        if lengths.sum():
            scores[np.repeat(np.arange(len(seen_rows)), lengths), np.concatenate(seen_rows)] = -np.inf
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(users), 0), np.int64), np.zeros((len(users), 0), np.float32)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(users), 1))
    picked = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((items.ids[best], -picked), axis=1)  # score desc, then artist id asc
    best, picked = np.take_along_axis(best, order, axis=1), np.take_along_axis(picked, order, axis=1)
    best[np.isneginf(picked)] = -1
    return best, picked


def _cosine(users: np.ndarray, items: ItemMatrix, rows: np.ndarray, dots: np.ndarray) -> np.ndarray:
    denom = np.linalg.norm(users, axis=1)[:, None] * items.norms[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, dots / denom, 0.0).clip(-1.0, 1.0).astype(np.float32)


def score_batch(batch: pa.RecordBatch, items: ItemMatrix, k: int, threshold: float | None,
                block: int = BLOCK_USERS) -> Iterator[pa.RecordBatch]:
    """Long-format top-K rows for one Arrow batch of (id, features[, seen]) user rows."""
    ids = batch.column("id").to_numpy(zero_copy_only=False)
    factors = _matrix(batch.column("features"))
    seen = batch.column("seen").to_pylist() if "seen" in batch.schema.names else None
    for start in range(0, len(ids), block):
        users = factors[start:start + block]
        seen_rows = [items.rows_of(np.asarray(s or [], dtype=np.int64)) for s in seen[start:start + block]] \
            if seen is not None else None
        rows, dots = top_k_block(users, items, k, seen_rows)
        n, width = rows.shape
        valid = rows >= 0
        cos = _cosine(users, items, np.where(valid, rows, 0), dots)
        if threshold is not None:
            valid &= cos >= threshold
        keep = valid.ravel()
        yield pa.RecordBatch.from_arrays([
            pa.array(np.repeat(ids[start:start + n], width)[keep].astype(np.int32)),
            pa.array(items.ids[np.where(valid, rows, 0)].ravel()[keep]),
            pa.array(np.tile(np.arange(1, width + 1, dtype=np.int32), n)[keep]),
            pa.array(dots.ravel()[keep].astype(np.float32)),
            pa.array(cos.ravel()[keep]),
        ], schema=pa.schema([(f.name, pa.int32() if f.dataType == T.IntegerType() else pa.float32())
                             for f in OUTPUT.fields]))


def recommend_top_k(user_factors: DataFrame, item_factors: DataFrame, k: int, seen: DataFrame | None = None,
                    threshold: float | None = None) -> DataFrame:
    """(user_idx, artist_idx, rank, dot, score) for the best `k` artists of every user in
    `user_factors` (id, features), excluding the (user_idx, artist_idx) pairs in `seen` and, with a
    `threshold`, artists whose cosine score is below it (so a user may get fewer than k)."""
    items = ItemMatrix.from_frame(item_factors)
    broadcast = user_factors.sparkSession.sparkContext.broadcast(items)
    users = user_factors.select("id", "features")
    if seen is not None:
        lists = seen.groupBy(F.col(USER).alias("id")).agg(F.collect_list(ITEM).alias("seen"))
        users = users.join(lists, on="id", how="left")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matrix = broadcast.value
        for batch in batches:
            yield from score_batch(batch, matrix, k, threshold)

    return users.mapInArrow(run, OUTPUT)


def recommend(model: ALSModel, users: DataFrame, seen: DataFrame | None, k: int, threshold: float | None = None
              ) -> DataFrame:
    """Top `k` unseen artists for the `user_idx` values in `users` from a fitted ALS model."""
    subset = model.userFactors.join(users.select(F.col(USER).alias("id")).distinct(), on="id", how="inner")
    return recommend_top_k(subset, model.itemFactors, k, seen, threshold)


def numpy_top_k(users: np.ndarray, items: ItemMatrix, k: int, block: int = BLOCK_USERS
                ) -> tuple[np.ndarray, np.ndarray]:
    """The single-process floor: the same blocked multiply and argpartition over all users."""
    parts = [top_k_block(users[s:s + block], items, k) for s in range(0, len(users), block)]
    return np.vstack([rows for rows, _ in parts]), np.vstack([dots for _, dots in parts])
