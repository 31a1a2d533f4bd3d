"""Run what exists of the pipeline end to end on embedded defaults, then say where to look."""

import sys
import time

from recsys.cli import job_parser, run_job
from recsys.demo import run_demo

if __name__ == "__main__":
    sys.exit(run_job(lambda cfg, args: run_demo(cfg, started=time.monotonic()), job_parser(__doc__)))
