"""The `make demo` journey: each step calls the library exactly as a job or notebook would."""

from __future__ import annotations

import time

from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.endpoints import postgres_endpoint, redis_endpoint
from recsys.spark import get_spark
from recsys.stores import postgres, redis
from recsys.tracking import setup_mlflow, tracking_uri


def run_demo(cfg: Config, started: float) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-demo")
    print(f"spark {spark.version} session ready in {time.monotonic() - started:.1f}s")

    path = lake.table_path(cfg.lake, "gold", "demo_runtime_probe")
    probe = spark.range(1000).select(F.col("id"), (F.col("id") % 7).alias("bucket"))
    lake.upsert(probe, path, keys=["id"])
    counts = lake.read(spark, path).groupBy("bucket").count().orderBy("bucket").collect()
    print(f"delta: {sum(r['count'] for r in counts)} rows in {path} (version {lake.current_version(spark, path)})")

    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT version()")
        print(f"postgres: {postgres_endpoint(cfg)} -> {cur.fetchone()[0].split(' on ')[0]}")
    client = redis.connect(cfg.redis)
    print(f"redis: {redis_endpoint(cfg)} -> Redis {client.info('server')['redis_version']}")
    setup_mlflow(cfg)

    print("\nwhere things are:")
    print(f"  lake (Delta)     {cfg.lake.root}")
    print(f"  landing zone     {cfg.landing.path}")
    print(f"  MLflow store     {tracking_uri(cfg)}")
    print(f"  MLflow UI        .venv/bin/mlflow ui --backend-store-uri {tracking_uri(cfg)}")
    print(f"  PostgreSQL       psql -h {cfg.postgres.host} -p {cfg.postgres.port} -U {cfg.postgres.user} "
          f"{cfg.postgres.database}")
    print(f"  Redis            {cfg.redis.url}/{cfg.redis.db}")
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0
