"""Publish gold/recommendations to Redis as a new version and switch it live atomically."""

import sys
from dataclasses import asdict

from recsys.cli import EXIT_MODEL, job_parser, run_job
from recsys.serving.publish import PublishError, publish, rollback


def main(cfg, args) -> int:
    try:
        if args.rollback:
            was, now = rollback(cfg)
            print(f"rolled back: live version {was} -> {now}")
            return 0
        from recsys.spark import get_spark

        report = publish(get_spark(cfg.spark, app_name="recsys-publish"), cfg)
    except PublishError as err:
        print(f"recsys: publish failed: {err}", file=sys.stderr)
        return EXIT_MODEL
    print(asdict(report))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--rollback", action="store_true", help="switch back to the newest other kept version")
    sys.exit(run_job(main, parser))
