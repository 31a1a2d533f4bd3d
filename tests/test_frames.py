"""Row numbers without a single-task window: the same numbers as the window, on many partitions."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from recsys.frames import with_row_number


def test_row_numbers_equal_the_global_window_across_partitions_and_ties(spark):
    rows = [(f"k{i:04d}", i % 13) for i in range(997)]  # many ties on score, broken by the key
    df = spark.createDataFrame(rows, "key string, score int").repartition(7)
    order = (F.col("score").desc(), F.col("key"))
    expected = df.withColumn("n", F.row_number().over(Window.orderBy(*order)))
    got = with_row_number(df, "n", *order)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    assert got.agg(F.min("n"), F.max("n"), F.countDistinct("n")).collect()[0] == (1, 997, 997)


def test_row_numbers_of_nothing_are_nothing(spark):
    empty = spark.createDataFrame([], "key string")
    assert with_row_number(empty, "n", F.col("key")).count() == 0
