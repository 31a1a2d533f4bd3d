"""A realistic, deterministic generator of the pipeline's inputs (see `generator.py`)."""
