"""`make bench-topk`: exact top-K per user from the same ALS factors, four ways.

1. recsys: blocked matrix multiply, chunk maxima as a floor, sort of the few survivors, on the
   executors (`recsys.model.topk`), timed with its list-per-user output (the shape MLlib returns) and
   exploded to a row per (user, artist);
2. MLlib `ALSModel.recommendForAllUsers` on a model holding the same factors;
3. cross join of all (user, artist) pairs, dot product, `row_number` window; run on a sample of
   users and extrapolated linearly (all pairs would take hours here), reported as such;
4. the floor: one process, numpy blocked multiply + argpartition, factors already in memory.
Spark results are materialised with the `noop` sink (everything computed, nothing collected).
Lists from 1 and 2 are compared for every user: equal sets, or differing only within score ties.

Default: 100,000 users x 20,000 artists at rank 64 (random factors, seed 1), K = 50.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import Window
from pyspark.sql import functions as F

from recsys.config import load_config
from recsys.model.topk import ItemMatrix, nested_top_k, numpy_top_k, recommend_top_k
from recsys.spark import get_spark


def factors_frame(spark, ids: np.ndarray, factors: np.ndarray, partitions: int):
    pdf = pd.DataFrame({"id": ids.astype(np.int32), "features": list(factors.astype(np.float32))})
    df = spark.createDataFrame(pdf, "id int, features array<float>").repartition(partitions).persist()
    df.count()
    return df


def timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def als_model(spark, rank: int, users, items) -> ALSModel:
    """An MLlib ALSModel around given factor tables (the Scala constructor is package-private, not
    private in bytecode, so py4j reaches it)."""
    java = spark._jvm.org.apache.spark.ml.recommendation.ALSModel("bench-als", rank, users._jdf, items._jdf)
    java.setUserCol("user_idx").setItemCol("artist_idx").setPredictionCol("prediction").setColdStartStrategy("drop")
    return ALSModel(java)


def cross_join_top_k(users, items, k: int):
    dot = F.aggregate(F.zip_with("u", "i", lambda a, b: a * b), F.lit(0.0).cast("float"), lambda acc, x: acc + x)
    pairs = users.select(F.col("id").alias("user_idx"), F.col("features").alias("u")).crossJoin(
        items.select(F.col("id").alias("artist_idx"), F.col("features").alias("i"))).select(
        "user_idx", "artist_idx", dot.alias("dot"))
    w = Window.partitionBy("user_idx").orderBy(F.desc("dot"), F.asc("artist_idx"))
    return pairs.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= k)


def compare(ours: pd.DataFrame, mllib: pd.DataFrame, k: int) -> tuple[int, int]:
    """(users whose sets differ beyond ties, users compared)."""
    a = ours.groupby("user_idx").agg(items=("artist_idx", list), scores=("dot", list))
    b = mllib.groupby("user_idx").agg(items=("artist_idx", list), scores=("dot", list))
    joined = a.join(b, lsuffix="_ours", rsuffix="_mllib", how="outer")
    bad = 0
    for row in joined.itertuples():
        if not isinstance(row.items_ours, list) or not isinstance(row.items_mllib, list):
            bad += 1
            continue
        ours_set, mllib_set = set(row.items_ours), set(row.items_mllib)
        if ours_set == mllib_set:
            continue
        kth = min(*row.scores_ours, *row.scores_mllib)
        differing = {i: s for i, s in zip(row.items_ours + row.items_mllib, row.scores_ours + row.scores_mllib,
                                           strict=True) if i not in ours_set & mllib_set}
        if any(abs(s - kth) > 1e-4 * max(1.0, abs(kth)) for s in differing.values()):
            bad += 1
    return bad, len(joined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--artists", type=int, default=20_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--cross-join-users", type=int, default=300, help="users in the cross-join sample")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()

    cfg = load_config()
    spark = get_spark(cfg.spark, app_name="recsys-bench-topk")
    rng = np.random.default_rng(1)
    # ALS-like factors: small positive-leaning values with varying item norms (popularity).
    user_np = (rng.normal(0.05, 0.3, (args.users, args.rank))).astype(np.float32)
    item_np = (rng.normal(0.02, 0.2, (args.artists, args.rank)) * rng.lognormal(0, 0.5, (args.artists, 1))
               ).astype(np.float32)
    users = factors_frame(spark, np.arange(args.users), user_np, args.partitions)
    items = factors_frame(spark, np.arange(args.artists), item_np, 2)
    print(f"{args.users:,} users x {args.artists:,} artists, rank {args.rank}, K = {args.k}, "
          f"spark {spark.sparkContext.master}, {args.partitions} user partitions")

    matrix = ItemMatrix(np.arange(args.artists), item_np)
    floor = timed(lambda: numpy_top_k(user_np, matrix, args.k))
    # warm-up: Python workers started and the JVM's code paths compiled, as for the MLlib run after it
    nested_top_k(users.limit(5000), items, args.k).write.format("noop").mode("overwrite").save()
    ours = timed(lambda: nested_top_k(users, items, args.k).write.format("noop").mode("overwrite").save())
    ours_long = timed(lambda: recommend_top_k(users, items, args.k).write.format("noop").mode("overwrite").save())
    model = als_model(spark, args.rank, users, items)
    mllib = timed(lambda: model.recommendForAllUsers(args.k).write.format("noop").mode("overwrite").save())
    sample = users.limit(args.cross_join_users).persist()
    sample.count()
    cross_sample = timed(lambda: cross_join_top_k(sample, items, args.k).write.format("noop").mode("overwrite")
                         .save())
    cross = cross_sample * args.users / args.cross_join_users

    ours_df = recommend_top_k(users, items, args.k).select("user_idx", "artist_idx", "dot").toPandas()
    mllib_df = model.recommendForAllUsers(args.k).select(
        F.col("user_idx"), F.explode("recommendations").alias("r")).select(
        "user_idx", F.col("r.artist_idx").alias("artist_idx"), F.col("r.rating").alias("dot")).toPandas()
    bad, compared = compare(ours_df, mllib_df, args.k)

    rows = [("recsys blocked matmul (Spark), a list per user", ours),
            ("recsys blocked matmul (Spark), a row per (user, artist)", ours_long),
            ("MLlib recommendForAllUsers (a list per user)", mllib),
            (f"cross join + window (extrapolated from {args.cross_join_users:,} users)", cross),
            ("numpy floor (1 process)", floor)]
    print(f"\n{'method':62} {'seconds':>9} {'vs recsys':>10}")
    for name, seconds in rows:
        print(f"{name:62} {seconds:9.1f} {seconds / ours:9.1f}x")
    print(f"\nrecsys is {mllib / ours:.1f}x faster than recommendForAllUsers (target >= 5x) and "
          f"{ours / floor:.2f}x the numpy floor (target <= 3x)")
    print(f"identical top-{args.k} sets up to score ties: {compared - bad:,} of {compared:,} users"
          f"{'' if bad == 0 else f' ({bad} differ)'}")


if __name__ == "__main__":
    main()
