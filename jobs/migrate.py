"""Bring every stored lake table to its declaration in recsys/tables.py (the one schema overwrite)."""

import sys

from recsys import lake
from recsys.cli import job_parser, run_job
from recsys.spark import get_spark
from recsys.tables import TABLES


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-migrate")
    for table in TABLES.values():
        path = table.path(cfg.lake)
        if not lake.exists(spark, path):
            continue
        changes = lake.migrate(spark, path)
        print(f"{table.qualified}: {'; '.join(changes) if changes else 'as declared'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
