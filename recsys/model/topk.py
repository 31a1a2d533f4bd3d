"""Exact top-K artists per user from ALS factors: blocked matrix multiplication on the executors.

MLlib's `recommendForAllUsers` cross-joins blocks of factors and ranks every (user, artist)
pair through generic rows; here each executor task multiplies a block of its users' factors by
the whole artist matrix (one BLAS call), masks the artists each user already has, and keeps the
best K exactly from a few candidates per user (`_candidates`). The artist matrix (catalog x
rank floats: 20,000 x 64 is 5 MB) is broadcast; user factors and results never pass through
the driver.

Ranking is by the ALS preference, the dot product `u . v`, as the model was trained. Each row
also carries `score`, the cosine between user and artist factors on [-1, 1]: unlike the dot
product it is comparable across users, so `model.recommend_threshold` applies on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.model.als import ITEM, USER

NESTED = T.StructType([
    T.StructField(USER, T.IntegerType()), T.StructField(ITEM, T.ArrayType(T.IntegerType())),
    T.StructField("dot", T.ArrayType(T.FloatType())), T.StructField("score", T.ArrayType(T.FloatType())),
])
NESTED_ARROW = pa.schema([(USER, pa.int32()), (ITEM, pa.list_(pa.int32())), ("dot", pa.list_(pa.float32())),
                          ("score", pa.list_(pa.float32()))])
BLOCK_USERS = 256  # 256 x 20,000 float32 scores = 20 MB per block: close to the CPU caches
CHUNK = 64  # columns per chunk in the prefilter


class ItemMatrix:
    """Artist factors as a dense float32 matrix plus the artist_idx of each row.

    The matrix is padded with zero rows to a multiple of `CHUNK` (`size` is the real count):
    the prefilter then splits every score row into equal chunks.
    """

    def __init__(self, ids: np.ndarray, factors: np.ndarray):
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order].astype(np.int32)
        self.size = len(self.ids)
        rank = factors.shape[1] if factors.ndim == 2 else 0  # noqa: PLR2004 (a matrix, or no factors at all)
        self.factors = np.zeros((-(-self.size // CHUNK) * CHUNK, rank), dtype=np.float32)
        self.factors[:self.size] = factors[order]
        self.norms = np.linalg.norm(self.factors, axis=1)
        self.lookup = np.full(int(self.ids.max(initial=-1)) + 1, -1, dtype=np.int64)
        self.lookup[self.ids] = np.arange(self.size)

    @classmethod
    def from_frame(cls, item_factors: DataFrame) -> ItemMatrix:
        """The item factors of a fitted model as a matrix, rows in id order."""
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


def _candidates(scores: np.ndarray, k: int, prefilter: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) of a few entries per row that include the row's `k` best.

    Without `prefilter`, the entries at or above each row's k-th largest score. With it, each row
    is split into chunks of `CHUNK` columns (chunk j = columns j, j + m, j + 2m, ... for m chunks,
    so the chunk maxima are an elementwise max over contiguous slices). The k chunks with the
    largest maxima hold the k best scores (any other chunk's max is beaten by k distinct
    elements), and the smallest of those k maxima is a floor under the k-th best score: only
    entries of those chunks at or above it are kept, typically little more than k per row.
    Exact up to exact ties at the k-th place, where another equally scored artist may be kept.
    """
    n_rows, width = scores.shape
    chunks = width // CHUNK
    if not prefilter or chunks <= k:
        floor = np.partition(scores, width - k, axis=1)[:, width - k]
        rows, cols = np.nonzero(scores >= floor[:, None])
        return rows, cols, scores[rows, cols]
    maxima = scores.reshape(n_rows, CHUNK, chunks).max(axis=1)
    top = np.argpartition(maxima, chunks - k, axis=1)[:, chunks - k:]
    floor = np.take_along_axis(maxima, top, axis=1).min(axis=1)
    cols = (top[:, None, :] + np.arange(CHUNK)[None, :, None] * chunks).reshape(n_rows, -1)
    values = scores.ravel().take((np.arange(n_rows) * width)[:, None] + cols)
    rows, picked = np.nonzero(values >= floor[:, None])
    return rows, cols[rows, picked], values[rows, picked]


def top_k_block(users: np.ndarray, items: ItemMatrix, k: int, seen_rows: list[np.ndarray] | None = None,
                prefilter: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `users`, the matrix rows of its best `k` unseen items and their dot products,
    best first; ties broken by the smaller artist id. Seen or missing slots come back as -1.
    """
    scores = users @ items.factors.T
    scores[:, items.size:] = -np.inf  # padding
    if seen_rows:
        lengths = np.fromiter((len(s) for s in seen_rows), dtype=np.int64, count=len(seen_rows))
        if lengths.sum():
            scores[np.repeat(np.arange(len(seen_rows)), lengths), np.concatenate(seen_rows)] = -np.inf
    k = min(k, items.size)
    best = np.full((len(users), k), -1, dtype=np.int64)
    dots = np.full((len(users), k), -np.inf, dtype=np.float32)
    if k == 0:
        return best, dots
    rows, cols, values = _candidates(scores, k, prefilter)
    valid = values > -np.inf
    rows, cols, values = rows[valid], cols[valid], values[valid]
    order = np.lexsort((items.ids[cols], -values, rows))  # per row: score desc, then artist id asc
    rows, cols, values = rows[order], cols[order], values[order]
    place = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within the row
    kept = place < k
    best[rows[kept], place[kept]] = cols[kept]
    dots[rows[kept], place[kept]] = values[kept]
    return best, dots


def _cosine(users: np.ndarray, items: ItemMatrix, rows: np.ndarray, dots: np.ndarray) -> np.ndarray:
    denom = np.linalg.norm(users, axis=1)[:, None] * items.norms[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, dots / denom, 0.0).clip(-1.0, 1.0).astype(np.float32)


def score_batch(batch: pa.RecordBatch, items: ItemMatrix, k: int, threshold: float | None,
                block: int = BLOCK_USERS) -> Iterator[pa.RecordBatch]:
    """Nested top-K rows (one per user, lists best first) for one Arrow batch of
    (id, features[, seen]) user rows.
    """
    ids = batch.column("id").to_numpy(zero_copy_only=False)
    factors = _matrix(batch.column("features"))
    seen = batch.column("seen").to_pylist() if "seen" in batch.schema.names else None
    for start in range(0, len(ids), block):
        users = factors[start:start + block]
        seen_rows = [items.rows_of(np.asarray(s or [], dtype=np.int64)) for s in seen[start:start + block]] \
            if seen is not None else None
        rows, dots = top_k_block(users, items, k, seen_rows)
        valid = rows >= 0
        cos = _cosine(users, items, np.where(valid, rows, 0), dots)
        if threshold is not None:
            valid &= cos >= threshold
        offsets = pa.array(np.concatenate(([0], np.cumsum(valid.sum(axis=1)))).astype(np.int32))
        yield pa.RecordBatch.from_arrays([
            pa.array(ids[start:start + len(users)].astype(np.int32)),
            pa.ListArray.from_arrays(offsets, pa.array(items.ids[rows[valid]])),
            pa.ListArray.from_arrays(offsets, pa.array(dots[valid].astype(np.float32))),
            pa.ListArray.from_arrays(offsets, pa.array(cos[valid])),
        ], schema=NESTED_ARROW)


def nested_top_k(user_factors: DataFrame, item_factors: DataFrame, k: int, seen: DataFrame | None = None,
                 threshold: float | None = None, block: int = BLOCK_USERS,
                 finish: tuple[Callable[[pa.RecordBatch], pa.RecordBatch], str] | None = None) -> DataFrame:
    """One row per user in `user_factors` (id, features): `user_idx` and, best first, the lists
    `artist_idx`, `dot` and `score` of its best `k` artists, excluding the (user_idx, artist_idx)
    pairs in `seen` and, with a `threshold`, artists whose cosine score is below it (so a list
    may be shorter than k, or empty). `finish` = (function, Spark DDL of its output) maps each
    such Arrow batch further in the same Python worker (sparing a second pass through Arrow).
    """
    if block < 1:
        raise ValueError(f"recommend.block_users must be at least 1, got {block}")
    items = ItemMatrix.from_frame(item_factors)
    broadcast = user_factors.sparkSession.sparkContext.broadcast(items)
    users = user_factors.select("id", "features")
    if seen is not None:
        lists = seen.groupBy(F.col(USER).alias("id")).agg(F.collect_list(ITEM).alias("seen"))
        users = users.join(lists, on="id", how="left")

    then, schema = finish or (None, NESTED)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matrix = broadcast.value
        for batch in batches:
            for nested in score_batch(batch, matrix, k, threshold, block):
                yield then(nested) if then is not None else nested

    return users.mapInArrow(run, schema)


def recommend_top_k(user_factors: DataFrame, item_factors: DataFrame, k: int, seen: DataFrame | None = None,
                    threshold: float | None = None, block: int = BLOCK_USERS) -> DataFrame:
    """`nested_top_k` as one row per (user, artist): (user_idx, artist_idx, rank, dot, score)."""
    nested = nested_top_k(user_factors, item_factors, k, seen, threshold, block)
    pairs = nested.select(USER, F.posexplode(F.arrays_zip(ITEM, "dot", "score")).alias("pos", "r"))
    return pairs.select(USER, F.col(f"r.{ITEM}").alias(ITEM), (F.col("pos") + 1).cast("int").alias("rank"),
                        F.col("r.dot").alias("dot"), F.col("r.score").alias("score"))


def recommend(model: ALSModel, users: DataFrame, seen: DataFrame | None, k: int, threshold: float | None = None
              ) -> DataFrame:
    """Top `k` unseen artists for the `user_idx` values in `users` from a fitted ALS model."""
    subset = model.userFactors.join(users.select(F.col(USER).alias("id")).distinct(), on="id", how="inner")
    return recommend_top_k(subset, model.itemFactors, k, seen, threshold)


def numpy_top_k(users: np.ndarray, items: ItemMatrix, k: int, block: int = BLOCK_USERS
                ) -> tuple[np.ndarray, np.ndarray]:
    """The single-process floor, as plain as it gets: per block of users, one matrix multiply,
    `argpartition` of full rows, then the k best sorted. Matrix rows and dot products, best first.
    """
    rows, dots = [], []
    for start in range(0, len(users), block):
        scores = users[start:start + block] @ items.factors[:items.size].T
        best = np.argpartition(scores, -k, axis=1)[:, -k:]
        picked = np.take_along_axis(scores, best, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        rows.append(np.take_along_axis(best, order, axis=1))
        dots.append(np.take_along_axis(picked, order, axis=1))
    return np.vstack(rows), np.vstack(dots)
