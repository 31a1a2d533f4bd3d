"""Forget users everywhere: request the --user-id's given (if any), then erase every pending request
(accounts deleted at the source included) from landing files, bronze, silver, gold, the feature
store, published lists, MLflow models, and VACUUM with lake.retention_hours."""

import sys
import uuid

from recsys.cli import job_parser, run_job
from recsys.orchestration.forget import forget
from recsys.orchestration.maintain import RetentionTooShort
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-forget")
    try:
        n = forget(spark, cfg, args.user_id, run_id=uuid.uuid4().hex, on_erasure=lambda e: print(f"forget: {e}"))
    except RetentionTooShort as err:
        print(f"recsys: the users were erased, but not vacuumed from Delta history: {err}", file=sys.stderr)
        return 2
    print(f"forget: done ({n} requests erased; a user asked twice counts twice)")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--user-id", action="append", default=[],
                        help="a user id to forget (repeatable); the id is never printed or logged")
    sys.exit(run_job(main, parser))
