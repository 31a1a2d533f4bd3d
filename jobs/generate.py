"""Generate landing-zone events, accounts (into PostgreSQL) and ground truth from `datagen.*`."""

import sys

from recsys.cli import job_parser, run_job
from recsys.datagen.generator import generate
from recsys.sources.accounts import upsert_accounts


def main(cfg, args) -> int:
    try:
        manifest = generate(
            cfg.landing.path,
            cfg.datagen,
            append_days=args.append_days,
            on_accounts=lambda rows: print(f"accounts: {upsert_accounts(cfg.postgres, rows)} rows upserted"),
        )
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"recsys: {err}", file=sys.stderr)
        return 1
    run = manifest["last_run"]
    rate = run["lines"] / max(run["seconds"], 1e-9)
    print(f"landing zone {cfg.landing.path}: days {run['days'][0]}..{run['days'][1] - 1}, "
          f"{run['lines']} lines in {run['files']} files, {run['seconds']}s ({rate:,.0f} lines/s)")
    dirty = sum(k["count"] for k in manifest["dirt"].values())
    print(f"total {manifest['lines']} lines, {dirty} with injected dirt; manifest in {cfg.landing.path}/_meta")
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--append-days", type=int, metavar="N", help="add N later days to an existing landing zone")
    sys.exit(run_job(main, parser))
