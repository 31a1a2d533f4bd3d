"""Label impressions with clicks, CTR per model version/variant/position/day, and the A/B analysis."""

import sys

from recsys.cli import job_parser, run_job
from recsys.feedback.build import build_feedback
from recsys.spark import get_spark


def main(cfg, args) -> int:
    report = build_feedback(get_spark(cfg.spark, app_name="recsys-feedback"), cfg)
    done = report.labelling
    how = f"all of silver labelled again: {done.full_because}" if done.full_because else "from what silver added"
    print(f"gold/feedback: {done.inserted} impressions added, {done.relabelled} labels changed, {done.deleted} "
          f"deleted ({how})")
    print(f"{report.impressions} impressions, {report.clicks} attributed clicks "
          f"({report.unattributed_clicks} clicks matched no impression); MLflow run {report.run_id}")
    ab = report.ab
    if ab is not None:
        print(f"A/B: {ab.treatment} - {ab.control} = {ab.difference:+.4f} CTR, p = {ab.p_value:.4g} "
              f"({'significant' if ab.significant else 'not significant'}), SRM p = {ab.srm_p_value:.4g}"
              f"{' (MISMATCH: do not trust)' if ab.srm else ''}, MDE {ab.mde:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
