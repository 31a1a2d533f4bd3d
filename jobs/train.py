"""Train implicit ALS on gold/interactions with a search, log to MLflow, register and promote."""

import sys

from recsys.cli import job_parser, run_job
from recsys.model.train import train
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-train")
    result = train(spark, cfg)
    print(f"run {result.run_id}: version {result.version} ({result.params}) NDCG@{cfg.model.k} "
          f"{result.metrics['ndcg']:.4f}; champion {result.champion_metrics and result.champion_metrics['ndcg']}; "
          f"promoted to champion: {result.promoted}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
