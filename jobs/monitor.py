"""Drift monitor: data, feature, prediction and model drift against a reference snapshot.

Exit code 6 when any threshold is crossed, so a scheduler can alert."""

import sys

from recsys.cli import job_parser, run_job
from recsys.monitor.build import EXIT_DRIFT, run_monitor
from recsys.spark import get_spark


def main(cfg, args) -> int:
    report = run_monitor(get_spark(cfg.spark, app_name="recsys-monitor"), cfg)
    print(f"reference {report.reference} vs current {report.current}; MLflow run {report.run_id}")
    for check in report.checks:
        flag = "ALERT" if check.alert else "ok"
        print(f"  {flag:5} {check.kind:10} {check.name:24} psi {check.psi:7.4f}  js {check.js:6.4f}  {check.detail}")
    return EXIT_DRIFT if report.alerts else 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
