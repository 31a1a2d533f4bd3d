"""Import HetRec 2011 Last.fm 2K into the landing zone (events) and PostgreSQL (accounts)."""

import dataclasses
import json
import sys

from recsys.cli import job_parser, run_job
from recsys.datasets.lastfm import import_lastfm
from recsys.sources.accounts import upsert_accounts


def main(cfg, args) -> int:
    try:
        report = import_lastfm(args.source, cfg.landing.path,
                               on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    except (FileNotFoundError, ValueError) as err:
        print(f"recsys: cannot import {args.source}: {err}", file=sys.stderr)
        return 1
    summary = dataclasses.asdict(report)
    summary["files"] = len(report.files)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--source", required=True, help="folder holding the HetRec 2011 Last.fm 2K .dat files")
    sys.exit(run_job(main, parser))
