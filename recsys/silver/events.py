"""`bronze/events` -> `silver/events` (+ `silver/events_quarantine`), incrementally.

A Delta streaming source with a checkpoint reads only bronze rows not seen before. Each batch
is pseudonymized, cleaned and split: untrusted rows go to the quarantine (no PII: the raw
line stays in bronze), the rest is appended to `silver/events` when its `event_id` is not
there yet (looked up only in the dates nearby), so a replayed file or a re-sent event adds
nothing; the new events' counts also go to `silver/catalog_values` (see `silver/catalog.py`).
Batches are idempotent: every write carries the batch id as a Delta transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.frames import Persisted
from recsys.silver.catalog import add_values, catalog_values
from recsys.silver.clean import (
    readable,
    with_completion,
    with_event_time,
    with_genres,
    with_names,
    with_untrusted_reason,
)
from recsys.silver.privacy import geocoder, pseudonymizer
from recsys.tables import (
    ARTIST_ID,
    EVENT_DATE,
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    SILVER_AT,
    SILVER_CATALOG_VALUES,
    SILVER_EVENTS,
    SILVER_EVENTS_QUARANTINE,
    TRACK_ID,
    USER_ID,
    USER_KEY,
)


@dataclass
class SilverEventsReport:
    """What one silver events run did: rows in, inserted, duplicates dropped, quarantined by reason."""
    rows_in: int = 0
    inserted: int = 0
    duplicates_dropped: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)

    @property
    def quarantine_rate(self) -> float:
        """Quarantined rows as a share of rows in."""
        return sum(self.quarantined.values()) / self.rows_in if self.rows_in else 0.0


def clean_events(bronze: DataFrame, *, pseudonymize: Callable, geocode: Callable, now: datetime,
                 future_tolerance: timedelta, min_trusted: date, max_duration_ms: int) -> DataFrame:
    """Bronze rows -> silver columns plus `_reason` (NULL when the event is trusted).

    The producers' free text (ids, names, album, genres, playlist, request and context fields) has
    U+FFFD for U+0000 (`recsys.silver.clean.NUL`); the other text columns cannot hold it: bronze
    checked them against patterns or lists, or silver derived them.
    """
    card, rec, ctx = F.col("card"), F.col("recommendation"), F.col("context")
    return (
        bronze.withColumn(USER_KEY, pseudonymize(F.trim(USER_ID)))
        .withColumn("_place", geocode(ctx["geo"]["lat"], ctx["geo"]["lon"]))
        .transform(with_event_time)
        .withColumn("duration_ms", card["duration_ms"])
        .withColumn("played_ms", card["played_ms"])
        .transform(with_untrusted_reason(now, future_tolerance, min_trusted, max_duration_ms))
        .withColumn("genre", card["genre"]).transform(with_genres)
        .transform(with_completion)
        .transform(with_names)
        .select(
            readable(F.col(EVENT_ID)).alias(EVENT_ID), EVENT_TYPE, EVENT_TIME,
            F.to_date(EVENT_TIME).alias(EVENT_DATE), USER_KEY,
            F.coalesce("count", F.lit(1)).alias("count"),
            readable(F.trim(card[ARTIST_ID])).alias(ARTIST_ID), "artist_name", "artist_key",
            readable(F.trim(card[TRACK_ID])).alias(TRACK_ID), "track_name", "track_key",
            readable(card["album_name"]).alias("album_name"), "genres",
            card["artist_rank"].alias("artist_rank"), card["artist_followers"].alias("artist_followers"),
            card["track_likes"].alias("track_likes"), "duration_ms", "played_ms", "completion",
            readable(F.col("playlist.playlist_id")).alias("playlist_id"),
            readable(rec["request_id"]).alias("request_id"), rec["model_version"].alias("model_version"),
            rec["variant"].alias("variant"), rec["position"].alias("position"), rec["score"].alias("score"),
            *[readable(ctx[name]).alias(name) for name in ("session_id", "device_os", "app_version", "source")],
            F.col("_place.city").alias("geo_city"), F.col("_place.region").alias("geo_region"),
            F.col("_place.country").alias("geo_country"),
            "_source_file", "_ingested_at", F.lit(now).cast("timestamp").alias(SILVER_AT), "_run_id",
            "_reason", "event_ts",
        )
    )


def first_per_event(df: DataFrame) -> DataFrame:
    """One row per `event_id`: the earliest ingested copy."""
    w = Window.partitionBy(EVENT_ID).orderBy("_ingested_at", "_source_file")
    return df.withColumn("_n", F.row_number().over(w)).filter(F.col("_n") == 1).drop("_n")


def new_events(unique: DataFrame, events_path: str, window_days: int) -> DataFrame:
    """The batch's events `silver/events` does not hold yet (by `event_id`).

    `silver/events` is partitioned by event date, and copies of an event carry its time, so only
    the partitions within `window_days` of the batch's dates are read: the cost of deduplicating
    follows the batch, not the history.
    """
    spark = unique.sparkSession
    low, high = unique.agg(F.min(EVENT_DATE), F.max(EVENT_DATE)).collect()[0]
    if low is None:
        return unique
    window = timedelta(days=window_days)
    near = F.col(EVENT_DATE).between(F.lit(low - window), F.lit(high + window))
    stored = lake.read(spark, events_path).filter(near).select(EVENT_ID)
    return unique.join(stored, on=EVENT_ID, how="left_anti")


def build_silver_events(spark: SparkSession, cfg: Config, run_id: str, now: datetime,
                        forgotten: DataFrame | None = None,
                        on_batch: Callable[[DataFrame, int], None] | None = None) -> SilverEventsReport:
    """Process the bronze rows not processed before, dropping the events of `forgotten` users (tokens);
    `on_batch(events, batch_id)` sees each batch's trusted, deduplicated events.

    Per batch, in this order (each step idempotent on the batch id, so a rerun after a crash at
    any point ends where one clean run would): quarantine append, the new events' counts into
    `silver/catalog_values`, the new events appended to `silver/events`.
    """
    secret = cfg.require_secret("privacy.pseudonym_secret")
    events_path = lake.table_path(cfg.lake, "silver", "events")
    quarantine_path = lake.table_path(cfg.lake, "silver", "events_quarantine")
    bronze_path = lake.table_path(cfg.lake, "bronze", "events")
    values_path = SILVER_CATALOG_VALUES.path(cfg.lake)
    for path in (bronze_path, events_path, quarantine_path):
        lake.ensure_table(spark, path)
    checkpoint = lake.checkpoint_path(cfg.lake, "silver_events")
    app_id = f"recsys-silver-events-{lake.ensure_checkpoint_id(spark, checkpoint)}"
    pseudonymize = pseudonymizer(spark, secret)
    geocode = geocoder(cfg.privacy.geo_min_population)
    gone = forgotten if forgotten is not None else spark.createDataFrame([], "token string")
    q = cfg.quality
    report = SilverEventsReport()

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        with Persisted() as keep:
            cleaned = keep(clean_events(
                batch.withColumn("_run_id", F.lit(run_id)), pseudonymize=pseudonymize, geocode=geocode, now=now,
                future_tolerance=timedelta(seconds=q.future_tolerance_s),
                min_trusted=date.fromisoformat(q.min_trusted_date), max_duration_ms=q.max_duration_ms,
            ))
            trusted = cleaned.filter(F.col("_reason").isNull())
            unique = keep(first_per_event(trusted).withColumn("token", F.sha2(USER_KEY, 256))
                          .join(F.broadcast(gone), on="token", how="left_anti").drop("token")
                          .select(*SILVER_EVENTS.schema.fieldNames()))
            counts = {r["_reason"] or "ok": r["n"] for r in
                      cleaned.groupBy("_reason").agg(F.count("*").alias("n")).collect()}
            lake.append_once(cleaned.filter(F.col("_reason").isNotNull())
                             .select(*SILVER_EVENTS_QUARANTINE.schema.fieldNames()),
                             quarantine_path, app_id, batch_id)
            new = keep(new_events(unique, events_path, cfg.ingest.dedup_window_days))
            inserted = new.count()
            with lake.staged(catalog_values(new), cfg.lake, "catalog_values") as values, \
                    lake.transaction(spark, app_id, batch_id):
                add_values(values, values_path)
            lake.append_once(new, events_path, app_id, batch_id)
            if on_batch is not None:
                on_batch(unique, batch_id)
        ok = counts.pop("ok", 0)
        report.rows_in += ok + sum(counts.values())
        report.inserted += inserted
        report.duplicates_dropped += ok - inserted
        for reason, n in counts.items():
            report.quarantined[reason] = report.quarantined.get(reason, 0) + n

    query = (
        spark.readStream.format("delta").option("maxFilesPerTrigger", cfg.ingest.max_files_per_trigger)
        .option("skipChangeCommits", "true")  # erasures delete from bronze; silver forgets those users itself
        .load(bronze_path)
        .writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return report
