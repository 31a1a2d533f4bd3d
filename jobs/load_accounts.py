"""Load a CSV with the accounts.sql columns into PostgreSQL `accounts` (upsert by user_id)."""

import sys

from recsys.cli import job_parser, run_job
from recsys.sources.accounts import read_accounts_csv, upsert_accounts


def main(cfg, args) -> int:
    try:
        written = upsert_accounts(cfg.postgres, read_accounts_csv(args.csv))
    except ValueError as err:
        print(f"recsys: {err}", file=sys.stderr)
        return 1
    print(f"accounts: {written} rows upserted from {args.csv}")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--csv", required=True, help="CSV file with a header naming accounts.sql columns")
    sys.exit(run_job(main, parser))
