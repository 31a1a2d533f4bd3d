"""Print an API bearer token: for one user (`--user-id`), or for a service that posts events."""

import sys

from recsys.cli import job_parser, run_job
from recsys.serving.auth import EVENTS_WRITE, mint


def main(cfg, args) -> int:
    secret = cfg.require_secret("auth.jwt_secret")
    if args.user_id is not None:
        print(mint(cfg.auth, secret, args.user_id.strip(), ttl_s=args.ttl_s))
    else:
        print(mint(cfg.auth, secret, f"service:{args.service}", [EVENTS_WRITE], ttl_s=args.ttl_s))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", help="the user the token reads recommendations for")
    who.add_argument("--service", help="a service name; the token may POST /v1/events")
    parser.add_argument("--ttl-s", type=int, default=None, help="lifetime in seconds (default: auth.token_ttl_s)")
    sys.exit(run_job(main, parser))
