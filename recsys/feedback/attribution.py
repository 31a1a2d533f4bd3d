"""Impressions joined with clicks: the labelled feedback every later step learns from.

An impression is clicked when a click by the same user on the same artist carries the same
`request_id` and happens within `feedback.attribution_window_s` after it (clicks earlier than
their impression are clock skew up to `feedback.clock_skew_s`). One row per impression (its
`event_id`), however many clicks it got; clicks matching no impression are counted, not used.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys.tables import ARTIST_ID, EVENT_DATE, EVENT_ID, EVENT_TIME, EVENT_TYPE, USER_KEY

IMPRESSION_COLUMNS = (EVENT_ID, EVENT_TIME, EVENT_DATE, USER_KEY, ARTIST_ID, "request_id",
                      "model_version", "variant", "position", "score")


def attribute(events: DataFrame, window_s: int, clock_skew_s: int = 60) -> DataFrame:
    """(impression columns..., clicked, clicked_at) from silver events."""
    imps = events.filter(F.col(EVENT_TYPE) == "impression").select(*IMPRESSION_COLUMNS)
    clicks = events.filter(F.col(EVENT_TYPE) == "click").select(
        F.col(USER_KEY).alias("_user"), F.col(ARTIST_ID).alias("_artist"), F.col("request_id").alias("_request"),
        F.col(EVENT_TIME).alias("_click_time"))
    seconds = F.col("_click_time").cast("long") - F.col(EVENT_TIME).cast("long")
    matched = imps.join(
        clicks,
        (F.col(USER_KEY) == F.col("_user")) & (F.col(ARTIST_ID) == F.col("_artist"))
        & (F.col("request_id") == F.col("_request")) & seconds.between(-clock_skew_s, window_s),
        how="left")
    return matched.groupBy(*IMPRESSION_COLUMNS).agg(F.min("_click_time").alias("clicked_at")) \
        .withColumn("clicked", F.col("clicked_at").isNotNull().cast("int"))


def ctr(feedback: DataFrame, *by: str) -> DataFrame:
    """Impressions, clicks and CTR per the given columns."""
    return feedback.groupBy(*by).agg(F.count("*").alias("impressions"), F.sum("clicked").alias("clicks")) \
        .withColumn("ctr", F.col("clicks") / F.col("impressions"))
