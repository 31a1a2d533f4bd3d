"""recsys: a PySpark job library from raw listening events to served artist recommendations."""
