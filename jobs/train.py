"""Train implicit ALS on gold/interactions with a search, log to MLflow, register and promote."""

import sys

from recsys.cli import EXIT_MODEL, job_parser, run_job
from recsys.model.train import TrainingFailed, summary_line, train
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-train")
    try:
        result = train(spark, cfg)
    except TrainingFailed as err:
        print(f"recsys: training failed: {err}", file=sys.stderr)
        return EXIT_MODEL
    print(f"train: run {result.run_id}: {summary_line(result, cfg.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
