"""The systems of record the pipeline reads: the account service's PostgreSQL table."""
