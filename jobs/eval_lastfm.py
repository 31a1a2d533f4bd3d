"""The Last.fm 2K benchmark: pipeline through gold, then ALS vs popularity baselines at K=10."""

import dataclasses
import sys

from recsys import lake
from recsys.cli import job_parser, run_job
from recsys.model.als import SCALINGS
from recsys.model.benchmark import benchmark_config, evaluate, format_table, pipeline_through_gold
from recsys.model.train import search_space
from recsys.spark import get_spark
from recsys.stores.postgres import ensure_database


def main(cfg, args) -> int:
    cfg = benchmark_config(cfg)
    ensure_database(cfg.postgres)
    spark = get_spark(cfg.spark, app_name="recsys-eval-lastfm")
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/lastfm/checkpoints")
    interactions = pipeline_through_gold(spark, cfg, args.source)
    candidates = search_space(cfg.model)  # the grid `make train` searches, as configured
    if args.compare_scalings:
        best = candidates[-1]
        candidates += [dataclasses.replace(best, scaling=s) for s in SCALINGS if s != best.scaling]
    features = lake.read(spark, lake.table_path(cfg.lake, "gold", "user_features"))
    users = features.select("user_key", "age_group", "country")
    print(format_table(evaluate(spark, interactions, candidates, segments=users)))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--source", default="../shared/data/lastfm-2k", help="the HetRec Last.fm 2K folder")
    parser.add_argument("--compare-scalings", action="store_true",
                        help="also run the last configuration of the grid with every other confidence scaling")
    sys.exit(run_job(main, parser))
