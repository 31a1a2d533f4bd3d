"""The Last.fm 2K benchmark: pipeline through gold, then ALS vs popularity baselines at K=10."""

import sys

from recsys import lake
from recsys.cli import job_parser, run_job
from recsys.model.als import AlsParams
from recsys.model.benchmark import benchmark_config, evaluate, format_table, pipeline_through_gold
from recsys.spark import get_spark
from recsys.stores.postgres import ensure_database


def main(cfg, args) -> int:
    cfg = benchmark_config(cfg)
    ensure_database(cfg.postgres)
    spark = get_spark(cfg.spark, app_name="recsys-eval-lastfm")
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/lastfm/checkpoints")
    interactions = pipeline_through_gold(spark, cfg, args.source)
    candidates = [AlsParams(rank=r, reg_param=reg, alpha=a, scaling=s, max_iter=15)
                  for r, reg, a, s in ((64, 1.0, 1.0, "linear"),)]
    features = lake.read(spark, lake.table_path(cfg.lake, "gold", "user_features"))
    users = features.select("user_key", "age_group", "country")
    print(format_table(evaluate(spark, interactions, candidates, segments=users)))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--source", default="../shared/data/lastfm-2k", help="the HetRec Last.fm 2K folder")
    sys.exit(run_job(main, parser))
