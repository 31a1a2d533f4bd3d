"""Silver cleaning rules on tiny hand-written frames, one behaviour per test."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from recsys.keys import pseudonym
from recsys.silver.catalog import catalog_fields, to_artists, to_tracks
from recsys.silver.clean import (
    display_name,
    name_key,
    normalize_name,
    readable,
    with_completion,
    with_event_time,
    with_genres,
    with_untrusted_reason,
)
from recsys.silver.events import first_per_event
from recsys.silver.privacy import geocoder, pseudonymizer, with_age_group
from recsys.silver.users import to_silver_users


@pytest.mark.parametrize("variant", ["  The Beatles!! ", "the beatles", "THE BEATLES", "The  Beatles"])
def test_name_variants_share_one_key(variant):
    assert name_key(variant) == "the beatles"


def test_accents_in_either_unicode_form_share_one_key_and_display_composed():
    assert name_key("Beyoncé") == name_key("Beyonce\u0301") == "beyonce"
    assert display_name("  Beyonce\u0301 ") == "Beyoncé"
    assert name_key("!!!") == "!!!"


def test_normalize_name_udf_matches_the_python_rules(spark):
    df = spark.createDataFrame([("  Sigur  Rós ",), (None,)], "name string")
    out = df.select(normalize_name("name").alias("n")).select("n.display", "n.key").collect()
    assert [tuple(r) for r in out] == [("Sigur Rós", "sigur ros"), (None, None)]


def test_a_nul_in_a_producers_text_becomes_a_replacement_character(spark):
    assert display_name(" Bad\u0000Name ") == "Bad\ufffdName"
    assert name_key("Bad\u0000Name") == name_key("Bad Name") == "bad name"
    df = spark.createDataFrame([("a\u0000b", '["Ro\\u0000ck", "pop"]'), ("a\\u0000b", "Indie\u0000")],
                               "id string, genre string")  # a list arrives as JSON text, its U+0000 escaped
    out = with_genres(df).select(readable(F.col("id")), "genres").collect()
    assert [tuple(r) for r in out] == [("a\ufffdb", ["ro\ufffdck", "pop"]), ("a\\u0000b", ["indie\ufffd"])]


def test_event_time_from_iso_with_z_or_offset_and_epoch_millis(spark):
    """Every form bronze keeps (`recsys.landing.contract.ISO_TIME`) is read; a time that is not real is NULL."""
    utc, minute = datetime(2026, 11, 28, 21, 4, 5, 123000), datetime(2026, 11, 28, 21, 4)
    rows = [("2026-11-28T21:04:05.123Z", utc), ("2026-11-28T23:04:05.123+02:00", utc), ("1795899845123", utc),
            ("2026-11-28t21:04:05.123z", utc), ("2026-11-28 23:04:05.123+0200", utc), ("2026-11-28T21:04Z", minute),
            ("2026-11-28 22:04+01:00", minute), ("2026-11-28t20:34-0030", minute), ("soon", None),
            ("2026-02-30T21:04:05Z", None)]
    df = spark.createDataFrame([(text,) for text, _ in rows], "event_ts string")
    expected = spark.createDataFrame(rows, "event_ts string, event_time timestamp")
    assert_df_equality(with_event_time(df), expected, ignore_nullable=True)


def test_untrusted_times_and_impossible_durations_get_a_reason(spark):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [
        (datetime(2026, 10, 1), 200_000, 100_000, None),
        (None, None, None, "bad_timestamp"),
        (datetime(1999, 12, 31), None, None, "ts_before_trusted"),
        (datetime(2026, 11, 1, 2), None, None, "ts_in_future"),
        (datetime(2026, 11, 1, 0, 30), None, None, None),
        (datetime(2026, 10, 1), -5, 0, "impossible_duration"),
        (datetime(2026, 10, 1), 11_000_000, 5, "impossible_duration"),
        (datetime(2026, 10, 1), 200_000, 250_000, "played_over_duration"),
    ]
    df = spark.createDataFrame([r[:3] for r in rows], "event_time timestamp, duration_ms long, played_ms long")
    out = df.transform(with_untrusted_reason(now, timedelta(hours=1), date(2000, 1, 1), 10_800_000))
    expected = spark.createDataFrame(rows, "event_time timestamp, duration_ms long, played_ms long, _reason string")
    assert_df_equality(out, expected, ignore_nullable=True)


def test_genre_is_always_an_array(spark):
    df = spark.createDataFrame([('["Rock"," pop"]',), ("Jazz",), (None,)], "genre string")
    expected = spark.createDataFrame([('["Rock"," pop"]', ["rock", "pop"]), ("Jazz", ["jazz"]), (None, [])],
                                     "genre string, genres array<string>")
    assert_df_equality(with_genres(df), expected, ignore_nullable=True)


def test_completion_follows_the_contract_thresholds(spark):
    rows = [("play", 100_000, 80_000, "full"), ("play", 100_000, 79_999, "partial"),
            ("play", 100_000, 29_999, "skipped"), ("play", 50_000, 29_999, "partial"),
            ("play", None, None, None), ("like", 100_000, 100_000, None)]
    df = spark.createDataFrame([r[:3] for r in rows], "event_type string, duration_ms long, played_ms long")
    expected = spark.createDataFrame(rows, "event_type string, duration_ms long, played_ms long, completion string")
    assert_df_equality(with_completion(df), expected, ignore_nullable=True)


def test_age_groups_use_the_contract_buckets_for_the_run_date(spark):
    today = date(2026, 11, 29)
    births = [(date(2008, 11, 30), "<18"), (date(2008, 11, 29), "18-24"), (date(2001, 11, 30), "18-24"),
              (date(1992, 1, 1), "25-34"), (date(1961, 11, 29), "65+"), (date(1962, 1, 1), "55-64"), (None, "unknown")]
    df = spark.createDataFrame([(b,) for b, _ in births], "date_of_birth date").transform(with_age_group(today))
    assert_df_equality(df, spark.createDataFrame(births, "date_of_birth date, age_group string"),
                       ignore_nullable=True)


def test_user_key_is_an_hmac_and_the_secret_is_not_in_the_plan(spark):
    secret = "s3cret-for-this-test-only"
    pseudonymize = pseudonymizer(spark, secret)
    df = spark.createDataFrame([("42",), (None,)], "user_id string").select(pseudonymize("user_id").alias("k"))
    expected = hmac.new(secret.encode(), b"42", hashlib.sha256).hexdigest()
    assert [r.k for r in df.collect()] == [expected, None]
    plan = df._jdf.queryExecution().toString()
    assert secret not in plan and "s3cret" not in plan


def test_known_coordinates_map_to_their_city(spark):
    geocode = geocoder(100_000)
    coords = [(40.7128, -74.0060), (51.5074, -0.1278), (48.1351, 11.5820), (19.0760, 72.8777), (None, None)]
    df = spark.createDataFrame(coords, "lat double, lon double").select(geocode("lat", "lon").alias("p"))
    got = [(r.p.city, r.p.region, r.p.country) if r.p.city else None for r in df.collect()]
    assert got == [("New York City", "New York", "US"), ("London", "England", "GB"),
                   ("Munich", "Bavaria", "DE"), ("Mumbai", "Maharashtra", "IN"), None]


def test_users_carry_no_pii_and_fall_back_to_country_code(spark):
    accounts = spark.createDataFrame(
        [("1", "Ann Lee", "ann@example.com", date(1990, 1, 1), "f", 51.5, -0.12, "GB", datetime(2024, 1, 1),
          datetime(2026, 1, 1)),
         ("2", None, None, None, None, None, None, "se ", datetime(2024, 2, 1), datetime(2026, 1, 1))],
        "user_id string, full_name string, email string, date_of_birth date, gender string, latitude double, "
        "longitude double, country_code string, signup_at timestamp, updated_at timestamp")
    users = to_silver_users(accounts, pseudonymize=pseudonymizer(spark, "k"), geocode=geocoder(100_000),
                            today=date(2026, 11, 29))
    expected = spark.createDataFrame(
        [(pseudonym("k", "1"), "35-44", "London", "England", "GB", date(2024, 1, 1), datetime(2026, 1, 1)),
         (pseudonym("k", "2"), "unknown", None, None, "SE", date(2024, 2, 1), datetime(2026, 1, 1))],
        "user_key string, age_group string, city string, region string, country string, signup_date date, "
        "updated_at timestamp")
    assert_df_equality(users, expected, ignore_row_order=True, ignore_nullable=True)


def test_first_per_event_keeps_the_earliest_copy(spark):
    df = spark.createDataFrame(
        [("e1", datetime(2026, 1, 2), "b.json"), ("e1", datetime(2026, 1, 1), "a.json"),
         ("e2", datetime(2026, 1, 1), "a.json")],
        "event_id string, _ingested_at timestamp, _source_file string")
    expected = spark.createDataFrame(
        [("e1", datetime(2026, 1, 1), "a.json"), ("e2", datetime(2026, 1, 1), "a.json")],
        "event_id string, _ingested_at timestamp, _source_file string")
    assert_df_equality(first_per_event(df), expected, ignore_row_order=True)


def test_artists_take_the_most_frequent_display_name_and_latest_card_values(spark):
    rows = [("7", "Björk", "bjork", ["pop"], 5, 100, datetime(2026, 1, 1)),
            ("7", "BJÖRK", "bjork", ["pop"], 4, 110, datetime(2026, 1, 2)),
            ("7", "Björk", "bjork", [], 3, 120, datetime(2026, 1, 3))]
    events = spark.createDataFrame(rows, "artist_id string, artist_name string, artist_key string, genres "
                                         "array<string>, artist_rank long, artist_followers long, event_time timestamp")
    expected = spark.createDataFrame([("7", "Björk", "bjork", ["pop"], 3, 120, datetime(2026, 1, 3))],
                                     "artist_id string, artist_name string, artist_key string, genres array<string>, "
                                     "artist_rank long, artist_followers long, last_seen timestamp")
    assert_df_equality(to_artists(events), expected, ignore_nullable=True)


def test_tracks_take_the_most_frequent_names_and_album_and_the_latest_likes(spark):
    rows = [("t1", "Jóga", "joga", "7", "Homogenic", 305_000, 10, datetime(2026, 1, 1)),
            ("t1", "JOGA", "joga", "7", "Homogenic", 305_000, 12, datetime(2026, 1, 2)),
            ("t1", "Jóga", "joga", "7", None, 305_000, 11, datetime(2026, 1, 3)),
            (None, None, None, "7", None, None, None, datetime(2026, 1, 4))]
    events = spark.createDataFrame(rows, "track_id string, track_name string, track_key string, artist_id string, "
                                         "album_name string, duration_ms long, track_likes long, event_time timestamp")
    expected = spark.createDataFrame([("t1", "Jóga", "joga", "7", "Homogenic", 305_000, 11, datetime(2026, 1, 3))],
                                     "track_id string, track_name string, track_key string, artist_id string, "
                                     "album_name string, duration_ms long, track_likes long, last_seen timestamp")
    assert_df_equality(to_tracks(events), expected, ignore_nullable=True)


def test_the_quality_gate_names_rate_limit_and_reasons():
    from recsys.silver.build import QualityGateFailed, quality_gate
    from recsys.silver.events import SilverEventsReport

    quality_gate(SilverEventsReport(rows_in=100, inserted=95, quarantined={"ts_in_future": 5}), 0.05)
    report = SilverEventsReport(rows_in=100, inserted=94, quarantined={"ts_in_future": 4, "bad_timestamp": 2})
    with pytest.raises(QualityGateFailed) as err:
        quality_gate(report, 0.05)
    assert str(err.value) == ("silver quarantined 6.00% of 100 events, above quality.max_quarantine_rate 5.00%: "
                              "{'ts_in_future': 4, 'bad_timestamp': 2}")


def test_the_dedupe_reads_only_the_date_partitions_near_the_batch(spark, tmp_path):
    """Files of dates outside the window are deleted from disk (not from the table): a lookup that
    read them would fail, so passing proves it pruned them; a wide window then does fail."""
    import shutil

    from recsys import lake
    from recsys.config import LakeConfig
    from recsys.silver.events import new_events
    from recsys.tables import SILVER_EVENTS

    path = SILVER_EVENTS.path(LakeConfig(root=str(tmp_path)))
    lake.ensure_table(spark, path)
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(10)]

    def events(*pairs):
        rows = [{**dict.fromkeys(SILVER_EVENTS.schema.fieldNames()), "event_id": e, "event_type": "play",
                 "event_time": datetime.combine(d, datetime.min.time()), "event_date": d, "count": 1}
                for e, d in pairs]
        return spark.createDataFrame(rows, SILVER_EVENTS.schema)

    lake.append(events(*[(f"e{i}", d) for i, d in enumerate(days)]), path)
    for d in days[:3] + days[8:]:
        shutil.rmtree(f"{path}/event_date={d}")

    fresh = new_events(events(("e5", days[5]), ("new", days[5])), path, window_days=2)

    assert [r.event_id for r in fresh.collect()] == ["new"]  # e5 is a copy
    with pytest.raises(Exception, match="(?i)file.*(not exist|not found)|FileNotFound"):
        new_events(events(("late", days[5])), path, window_days=5).count()


def test_a_narrow_catalog_picks_its_fields_as_the_whole_catalog_does(spark):
    rows = [("7", "Björk", "t1", "Jóga", ["pop"], datetime(2026, 1, 1)),
            ("7", "BJÖRK", "t1", "JOGA", ["pop"], datetime(2026, 1, 2)),
            ("7", "Björk", "t1", "Jóga", [], datetime(2026, 1, 3)),
            ("8", "Sigur Rós", "t1", "JOGA", ["post-rock"], datetime(2026, 1, 4))]
    events = spark.createDataFrame(rows, "artist_id string, artist_name string, track_id string, track_name string, "
                                         "genres array<string>, event_time timestamp").select(
        "*", *[F.lit(None).cast(t).alias(c) for c, t in (
            ("artist_key", "string"), ("artist_rank", "long"), ("artist_followers", "long"), ("track_key", "string"),
            ("album_name", "string"), ("duration_ms", "long"), ("track_likes", "long"))])
    artists = catalog_fields(events, "artist", ("artist_name", "genres"))
    assert_df_equality(artists, to_artists(events).select("artist_id", "artist_name", "genres", "last_seen"),
                       ignore_row_order=True, ignore_nullable=True)
    assert sorted((r.artist_id, r.artist_name, r.genres) for r in artists.collect()) == [
        ("7", "Björk", ["pop"]), ("8", "Sigur Rós", ["post-rock"])]
    tracks = catalog_fields(events, "track", ("track_name", "artist_id"))
    assert_df_equality(tracks, to_tracks(events).select("track_id", "track_name", "artist_id", "last_seen"),
                       ignore_nullable=True)
    with pytest.raises(ValueError, match="album"):
        catalog_fields(events, "artist", ("artist_name", "album_name"))
