"""Every lake table, declared once: layer, name, columns and types, key, and what a row is.

Writers go through `recsys.lake`, which finds the declaration from the table's path and checks
the DataFrame against it before any commit (names and types; nullability is Spark's to infer),
then writes the columns in the declared order. No writer passes `overwriteSchema`: a declared
change reaches an existing table only through `lake.migrate` (`make migrate`). Readers and tests
use the same declarations; the column-name constants below name the keys stages share.

Columns are Spark DDL; `schema` parses it when first asked (parsing needs a running session).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pyspark.sql import types as T

from recsys.config import LakeConfig

# The keys that cross stages.
USER_ID = "user_id"          # the source's id: PII, bronze only
USER_KEY = "user_key"        # its pseudonym, from silver on
ARTIST_ID = "artist_id"
TRACK_ID = "track_id"
EVENT_ID = "event_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
EVENT_DATE = "event_date"
AS_OF = "as_of"

LAYERS = ("bronze", "silver", "gold")


@dataclass(frozen=True)
class Table:
    """One Delta table: where it lives, what a row is, its columns (DDL) and key."""

    layer: str
    name: str
    row: str                              # what one row is, for the README and errors
    columns: str                          # Spark DDL, in the order the table stores them
    key: tuple[str, ...] = ()             # unique per row, when there is such a key
    partitioned_by: tuple[str, ...] = field(default=())

    @property
    def qualified(self) -> str:
        """`layer/name`, as the README and commit metadata name it."""
        return f"{self.layer}/{self.name}"

    def path(self, cfg: LakeConfig) -> str:
        """`<lake.root>/<layer>/<name>`."""
        return f"{cfg.root.rstrip('/')}/{self.layer}/{self.name}"

    @cached_property
    def schema(self) -> T.StructType:
        """The declared columns as a StructType."""
        schema = T.StructType.fromDDL(self.columns)
        assert isinstance(schema, T.StructType)
        return schema


_LINEAGE = "_source_file string, _ingested_at timestamp, _run_id string"
_ACCOUNT = ("user_id string, full_name string, email string, date_of_birth date, gender string, "
            "latitude double, longitude double, country_code string, signup_at timestamp, updated_at timestamp, "
            "_extracted_at timestamp, _run_id string")

BRONZE_EVENTS = Table(
    "bronze", "events", "landed, contract-valid line (holds PII)",
    "_raw string, event_id string, event_type string, event_ts string, user_id string, count bigint, "
    "card struct<artist_id:string,artist_name:string,track_id:string,track_name:string,album_name:string,"
    "genre:string,artist_rank:bigint,artist_followers:bigint,track_likes:bigint,duration_ms:bigint,"
    "played_ms:bigint,volume:array<bigint>>, "
    "playlist struct<playlist_id:string,playlist_name:string>, "
    "recommendation struct<request_id:string,model_version:string,variant:string,position:bigint,score:double>, "
    "context struct<session_id:string,device_os:string,app_version:string,source:string,"
    "geo:struct<lat:double,lon:double>>, "
    "user struct<email:string,display_name:string,ip:string>, "
    f"_extra map<string,string>, _extra_card map<string,string>, {_LINEAGE}")
BRONZE_EVENTS_QUARANTINE = Table(
    "bronze", "events_quarantine", "rejected landing line, raw, with its reason",
    f"_raw string, _reason string, _detail string, {_LINEAGE}")
# The quarantine's `_reason` for a whole landing file Spark cannot read: one row, `_raw` NULL. Bronze
# writes it; forgetting and the PII scan read those files line by line as far as they can.
UNREADABLE = "unreadable_file"
BRONZE_INGEST_RUNS = Table(
    "bronze", "ingest_runs", "finished events ingest run",
    "run_id string, started_at timestamp, finished_at timestamp, batches bigint, files bigint, "
    "lines_read bigint, rows_bronze bigint, rows_quarantined bigint, reasons map<string,bigint>", key=("run_id",))
BRONZE_INGEST_BATCHES = Table(
    "bronze", "ingest_batches", "committed micro-batch of an events ingest (the ledger that reconciles after crashes)",
    "app_id string, batch_id bigint, run_id string, committed_at timestamp, files bigint, lines bigint, "
    "rows_bronze bigint, rows_quarantined bigint, reasons map<string,bigint>", key=("app_id", "batch_id"))
BRONZE_ACCOUNTS = Table("bronze", "accounts", "account (holds PII)", _ACCOUNT, key=(USER_ID,))
BRONZE_ACCOUNTS_EXTRACT = Table(
    "bronze", "accounts_extract", "account changed since the watermark, the last run's extract (holds PII)",
    _ACCOUNT, key=(USER_ID,))
BRONZE_FORGET_REQUESTS = Table(
    "bronze", "forget_requests",
    "user still to forget (an account deleted at the source, or `jobs/forget.py`); deleted once erased",
    "user_key string, requested_at timestamp, source string, _run_id string")
BRONZE_FORGOTTEN = Table(
    "bronze", "forgotten", "user forgotten, by a one-way token of their key (keeps them out of later loads)",
    "token string, forgotten_at timestamp, source string", key=("token",))

# `silver/events`' write time: the clock of the silver run that wrote the row. Runs follow one
# another, so later rows have a later one: gold finds the rows written since its build before by it.
SILVER_AT = "_silver_at"
SILVER_EVENTS = Table(
    "silver", "events", "logical event, deduplicated, pseudonymous",
    "event_id string, event_type string, event_time timestamp, event_date date, user_key string, count bigint, "
    "artist_id string, artist_name string, artist_key string, track_id string, track_name string, "
    "track_key string, album_name string, genres array<string>, artist_rank bigint, artist_followers bigint, "
    "track_likes bigint, duration_ms bigint, played_ms bigint, completion string, playlist_id string, "
    "request_id string, model_version string, variant string, position bigint, score double, "
    "session_id string, device_os string, app_version string, source string, geo_city string, "
    "geo_region string, geo_country string, _source_file string, _ingested_at timestamp, "
    "_silver_at timestamp, _run_id string", key=(EVENT_ID,), partitioned_by=(EVENT_DATE,))
SILVER_EVENTS_QUARANTINE = Table(
    "silver", "events_quarantine", "event silver does not trust, without PII",
    "event_id string, event_type string, user_key string, event_ts string, _reason string, _source_file string, "
    "_ingested_at timestamp, _silver_at timestamp, _run_id string")
SILVER_USERS = Table(
    "silver", "users", "user: age group and place instead of birth date and coordinates",
    "user_key string, age_group string, city string, region string, country string, signup_date date, "
    "updated_at timestamp", key=(USER_KEY,))
SILVER_ARTISTS = Table(
    "silver", "artists", "artist, most frequent name and key",
    "artist_id string, artist_name string, artist_key string, genres array<string>, artist_rank bigint, "
    "artist_followers bigint, last_seen timestamp", key=(ARTIST_ID,))
SILVER_TRACKS = Table(
    "silver", "tracks", "track, most frequent name, key, artist and album",
    "track_id string, track_name string, track_key string, artist_id string, album_name string, "
    "duration_ms bigint, track_likes bigint, last_seen timestamp", key=(TRACK_ID,))
SILVER_CATALOG_VALUES = Table(
    "silver", "catalog_values", "(artist or track, field, value) seen in events: how often, when last",
    "kind string, id string, field string, value string, n bigint, last_seen timestamp",
    key=("kind", "id", "field", "value"))
SILVER_QUALITY_REPORTS = Table(
    "silver", "quality_reports", "silver run's data quality report",
    "run_id string, at timestamp, quarantine_rate double, report string", key=("run_id",))

GOLD_ARTIST_STATS = Table(
    "gold", "artist_stats", "artist's statistics as of the build",
    "artist_id string, artist_name string, genres array<string>, plays bigint, listeners bigint, "
    "active_days bigint, trending_rank int, followers bigint, likes bigint, as_of timestamp", key=(ARTIST_ID,))
GOLD_TRACK_STATS = Table(
    "gold", "track_stats", "track's statistics as of the build",
    "track_id string, track_name string, artist_id string, plays bigint, listeners bigint, likes bigint, "
    "active_days bigint, trending_rank int, avg_listen_ms double, std_listen_ms double, full_share double, "
    "partial_share double, skipped_share double, as_of timestamp", key=(TRACK_ID,))
GOLD_USER_FEATURES = Table(
    "gold", "user_features", "user's features as of the build",
    "user_key string, age_group string, city string, region string, country string, "
    "favourite_artists array<struct<artist_id:string,artist_name:string,genres:array<string>,"
    "active_days:bigint,trending_rank:int,followers:bigint,user_plays:bigint,last_interaction:timestamp>>, "
    "recent_tracks array<struct<track_id:string,track_name:string,artist_id:string,artist_name:string,"
    "genres:array<string>,active_days:bigint,trending_rank:int,followers:bigint,likes:bigint,"
    "avg_listen_ms:double,std_listen_ms:double,completion:string,event_time:timestamp>>, "
    "plays_30d bigint, distinct_artists bigint, top_genres array<string>, feature_hash string, as_of timestamp",
    key=(USER_KEY,))
GOLD_INTERACTIONS = Table(
    "gold", "interactions", "(user, artist) pair with implicit-feedback confidence",
    "artist_id string, user_key string, raw_score double, plays bigint, last_ts timestamp, confidence double, "
    "user_idx int, artist_idx int, as_of timestamp", key=(USER_KEY, ARTIST_ID))
GOLD_WINDOW_CATALOG = Table(
    "gold", "window_catalog", "(artist or track, field, value) in the build's window: how often, when last",
    "kind string, id string, field string, value string, n bigint, last_seen timestamp, as_of timestamp",
    key=SILVER_CATALOG_VALUES.key)
GOLD_USER_GENRES = Table(
    "gold", "user_genres", "(user, genre) plays in the build's window, which top_genres ranks",
    "user_key string, genre string, n bigint, last_play timestamp, as_of timestamp", key=(USER_KEY, "genre"))
GOLD_ID_MAP_USERS = Table("gold", "id_map_users", "user's stable integer id for ALS",
                          "user_key string, user_idx int", key=(USER_KEY,))
GOLD_ID_MAP_ARTISTS = Table("gold", "id_map_artists", "artist's stable integer id for ALS",
                            "artist_id string, artist_idx int", key=(ARTIST_ID,))
GOLD_BUILDS = Table(
    "gold", "builds", "gold build with its inputs' versions and outputs' sizes",
    "build_id string, as_of timestamp, built_at timestamp, inputs map<string,bigint>, outputs map<string,bigint>",
    key=("build_id",))
GOLD_FEATURE_STORE_SYNCS = Table(
    "gold", "feature_store_syncs", "sync of user_features to PostgreSQL and Redis",
    "version bigint, synced_at timestamp, changed bigint, removed bigint")
GOLD_RECOMMENDATIONS = Table(
    "gold", "recommendations", "(user, model alias) list of the latest batch, best first",
    "user_key string, model_alias string, model_version string, model_run_id string, source string, "
    "segment string, items array<struct<artist_id:string,artist_name:string,score:float>>, payload string, "
    "batch_id string",
    key=(USER_KEY, "model_alias"))
GOLD_SEGMENT_RECOMMENDATIONS = Table(
    "gold", "segment_recommendations", "(segment, rank) cold-start list of the latest batch",
    "segment string, rank int, artist_id string, artist_name string, score float, batch_id string",
    key=("segment", "rank"))
GOLD_FEEDBACK = Table(
    "gold", "feedback", "impression, labelled clicked or not, with the re-ranker's features",
    "user_key string, artist_id string, event_id string, event_time timestamp, event_date date, "
    "request_id string, model_version string, variant string, position bigint, score double, "
    "clicked_at timestamp, clicked int, artist_listeners double, trending_rank double, "
    "artist_followers double, age_group string, country string, genre_overlap double", key=(EVENT_ID,))
GOLD_CTR = Table(
    "gold", "ctr", "(model version, variant, position, day) click-through rate",
    "model_version string, variant string, position bigint, event_date date, impressions bigint, clicks bigint, "
    "ctr double")
GOLD_AB_RESULTS = Table(
    "gold", "ab_results", "A/B variant's CTR with the test of treatment against control",
    "experiment string, variant string, users bigint, impressions bigint, clicks bigint, ctr double, "
    "ci_low double, ci_high double, control string, treatment string, difference double, diff_ci_low double, "
    "diff_ci_high double, z double, p_value double, significant boolean, srm_chi2 double, srm_p_value double, "
    "srm boolean, mde double, alpha double", key=("experiment", "variant"))

TABLES: dict[str, Table] = {t.qualified: t for t in (
    BRONZE_EVENTS, BRONZE_EVENTS_QUARANTINE, BRONZE_INGEST_RUNS, BRONZE_INGEST_BATCHES, BRONZE_ACCOUNTS,
    BRONZE_ACCOUNTS_EXTRACT, BRONZE_FORGET_REQUESTS, BRONZE_FORGOTTEN,
    SILVER_EVENTS, SILVER_EVENTS_QUARANTINE, SILVER_USERS, SILVER_ARTISTS, SILVER_TRACKS, SILVER_CATALOG_VALUES,
    SILVER_QUALITY_REPORTS,
    GOLD_ARTIST_STATS, GOLD_TRACK_STATS, GOLD_USER_FEATURES, GOLD_INTERACTIONS, GOLD_WINDOW_CATALOG, GOLD_USER_GENRES,
    GOLD_ID_MAP_USERS, GOLD_ID_MAP_ARTISTS, GOLD_BUILDS, GOLD_FEATURE_STORE_SYNCS, GOLD_RECOMMENDATIONS,
    GOLD_SEGMENT_RECOMMENDATIONS, GOLD_FEEDBACK, GOLD_CTR, GOLD_AB_RESULTS,
)}
