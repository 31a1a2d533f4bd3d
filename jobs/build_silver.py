"""Build silver: clean, deduplicated, pseudonymous events, users, artists, tracks; gate on quality."""

import json
import sys
import uuid
from datetime import UTC, datetime

from recsys.cli import EXIT_QUALITY, job_parser, run_job
from recsys.silver.build import QualityGateFailed, build_silver
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-build-silver")
    try:
        report = build_silver(spark, cfg, run_id=uuid.uuid4().hex, now=datetime.now(UTC))
    except QualityGateFailed as err:
        print(f"recsys: quality gate: {err}", file=sys.stderr)
        return EXIT_QUALITY
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
