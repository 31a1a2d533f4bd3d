"""Public data sets converted into the landing-zone contract."""
