"""DataFrame helpers: row numbers without a single-task window (the same numbers as the window, on
many partitions), ordered lists per group, persisted scopes."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from recsys.frames import Persisted, ordered_list, with_row_number
from tests.conftest import persisted_rdds


def test_row_numbers_equal_the_global_window_across_partitions_and_ties(spark):
    rows = [(f"k{i:04d}", i % 13) for i in range(997)]  # many ties on score, broken by the key
    df = spark.createDataFrame(rows, "key string, score int").repartition(7)
    order = (F.col("score").desc(), F.col("key"))
    expected = df.withColumn("n", F.row_number().over(Window.orderBy(*order)))
    with Persisted() as keep:
        got = with_row_number(df, "n", *order, keep=keep)
        assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
        assert got.agg(F.min("n"), F.max("n"), F.countDistinct("n")).collect()[0] == (1, 997, 997)


def test_row_numbers_of_nothing_are_nothing(spark):
    empty = spark.createDataFrame([], "key string")
    with Persisted() as keep:
        assert with_row_number(empty, "n", F.col("key"), keep=keep).count() == 0


def test_a_persisted_scope_unpersists_what_it_kept_and_nothing_else(spark):
    mine = spark.range(10).persist()
    mine.count()
    before = persisted_rdds(spark)
    with Persisted() as keep:
        numbered = with_row_number(spark.range(50).toDF("key"), "n", F.col("key"), keep=keep)
        assert numbered.count() == 50
        assert len(persisted_rdds(spark).keys() - before.keys()) == 1  # the sorted rows both passes read
    assert persisted_rdds(spark) == before
    assert mine.storageLevel.useMemory
    mine.unpersist()


def test_a_frame_released_early_is_unpersisted_at_once_and_the_others_stay_until_the_end(spark):
    before = persisted_rdds(spark)
    with Persisted() as keep:
        first, second = keep(spark.range(5)), keep(spark.range(7))
        assert first.count() + second.count() == 12
        keep.release(first)
        assert not first.storageLevel.useMemory and second.storageLevel.useMemory
    assert not second.storageLevel.useMemory
    assert persisted_rdds(spark) == before


def test_an_ordered_list_holds_each_groups_rows_in_order_with_only_the_named_fields(spark):
    rows = [(f"u{i % 5}", (i * 7919) % 1000, f"a{i}" if i % 4 else None, [f"g{i % 3}"] if i % 6 else [])
            for i in range(400)]
    df = spark.createDataFrame(rows, "user string, n int, artist string, genres array<string>").repartition(7)
    fields = {"artist_id": F.col("artist"), "genres": F.col("genres"), "n": F.col("n")}
    got = df.groupBy("user").agg(ordered_list(-F.col("n"), fields).alias("items"))  # the largest n first
    assert got.schema["items"].dataType.elementType.fieldNames() == ["artist_id", "genres", "n"]
    expected = {}
    for user, n, artist, genres in sorted(rows, key=lambda r: -r[1]):
        expected.setdefault(user, []).append((artist, genres, n))
    assert {r["user"]: [tuple(i) for i in r["items"]] for r in got.collect()} == expected
