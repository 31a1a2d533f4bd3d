"""Search every sink past bronze (silver and gold with their history, PostgreSQL, Redis, MLflow,
log files) for the PII bronze holds; exit 4 when any is found. Counts only, never values."""

import sys

from recsys.cli import EXIT_QUALITY, job_parser, run_job
from recsys.pii_scan import report, scan
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-pii-scan")
    hits = scan(spark, cfg, redis_patterns=tuple(args.redis_pattern or ["*"]), logs=tuple(args.log or []))
    print(report(hits))
    return EXIT_QUALITY if hits else 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--redis-pattern", action="append", help="Redis keys to read (repeatable; default: all)")
    parser.add_argument("--log", action="append", help="a log file to search too (repeatable)")
    sys.exit(run_job(main, parser))
