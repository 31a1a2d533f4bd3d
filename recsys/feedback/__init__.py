"""Feedback: clicks attributed to impressions, CTR per model version, A/B analysis, the learned re-ranker."""
