"""Bronze parsing: the declared schema, and a reason code for every broken contract."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.events import ingest_events, parse_events, to_bronze, to_quarantine
from recsys.config import ConfigError
from recsys.landing.contract import event_errors
from recsys.landing.zone import write_file
from recsys.orchestration.forget import landing_files, rewrite_landing_file
from recsys.pii_scan import scan
from recsys.tables import BRONZE_EVENTS, BRONZE_EVENTS_QUARANTINE, BRONZE_INGEST_BATCHES

GOOD = ('{"event_id":"e1","event_type":"play","event_ts":"2026-10-01T10:00:00Z","user_id":42,'
        '"card":{"artist_id":7,"artist_name":"Björk","track_id":"t1","duration_ms":200000,"played_ms":190000}}')


def _landed(spark, lines):
    """Landing lines as the ingest hands them to `parse_events`: the line, its file and the run's lineage.
    A line given as bytes lands as those bytes, UTF-8 or not, as Spark's text source reads them."""
    raw = spark.createDataFrame([(bytearray(line if isinstance(line, bytes) else line.encode()), "f.json")
                                 for line in lines], "b binary, _source_file string")
    return raw.select(F.col("b").cast("string").alias("value"), "_source_file",
                      F.current_timestamp().alias("_ingested_at"), F.lit("r").alias("_run_id"))


def _line(**fields):
    """A valid play as a landing line, with `fields` replaced (`card`'s merged into its own)."""
    card = {"artist_id": "7", "artist_name": "x", **fields.pop("card", {})}
    return json.dumps({"event_id": "e", "event_type": "play", "event_ts": 1759312800000, "user_id": "1",
                       "card": card, **fields})


def _reasons(spark, lines):
    return parse_events(_landed(spark, lines)).select("value", "_reason", "_detail")


def test_a_line_not_in_utf8_is_quarantined_with_its_bytes_kept(spark):
    """An old client's Latin-1 "Beyoncé" (byte E9): not UTF-8, so not JSON text; kept raw, bytes and all.
    A line that writes U+FFFD itself, in UTF-8, is valid."""
    latin1 = GOOD.replace("Björk", "Beyoncé").encode("latin-1")
    lines = [latin1, GOOD.replace("Björk", "Beyoncé").encode(), GOOD.replace("Björk", "Bj\ufffdrk").encode()]
    parsed = parse_events(_landed(spark, lines))
    assert [(r._reason, r._detail) for r in parsed.collect()] == [("not_json", "not UTF-8"), (None, None), (None, None)]
    [kept] = to_quarantine(parsed).select(F.col("_raw").cast("binary")).collect()
    assert bytes(kept[0]) == latin1


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
            (None, None), ("not_json", "invalid JSON"), ("not_json", "empty line"), ("not_json", "not an object"),
            ("wrong_type", "count"),
            ("wrong_type", "event_ts"), ("wrong_type", "card"), ("missing_required", "event_id"),
            ("missing_required", "card.track_id"), ("missing_required", "recommendation"),
            ("unknown_event_type", "skip"), ("invalid_value", "count"), ("missing_required", "card.duration_ms"),
            ("invalid_value", "count"), ("invalid_value", "recommendation.model_version"),
            ("invalid_value", "count,card.volume"),
        ], strict=True)),
        "value string, why struct<r:string,d:string>",
    ).select("value", F.col("why.r").alias("_reason"), F.col("why.d").alias("_detail"))
    assert_df_equality(_reasons(spark, lines), expected, ignore_row_order=True, ignore_nullable=True)


def test_a_text_field_holding_a_boolean_an_object_or_a_list_is_the_wrong_type(spark):
    """Spark renders any JSON value into a string field: without this, `"user_id": true` was the user
    "true". Numbers stay text (the contract's ids), and `genre` may be a list of them or of strings."""
    wrong = {
        _line(user_id=True): "user_id",
        _line(event_id={"id": 1}): "event_id",
        _line(card={"artist_name": ["Björk"], "track_name": False}): "card.artist_name,card.track_name",
        _line(card={"genre": ["rock", True]}): "card.genre",
        _line(card={"genre": {"main": "rock"}}): "card.genre",
        _line(context={"source": ["radio"], "geo": {"lat": 1, "lon": 2}}, user={"email": {"a": "b"}}):
            "context.source,user.email",
        _line(playlist={"playlist_id": True}, event_type="playlist_add", card={"track_id": "t"}):
            "playlist.playlist_id",
    }
    right = [_line(user_id=15, event_id=7, card={"artist_name": 311, "genre": ["rock", 80, None], "album_name": None}),
             _line(card={"genre": "rock"}, context={"geo": {"lat": 1, "lon": 2}, "source": "radio"})]
    found = {r.value: (r._reason, r._detail) for r in _reasons(spark, [*wrong, *right]).collect()}
    assert found == {**{k: ("wrong_type", v) for k, v in wrong.items()}, **{k: (None, None) for k in right}}


def test_an_integral_number_with_a_fraction_or_an_exponent_is_an_integer(spark):
    """JSON Schema counts `2.0` and `1.5e5` as integers, so the contract does (the API accepts them):
    bronze reads them as integers, in counts as in ids (`42.0` is the user "42", as `42` is), and keeps
    the line as it came."""
    as_integers = ('{"event_id":"e","event_type":"play","event_ts":1759312800000,"user_id":42,"count":2,'
                   '"card":{"artist_id":7,"artist_name":"x","track_id":10,"artist_rank":3,"duration_ms":200000,'
                   '"played_ms":150000,"volume":[50,60]},"context":{"geo":{"lat":1.0,"lon":2.5}},"build":1.0}')
    written = ('{"event_id":"e","event_type":"play","event_ts":1759312800000.0,"user_id":42.0,"count":2.0,'
               '"card":{"artist_id":7e0,"artist_name":"x","track_id":1E1,"artist_rank":3.00,"duration_ms":2e5,'
               '"played_ms":1.5e5,"volume":[50.0,6e1]},"context":{"geo":{"lat":1.0,"lon":2.5}},"build":1.0}')
    expected, found = (to_bronze(parse_events(_landed(spark, [line]))).drop("_raw", "_ingested_at")
                       for line in (as_integers, written))
    assert_df_equality(found, expected, ignore_nullable=True)
    assert to_bronze(parse_events(_landed(spark, [written]))).first()["_raw"] == written


def test_a_number_that_is_no_integer_in_an_integer_field_or_an_id_is_the_wrong_type(spark):
    """`2.5` is no count and no user; neither is a string in a count, nor an integer of 70 digits."""
    wrong = {
        _line(count=2.5): "count",
        _line(user_id=1.5, event_ts=1759312800000.5): "event_ts,user_id",
        _line(card={"track_id": "t", "duration_ms": "200000", "played_ms": 1000}): "card.duration_ms",
        _line(card={"volume": [50, 60.5]}): "card.volume",
        _line(card={"artist_rank": True, "artist_followers": [1]}): "card.artist_rank,card.artist_followers",
        _line(event_type="click", recommendation={"request_id": "r", "model_version": "v", "position": 1.5}):
            "recommendation.position",
        _line(count=10 ** 70 * 1.0): "count",
    }
    found = {r.value: (r._reason, r._detail) for r in _reasons(spark, list(wrong)).collect()}
    assert found == {k: ("wrong_type", v) for k, v in wrong.items()}


def test_nan_or_infinity_makes_a_line_not_json_and_the_api_refuses_it(spark):
    """RFC 8259 has no `NaN` or `Infinity`, though Python writes them and Spark's reader takes them
    for numbers: a score or a coordinate of NaN would reach silver."""
    base = {"event_id": "e", "event_type": "play", "event_ts": 1759312800000, "user_id": "1",
            "card": {"artist_id": "7", "artist_name": "x"}}
    events = [{**base, "count": float("nan")}, {**base, "user_id": float("inf")},
              {**base, "context": {"geo": {"lat": float("-inf"), "lon": 0}}}, {**base, "extra": [float("nan")]}]
    lines = [json.dumps(e) for e in events]
    assert [(r._reason, r._detail) for r in _reasons(spark, lines).collect()] == [("not_json", "invalid JSON")] * 4
    assert all(any("not a JSON number" in e for e in event_errors(event)) for event in events)


def test_bronze_keeps_every_event_the_api_accepts(spark):
    """The API answers 202 only for events bronze then keeps (`recsys.landing.contract`): the same
    time forms, integral numbers as integers, and no blank ids. A time of the right form that is no
    real time (February 30) the API refuses; bronze keeps it and silver quarantines it (`bad_timestamp`)."""
    card = {"artist_id": "7", "artist_name": "x", "track_id": "t", "duration_ms": 200000, "played_ms": 1000}
    base = {"event_id": "e", "event_type": "play", "event_ts": 1764363845000, "user_id": 42, "card": card}
    cases = {  # name: (event, accepted by the API and kept by bronze)
        **{f"event_ts {ts!r}": ({**base, "event_ts": ts}, True) for ts in (
            "2026-11-28T21:04:05Z", " 2026-11-28t21:04:05.123456789z ", "2026-11-28 21:04+01:00",
            "2026-11-28T21:04:05-0130", 1764363845000, 1764363845000.0)},
        **{f"event_ts {ts!r}": ({**base, "event_ts": ts}, False) for ts in (
            "2026-11-28", "2026-11-28T21:04:05", "20261128T210405Z", "2026-W48-6T21:04Z", "2026-11-28T21Z",
            "2026-11-28T21:04:05,5Z", "2026-11-28T21:04:05+01", 1764363845000.5, -1, 10 ** 16, 1e16)},
        "count 2.0": ({**base, "count": 2.0}, True),
        "user_id 42.0": ({**base, "user_id": 42.0}, True),
        "durations 2e5, 1.5e5": ({**base, "card": {**card, "duration_ms": 2e5, "played_ms": 1.5e5}}, True),
        "count 2.5": ({**base, "count": 2.5}, False),
        "user_id 1.5": ({**base, "user_id": 1.5}, False),
        "user_id true": ({**base, "user_id": True}, False),
        "user_id blank": ({**base, "user_id": " "}, False),
        "artist_id empty": ({**base, "card": {**card, "artist_id": ""}}, False),
        "like with a blank track_id": ({**base, "event_type": "like", "card": {**card, "track_id": " "}}, False),
        "playlist_add with a blank playlist_id": (
            {**base, "event_type": "playlist_add", "playlist": {"playlist_id": ""}}, False),
        "click with a blank request_id": ({**base, "event_type": "click", "recommendation": {
            "request_id": " ", "model_version": "v1", "variant": "B", "position": 0}}, False),
        "artist_name empty": ({**base, "card": {**card, "artist_name": ""}}, True),
    }
    lines = {name: json.dumps(event) for name, (event, _) in cases.items()}
    kept = {r.value: r._reason is None for r in _reasons(spark, list(lines.values())).collect()}
    found = {name: (not event_errors(event), kept[lines[name]]) for name, (event, _) in cases.items()}
    assert found == {name: (ok, ok) for name, (_, ok) in cases.items()}
    february_30 = {**base, "event_ts": "2026-02-30T21:04:05Z"}
    assert event_errors(february_30) and _reasons(spark, [json.dumps(february_30)]).first()._reason is None


def test_valid_rows_keep_raw_line_ids_as_text_and_unknown_fields(spark):
    line = GOOD[:-1] + ',"client_build":"b7"}'
    line = line.replace('"played_ms":190000}', '"played_ms":190000,"mood":"upbeat"}')
    parsed = parse_events(_landed(spark, [line]))
    row = to_bronze(parsed).first()
    assert row["_raw"] == line
    assert (row["user_id"], row["card"]["artist_id"]) == ("42", "7")
    assert row["_extra"] == {"client_build": "b7"} and row["_extra_card"] == {"mood": "upbeat"}
    assert to_quarantine(parsed).count() == 0


def test_extra_fields_stay_null_when_a_line_has_only_known_ones(spark):
    lines = [GOOD, GOOD.replace('"played_ms":190000}', '"played_ms":190000,"album_name":null}'),
             GOOD[:-1] + ',"context":{"device_os":"ios","mood":"x"}}']
    rows = to_bronze(parse_events(_landed(spark, lines))).collect()
    assert [(r["_extra"], r["_extra_card"]) for r in rows] == [(None, None)] * 3


def test_a_line_holding_more_than_one_object_is_quarantined_whole(spark):
    """`from_json` alone reads the first object of `{...}{...}` and drops the rest: a producer that
    loses a newline would lose every second event without a trace. The line is quarantined instead."""
    second = GOOD.replace('"e1"', '"e2"')
    lines = [GOOD + second, GOOD + " " + second, GOOD + " trailing", GOOD + "  "]
    parsed = parse_events(_landed(spark, lines))
    quarantined = {r["_raw"]: (r["_reason"], r["_detail"]) for r in to_quarantine(parsed).collect()}
    assert quarantined == {line: ("not_json", "text after the object") for line in lines[:3]}
    assert [r["event_id"] for r in to_bronze(parsed).collect()] == ["e1"]  # trailing spaces are no content


def test_unknown_fields_keep_their_values_as_text(spark):
    """Unknown values as Spark renders JSON into a string field: a string's text, JSON null as NULL,
    numbers and nested values as compact JSON; a repeated field keeps its last value."""
    line = (GOOD[:-1] + ', "new": {"a": [1, 2.50, 1e3, true, null, "s"]}, "gone": null, "n": 12345678901234567890,'
            ' "s": "caf\\u00e9", "s": "again"}')
    line = line.replace('"played_ms":190000}', '"played_ms":190000, "mood": ["up", 1], "mood": 5}')
    row = to_bronze(parse_events(_landed(spark, [line]))).first()
    assert row["_extra"] == {"new": '{"a":[1,2.5,1000.0,true,null,"s"]}', "gone": None, "n": "12345678901234567890",
                             "s": "again"}
    assert row["_extra_card"] == {"mood": "5"}


def test_without_recsys_jar_bronze_stops_naming_it(spark, monkeypatch):
    """On a cluster missing `recsys-jvm.jar`, bronze must say which jar, not fail on an unknown class."""
    from recsys.bronze import events

    monkeypatch.setattr(events, "SHAPE_CLASS", "io.recsys.bronze.NotShipped")
    monkeypatch.setattr(events, "SHAPE_FUNCTION", "recsys_line_shape_not_shipped")  # a session that never had it
    raw = _landed(spark, [GOOD])
    with pytest.raises(ConfigError, match=r"io\.recsys\.bronze\.NotShipped in recsys-jvm\.jar: run `make jars`"):
        parse_events(raw)


def test_ingest_without_a_landing_zone_names_the_path_and_the_setting(spark, cfg):
    """A landing path with no `events/` folder (a typo, or producers not started) is a one-line
    config error naming where it looked, not Spark's stack trace; nothing is written."""
    with pytest.raises(ConfigError, match=r"^landing.path: no landing zone at .*/landing/events \(producers write"):
        ingest_events(spark, cfg)
    assert not lake.exists(spark, lake.table_path(cfg.lake, "bronze", "events"))


WRITTEN = datetime(2026, 10, 1, 10, tzinfo=UTC)


def _cut_in_half(path: Path) -> Path:
    """A landing file as an interrupted upload leaves it: its first half."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def test_a_truncated_gzip_file_is_quarantined_whole_and_the_rest_of_its_batch_ingested(spark, cfg):
    """Spark cannot read a cut .gz (an interrupted upload): before, every run failed on it for good."""
    lines = [GOOD.replace('"e1"', f'"cut{i}"').replace('"user_id":42', f'"user_id":{42 if i % 2 else 7}')
             for i in range(500)]
    cut_file = _cut_in_half(write_file(cfg.landing.path, WRITTEN, lines, name="cut", compress=True))
    write_file(cfg.landing.path, WRITTEN, [GOOD], name="fine")

    report = ingest_events(spark, cfg)
    assert (report.files, report.rows_bronze, report.reasons) == (2, 1, {"unreadable_file": 1})
    assert [r.event_id for r in lake.read(spark, BRONZE_EVENTS.path(cfg.lake)).collect()] == ["e1"]
    [row] = lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).collect()
    assert (row._reason, row._raw, Path(row._source_file).name) == ("unreadable_file", None, "cut.json.gz")
    assert "EOFException" in row._detail
    ledger = lake.read(spark, BRONZE_INGEST_BATCHES.path(cfg.lake)).agg(F.sum("lines"), F.sum("files")).first()
    assert tuple(ledger) == (2, 2)

    again = ingest_events(spark, cfg)  # both files were taken: nothing is read or written twice
    assert (again.files, again.lines_read) == (0, 0)
    assert lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).count() == 1

    # Forgetting user 42 searches what is readable of the cut file too, and rewrites it without them
    files = landing_files(spark, cfg, ["42"])
    assert sorted(Path(f).name for f in files) == ["cut.json.gz", "fine.json"]
    cut = next(f for f in files if f.endswith("cut.json.gz"))
    assert rewrite_landing_file(cfg.landing.path, cut, {"42"})
    with gzip.open(cut_file, "rt") as rewritten:  # now whole: it reads to the end
        left = rewritten.read().splitlines()
    assert left and all('"user_id":7' in line for line in left)
    assert not rewrite_landing_file(cfg.landing.path, cut, {"42"})  # nothing of theirs is left


def test_plain_text_named_gz_is_quarantined_yet_searched_and_forgotten_line_by_line(spark, cfg):
    """A producer that forgot to compress: Spark cannot read the file (it goes by the name), but its
    lines are plain text, so the PII scan finds a user there and forgetting them rewrites it."""
    lines = [GOOD.replace('"e1"', f'"p{i}"').replace('"user_id":42', f'"user_id":{42 if i % 2 else 7}')
             for i in range(10)]
    plain = write_file(cfg.landing.path, WRITTEN, lines, name="plain")
    named_gz = plain.rename(plain.with_name("plain.json.gz"))

    assert ingest_events(spark, cfg).reasons == {"unreadable_file": 1}
    [row] = lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).collect()
    assert (row._reason, Path(row._source_file).name) == ("unreadable_file", "plain.json.gz")
    assert "not a gzip file" in row._detail

    wanted = spark.createDataFrame([("user_id", "42")], "kind string, value string")

    def in_landing() -> int:
        hits = scan(spark, cfg, redis_patterns=(), wanted=wanted, everywhere=True)
        return sum(h.count for h in hits if h.sink == "landing")

    assert in_landing() == 5
    [found] = landing_files(spark, cfg, ["42"])
    assert rewrite_landing_file(cfg.landing.path, found, {"42"})
    left = named_gz.read_text().splitlines()  # plain text still, as the producer wrote it
    assert len(left) == 5 and all('"user_id":7' in line for line in left)
    assert in_landing() == 0


def test_an_unreadable_file_in_a_compacting_batch_is_found_in_the_compacted_log(spark, cfg):
    """One file per batch, the source log compacted every second batch: batch 1's files are listed only
    in `1.compact` (Spark's default compacts every tenth batch, the same way)."""
    cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, max_files_per_trigger=1))
    for i in range(3):  # the second file (batch 1) is cut; the file source takes the oldest first
        if i == 1:
            landed = _cut_in_half(write_file(cfg.landing.path, WRITTEN, [GOOD] * 50, name=str(i), compress=True))
        else:
            landed = write_file(cfg.landing.path, WRITTEN, [GOOD.replace('"e1"', f'"f{i}"')], name=str(i))
        os.utime(landed, (1_800_000_000 + i, 1_800_000_000 + i))
    spark.conf.set("spark.sql.streaming.fileSource.log.compactInterval", "2")
    try:
        report = ingest_events(spark, cfg)
    finally:
        spark.conf.unset("spark.sql.streaming.fileSource.log.compactInterval")
    assert (report.batches, report.rows_bronze, report.reasons) == (3, 2, {"unreadable_file": 1})
    assert (Path(lake.checkpoint_path(cfg.lake, "bronze_events")) / "sources" / "0" / "1.compact").exists()
    [row] = lake.read(spark, BRONZE_EVENTS_QUARANTINE.path(cfg.lake)).collect()
    assert Path(row._source_file).name == "1.json.gz"
