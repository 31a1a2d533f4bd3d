"""DataFrame helpers every stage may use."""

from __future__ import annotations

from types import TracebackType

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

_PART, _LOCAL = "_rn_part", "_rn_local"


class Persisted:
    """The DataFrames one piece of work persists, unpersisted together when it ends.

    `with Persisted() as keep: ... keep(df) ...`: `keep(df)` persists `df` and returns it; leaving
    the block unpersists every frame kept, and only those, so a notebook's own cached frames in
    the same session stay cached (`spark.catalog.clearCache()` would drop them too).
    """

    def __init__(self) -> None:
        self._frames: list[DataFrame] = []

    def __call__(self, df: DataFrame, level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER) -> DataFrame:
        """`df`, persisted at `level` (`DataFrame.persist`'s default) until this scope ends."""
        kept = df.persist(level)
        self._frames.append(kept)
        return kept

    def release(self, df: DataFrame) -> None:
        """Unpersist `df`, kept by this scope, now rather than when the scope ends."""
        self._frames = [kept for kept in self._frames if kept is not df]
        df.unpersist()

    def __enter__(self) -> Persisted:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for df in reversed(self._frames):
            df.unpersist()
        self._frames.clear()


def with_row_number(df: DataFrame, name: str, *order: Column, keep: Persisted) -> DataFrame:
    """`df` plus `name`: 1, 2, ... in `order`, which must be total (end it with a key).

    The same numbers as `row_number()` over `Window.orderBy(*order)`, without that window's single
    task: the sort range-partitions the rows, each partition numbers its own, and adds the count of
    the partitions before it (a few numbers, collected). The sorted rows are persisted so both
    passes see the same partitions, by `keep`: the result is valid until `keep` ends.
    """
    parted = keep(df.sort(*order).withColumn(_PART, F.spark_partition_id()), StorageLevel.MEMORY_AND_DISK)
    counts = sorted((r[0], r[1]) for r in parted.groupBy(_PART).count().collect())
    offsets: list[Column] = []
    before = 0
    for part, count in counts:
        offsets += [F.lit(part), F.lit(before)]
        before += count
    offset = F.create_map(*offsets)[F.col(_PART)] if offsets else F.lit(0)
    numbered = parted.withColumn(_LOCAL, F.row_number().over(Window.partitionBy(_PART).orderBy(*order)))
    return numbered.withColumn(name, F.col(_LOCAL) + offset).drop(_PART, _LOCAL)


def ordered_list(order: Column, fields: dict[str, Column]) -> Column:
    """An aggregate: the group's rows as an array of structs of `fields` (name: value), ascending by
    `order`, ties by the fields in their order (`collect_list` keeps no order).

    The structs are sorted with `order` as their first field, then their other fields are zipped
    back without it: dropping it with `transform` took 39-50% longer, since a higher-order function
    runs outside Spark's generated code (benchmarks/README.md).
    """
    ordered = F.array_sort(F.collect_list(F.struct(order.alias("_order"), *[c.alias(n) for n, c in fields.items()])))
    return F.arrays_zip(*[ordered[name].alias(name) for name in fields])
