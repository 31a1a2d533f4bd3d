"""Build gold as of a time (default now) and sync the feature store (PostgreSQL, Redis)."""

import sys
from dataclasses import asdict
from datetime import UTC, datetime

from recsys.cli import job_parser, run_job, utc_time
from recsys.gold.build import build_gold
from recsys.gold.store import sync_feature_store
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-build-gold")
    as_of = args.as_of or datetime.now(UTC)
    build = build_gold(spark, cfg, as_of, silver_version=args.silver_version)
    print({k: str(v) for k, v in asdict(build).items()})
    if not args.no_sync:
        print(sync_feature_store(spark, cfg, stage_suffix=build.build_id[:12]))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--as-of", type=utc_time, help="ISO-8601 time (UTC unless it names an offset); features use "
                                                       "only events strictly before it (default: now)")
    parser.add_argument("--silver-version", type=int, help="read silver/events at this Delta version (exact rebuilds)")
    parser.add_argument("--no-sync", action="store_true", help="build the Delta tables only")
    sys.exit(run_job(main, parser))
