"""The incremental refresh a scheduler runs: ingest, silver, gold, feature store, train when due,
recommend, publish. One line per stage; a failure exits non-zero naming its stage."""

import sys

from recsys.cli import job_parser, run_job, utc_time
from recsys.orchestration.refresh import RefreshFailed, StageResult, refresh
from recsys.spark import get_spark


def _line(result: StageResult) -> None:
    print(f"refresh: {result.stage:15} {result.summary} ({result.seconds:.1f}s)", flush=True)


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-refresh")
    try:
        refresh(spark, cfg, on_stage=_line, now=args.now)
    except RefreshFailed as err:
        print(f"recsys: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--now", type=utc_time,
                        help="ISO-8601 time (UTC unless it names an offset) the refresh runs as of: silver's "
                             "clock and gold's as-of (default: now; a replay or a test pins it)")
    sys.exit(run_job(main, parser))
