"""Serve the recommendations API (FastAPI on uvicorn) on serving.host:serving.port."""

import sys

import uvicorn

from recsys.cli import job_parser, run_job
from recsys.serving.api import create_app


def main(cfg, args) -> int:
    uvicorn.run(create_app(cfg), host=cfg.serving.host, port=cfg.serving.port, workers=1,
                log_level="warning", access_log=False)  # access logs would carry user ids
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
