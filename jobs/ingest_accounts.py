"""Extract PostgreSQL accounts into bronze/accounts (incremental by updated_at, or --full-refresh)."""

import sys
import uuid
from dataclasses import asdict

from recsys.bronze.accounts import ingest_accounts
from recsys.cli import job_parser, run_job
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-ingest-accounts")
    report = ingest_accounts(spark, cfg, run_id=uuid.uuid4().hex, full_refresh=args.full_refresh)
    print({k: str(v) for k, v in asdict(report).items()})
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--full-refresh", action="store_true",
                        help="read every account and delete from bronze those gone from the source")
    sys.exit(run_job(main, parser))
