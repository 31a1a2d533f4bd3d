"""Start or stop the local PostgreSQL and Redis the config points at (`make services-up/down`)."""

import sys

from recsys.cli import job_parser, run_job
from recsys.services import services_down, services_up


def main(cfg, args) -> int:
    for line in (services_up if args.action == "up" else services_down)(cfg):
        print(line)
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("action", choices=["up", "down"])
    sys.exit(run_job(main, parser))
