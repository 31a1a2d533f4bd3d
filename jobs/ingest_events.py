"""Ingest new landing-zone files into bronze/events (+ quarantine), exactly once."""

import json
import sys
from dataclasses import asdict

from recsys.bronze.events import ingest_events
from recsys.cli import EXIT_QUALITY, job_parser, run_job
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-ingest-events")
    report = ingest_events(spark, cfg)
    print(json.dumps(asdict(report), default=str, indent=2))
    print(f"lines read {report.lines_read} = bronze {report.rows_bronze} + quarantined {report.rows_quarantined}")
    failed = report.over_quarantine_limit(cfg.quality.max_quarantine_rate)
    if failed:
        print(f"recsys: {failed}", file=sys.stderr)
        return EXIT_QUALITY
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
