"""Serve the recommendations API (FastAPI on uvicorn) on serving.host:serving.port, with
serving.workers processes."""

import json
import os
import sys
import tempfile

import uvicorn

from recsys.cli import job_parser, run_job
from recsys.serving.api import SERVE_ARGS, create_app


def main(cfg, args) -> int:
    s = cfg.serving
    # uvicorn's own access log would carry user ids in paths; recsys writes its own (serving.access_log).
    common = {"host": s.host, "port": s.port, "log_level": "warning", "access_log": False}
    if s.workers == 1:
        uvicorn.run(create_app(cfg), **common)
        return 0
    # Worker processes build the app themselves from the same arguments, and share one folder of
    # metric files so that /metrics reports all of them.
    os.environ[SERVE_ARGS] = json.dumps({"env": args.env, "set": args.set, "config": args.config})
    with tempfile.TemporaryDirectory(prefix="recsys-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run("recsys.serving.api:app_from_environment", factory=True, workers=s.workers, **common)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
