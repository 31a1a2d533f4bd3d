"""Batch top-K per user for every model alias the experiment serves; writes gold/recommendations."""

import sys
from dataclasses import asdict

from recsys.cli import EXIT_MODEL, job_parser, run_job
from recsys.model.batch import ModelNotFound, build_recommendations
from recsys.spark import get_spark


def main(cfg, args) -> int:
    spark = get_spark(cfg.spark, app_name="recsys-recommend")
    try:
        report = build_recommendations(spark, cfg, refs=args.model or None)
    except ModelNotFound as err:
        print(f"recsys: {err}", file=sys.stderr)
        return EXIT_MODEL
    print(asdict(report))
    return 0


if __name__ == "__main__":
    parser = job_parser(__doc__)
    parser.add_argument("--model", action="append", metavar="ALIAS_OR_VERSION",
                        help="score with this registered alias or version (repeatable; default: the experiment's)")
    sys.exit(run_job(main, parser))
