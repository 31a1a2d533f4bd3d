"""Bronze parsing: the declared schema, and a reason code for every broken contract."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import functions as F

from recsys.bronze.events import parse_events, to_bronze, to_quarantine

GOOD = ('{"event_id":"e1","event_type":"play","event_ts":"2026-10-01T10:00:00Z","user_id":42,'
        '"card":{"artist_id":7,"artist_name":"Björk","track_id":"t1","duration_ms":200000,"played_ms":190000}}')


def _reasons(spark, lines):
    raw = spark.createDataFrame([(line, "f.json") for line in lines], "value string, _source_file string")
    return parse_events(raw).select("value", "_reason", "_detail")


def test_each_broken_contract_gets_its_reason(spark):
    lines = [
        GOOD,
        '{"event_id":"e2", "event_type":',
        "",
        "[1, 2]",
        '{"event_id":"e3","event_type":"play","event_ts":"2026-10-01T10:00:00Z","user_id":"1","count":"two",'
        '"card":{"artist_id":"7","artist_name":"x"}}',
        '{"event_id":"e4","event_type":"play","event_ts":true,"user_id":"1","card":{"artist_id":"7","artist_name":"x"}}',
        '{"event_id":"e5","event_type":"play","event_ts":"2026-10-01T10:00:00Z","user_id":"1","card":"Björk"}',
        '{"event_type":"follow","event_ts":1759312800000,"user_id":"1","card":{"artist_id":"7","artist_name":"x"}}',
        '{"event_id":"e6","event_type":"like","event_ts":1759312800000,"user_id":"1","card":{"artist_id":"7",'
        '"artist_name":"x"}}',
        '{"event_id":"e7","event_type":"click","event_ts":1759312800000,"user_id":"1","card":{"artist_id":"7",'
        '"artist_name":"x"}}',
        '{"event_id":"e8","event_type":"skip","event_ts":1759312800000,"user_id":"1","card":{"artist_id":"7",'
        '"artist_name":"x"}}',
        '{"event_id":"e9","event_type":"play","event_ts":1759312800000,"user_id":"1","count":0,'
        '"card":{"artist_id":"7","artist_name":"x"}}',
        '{"event_id":"e10","event_type":"play","event_ts":"2026-10-01T10:00:00Z","user_id":"1",'
        '"card":{"artist_id":"7","artist_name":"x","track_id":"t"}}',
        '{"event_id":"e11","event_type":"play","event_ts":1759312800000,"user_id":"1","count":1000001,'
        '"card":{"artist_id":"7","artist_name":"x"}}',
        '{"event_id":"e12","event_type":"click","event_ts":1759312800000,"user_id":"1","card":{"artist_id":"7",'
        '"artist_name":"x"},"recommendation":{"request_id":"r","model_version":"v1/../x","variant":"B","position":0}}',
        '{"event_id":"e13","event_type":"play","event_ts":1759312800000,"user_id":"1","count":-1,'
        '"card":{"artist_id":"7","artist_name":"x","volume":[50,101]}}',
    ]
    expected = spark.createDataFrame(
        list(zip(lines, [
            (None, None), ("not_json", None), ("not_json", None), ("not_json", None), ("wrong_type", "count"),
            ("wrong_type", "event_ts"), ("wrong_type", "card"), ("missing_required", "event_id"),
            ("missing_required", "card.track_id"), ("missing_required", "recommendation"),
            ("unknown_event_type", "skip"), ("invalid_value", "count"), ("missing_required", "card.duration_ms"),
            ("invalid_value", "count"), ("invalid_value", "recommendation.model_version"),
            ("invalid_value", "count,card.volume"),
        ], strict=True)),
        "value string, why struct<r:string,d:string>",
    ).select("value", F.col("why.r").alias("_reason"), F.col("why.d").alias("_detail"))
    assert_df_equality(_reasons(spark, lines), expected, ignore_row_order=True, ignore_nullable=True)


def test_valid_rows_keep_raw_line_ids_as_text_and_unknown_fields(spark):
    line = GOOD[:-1] + ',"client_build":"b7"}'
    line = line.replace('"played_ms":190000}', '"played_ms":190000,"mood":"upbeat"}')
    raw = spark.createDataFrame([(line, "f.json")], "value string, _source_file string")
    parsed = parse_events(raw.withColumn("_ingested_at", F.current_timestamp()).withColumn("_run_id", F.lit("r")))
    row = to_bronze(parsed).first()
    assert row["_raw"] == line
    assert (row["user_id"], row["card"]["artist_id"]) == ("42", "7")
    assert row["_extra"] == {"client_build": "b7"} and row["_extra_card"] == {"mood": "upbeat"}
    assert to_quarantine(parsed).count() == 0


def test_extra_fields_stay_null_when_a_line_has_only_known_ones(spark):
    lines = [GOOD, GOOD.replace('"played_ms":190000}', '"played_ms":190000,"album_name":null}'),
             GOOD[:-1] + ',"context":{"device_os":"ios","mood":"x"}}']
    raw = spark.createDataFrame([(line, "f.json") for line in lines], "value string, _source_file string")
    rows = to_bronze(parse_events(raw.withColumn("_ingested_at", F.current_timestamp())
                                  .withColumn("_run_id", F.lit("r")))).collect()
    assert [(r["_extra"], r["_extra_card"]) for r in rows] == [(None, None)] * 3
