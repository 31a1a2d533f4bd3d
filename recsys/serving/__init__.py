"""Serving: the Redis publish of recommendation lists and the API that reads them."""
