"""Model: implicit ALS, its baselines, and the ranking metrics that compare them."""
