"""Train the click re-ranker on gold/feedback, evaluate on held-out days, register it in MLflow."""

import sys

from recsys.cli import job_parser, run_job
from recsys.feedback.reranker import train_reranker
from recsys.spark import get_spark


def main(cfg, args) -> int:
    report = train_reranker(get_spark(cfg.spark, app_name="recsys-train-reranker"), cfg)
    print(f"re-ranker v{report.version}: AUC {report.auc:.4f}; click NDCG on held-out days {report.ndcg_reranked:.4f} "
          f"re-ranked vs {report.ndcg_als_order:.4f} in ALS order; champion: {report.promoted}")
    for name, weight in sorted(report.weights.items(), key=lambda kv: -abs(kv[1]))[:10]:
        print(f"  {name:28} {weight:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, job_parser(__doc__)))
