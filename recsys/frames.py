"""DataFrame helpers every stage may use."""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

_PART, _LOCAL = "_rn_part", "_rn_local"


def with_row_number(df: DataFrame, name: str, *order: Column) -> DataFrame:
    """`df` plus `name`: 1, 2, ... in `order`, which must be total (end it with a key).

    The same numbers as `row_number()` over `Window.orderBy(*order)`, without that window's single
    task: the sort range-partitions the rows, each partition numbers its own, and adds the count of
    the partitions before it (a few numbers, collected). The sorted rows are persisted so both
    passes see the same partitions.
    """
    parted = df.sort(*order).withColumn(_PART, F.spark_partition_id()).persist(StorageLevel.MEMORY_AND_DISK)
    counts = sorted((r[0], r[1]) for r in parted.groupBy(_PART).count().collect())
    offsets: list[Column] = []
    before = 0
    for part, count in counts:
        offsets += [F.lit(part), F.lit(before)]
        before += count
    offset = F.create_map(*offsets)[F.col(_PART)] if offsets else F.lit(0)
    numbered = parted.withColumn(_LOCAL, F.row_number().over(Window.partitionBy(_PART).orderBy(*order)))
    return numbered.withColumn(name, F.col(_LOCAL) + offset).drop(_PART, _LOCAL)
