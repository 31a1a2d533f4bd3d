"""Compact small files and VACUUM every lake table, keeping lake.retention_hours of time travel."""

import sys

from recsys.cli import job_parser, run_job
from recsys.orchestration.maintain import RetentionTooShort, maintain
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-maintain")
    try:
        for m in maintain(spark, cfg):
            print(f"maintain: {m.table:28} files {m.files_before} -> {m.files_after}, vacuumed {m.vacuumed}")
    except RetentionTooShort as err:
        print(f"recsys: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
