"""Clients for the stores recsys writes to: PostgreSQL over JDBC and psycopg2, Redis."""
