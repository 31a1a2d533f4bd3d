"""The Last.fm 2K benchmark: pipeline through gold, then searched ALS vs popularity baselines at K=10."""

import sys
import time

from recsys import lake
from recsys.cli import job_parser, run_job
from recsys.model.benchmark import evaluate, format_table, format_trials
from recsys.model.search import SearchSpace
from recsys.orchestration.lastfm import benchmark_config, pipeline_through_gold
from recsys.spark import get_spark
from recsys.stores.postgres import ensure_database


def main(cfg, args) -> int:
    cfg = benchmark_config(cfg)
    space = SearchSpace.from_config(cfg.model)  # the space `make train` searches, as configured
    ensure_database(cfg.postgres)
    spark = get_spark(cfg.spark, app_name="recsys-eval-lastfm")
    spark.sparkContext.setCheckpointDir(f"{cfg.services.state_dir}/lastfm/checkpoints")
    interactions = pipeline_through_gold(spark, cfg, args.source)
    features = lake.read(spark, lake.table_path(cfg.lake, "gold", "user_features"))
    users = features.select("user_key", "age_group", "country")
    started = time.monotonic()
    rows, trials = evaluate(spark, interactions, space, max_trials=cfg.model.trials,
                            budget_s=cfg.model.search_budget_s, segments=users)
    print(format_trials(trials))
    budget = cfg.model.search_budget_s
    print(f"search: {len(trials)} trials in {time.monotonic() - started:.0f}s (budget {budget:.0f}s), scored on "
          "validation; the table below is the test pairs")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--source", default="../shared/data/lastfm-2k", help="the HetRec Last.fm 2K folder")
    sys.exit(run_job(main, parser))
