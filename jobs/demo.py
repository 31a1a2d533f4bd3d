"""Run the pipeline end to end on embedded defaults, then say where to look."""

import sys
import time

from recsys.cli import job_parser, run_job
from recsys.orchestration.demo import run_demo
from recsys.spark import get_spark


def main(cfg, args) -> int:
    started = time.monotonic()
    return run_demo(get_spark(cfg.spark, app_name="recsys-demo"), cfg, started)


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
