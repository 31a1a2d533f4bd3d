"""The real Last.fm 2K data through bronze and silver: every listening count arrives intact."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import ingest_accounts
from recsys.bronze.events import ingest_events
from recsys.datasets.lastfm import import_lastfm
from recsys.keys import pseudonym
from recsys.silver.build import build_silver
from recsys.sources.accounts import upsert_accounts
from tests.conftest import LASTFM_DIR, isolated

SECRET = "lastfm-test-secret"


@pytest.mark.slow
def test_lastfm_reconciles_to_user_artists_after_silver(services, spark, tmp_path):
    cfg = dataclasses.replace(
        isolated(services, tmp_path, "lastfm"),
        privacy=dataclasses.replace(services.privacy, pseudonym_secret=SECRET),
        ingest=dataclasses.replace(services.ingest, click_events_to_postgres=False),
    )
    import_lastfm(LASTFM_DIR, cfg.landing.path, on_accounts=lambda rows: upsert_accounts(cfg.postgres, rows))
    ingest_events(spark, cfg)
    ingest_accounts(spark, cfg, run_id="lastfm")
    report = build_silver(spark, cfg, run_id="lastfm", now=datetime(2026, 11, 29, tzinfo=UTC))

    silver = lake.read(spark, lake.table_path(cfg.lake, "silver", "events"))
    plays = silver.filter(F.col("event_type") == "play").groupBy("user_key", "artist_id").agg(
        F.sum("count").alias("weight"))
    rows = [line.split("\t") for line in (LASTFM_DIR / "user_artists.dat").read_text().splitlines()[1:]]
    expected = spark.createDataFrame([(pseudonym(SECRET, u), a, int(w)) for u, a, w in rows],
                                     "user_key string, artist_id string, weight long")
    assert plays.count() == len(rows)
    assert plays.exceptAll(expected).count() == 0 and expected.exceptAll(plays).count() == 0
    # The five tag rows dated 1956-1979 are the data set's own untrusted times.
    assert report["events"]["quarantined"] == {"ts_before_trusted": 4}
    assert report["tables"]["users"] == 1892
