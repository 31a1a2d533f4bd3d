"""Landing zone -> `bronze/events` and `bronze/events_quarantine`, incrementally, exactly once.

A Structured Streaming file source with a checkpoint takes each landing file once
(`trigger(availableNow=True)`: everything new, then stop). Each micro-batch is parsed with the
declared schema and split: contract-valid rows to `bronze/events` (raw line, parsed fields,
unknown extra fields, lineage), the rest to `bronze/events_quarantine` with a reason code.
Both Delta writes carry the batch id as an idempotent transaction (`txnAppId`/`txnVersion`),
so a run killed after writing and before committing its offsets is replayed without
duplicates. Every run appends to `bronze/ingest_runs`: lines read = bronze rows + quarantined.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys import lake
from recsys.bronze.schema import (
    CORRUPT,
    DECLARED_KINDS,
    EVENT_WITH_CORRUPT,
    KNOWN_CARD,
    KNOWN_TOP_LEVEL,
)
from recsys.config import Config, ConfigError, LimitsConfig
from recsys.landing.contract import EPOCH_MS, ISO_TIME, LABEL
from recsys.landing.zone import EVENT_TYPES, EVENTS_DIR
from recsys.tables import (
    ARTIST_ID,
    BRONZE_EVENTS_QUARANTINE,
    BRONZE_INGEST_BATCHES,
    BRONZE_INGEST_RUNS,
    EVENT_ID,
    EVENT_TYPE,
    TRACK_ID,
    UNREADABLE,
    USER_ID,
)

log = logging.getLogger(__name__)

MAX_VOLUME = 100  # percent
MAX_LATITUDE, MAX_LONGITUDE = 90, 180

# A line's shape, read on the JVM by `jvm/src/main/java/io/recsys/bronze/LineShape.java` (built into
# .jars/ by `make jars`): why it is not one JSON object (NULL when it is), its field names, its and
# its card's unknown fields (NULL when none), values as their text, whether it holds U+FFFD, its
# declared fields holding what their JSON type does not allow (`DECLARED_KINDS`; NULL when none),
# and the line with `2.0` written `2` in its integer fields (NULL when it has no such number).
SHAPE_CLASS, SHAPE_JAR, SHAPE_FUNCTION = "io.recsys.bronze.LineShape", "recsys-jvm.jar", "recsys_line_shape"
SHAPE = T.StructType([
    T.StructField("problem", T.StringType()), T.StructField("keys", T.ArrayType(T.StringType())),
    T.StructField("extra", T.MapType(T.StringType(), T.StringType())),
    T.StructField("extra_nested", T.MapType(T.StringType(), T.StringType())),
    T.StructField("replaced", T.BooleanType()), T.StructField("mistyped", T.ArrayType(T.StringType())),
    T.StructField("normalized", T.StringType()),
])
# As `LineShape` reads a line: `NaN` and `Infinity` are no JSON numbers (RFC 8259), so such a line is
# `not_json`, where Spark's default would read them into a double (a score, a coordinate).
JSON_OPTIONS = {"columnNameOfCorruptRecord": CORRUPT, "allowNonNumericNumbers": "false"}
REASONS = ("not_json", "wrong_type", "missing_required", "unknown_event_type", "invalid_value")


def _missing(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")


def _outcome(reason: str, detail: Column) -> Column:
    """A failed line's (`r` reason, `d` detail) pair."""
    return F.struct(F.lit(reason).alias("r"), detail.cast("string").alias("d"))


def _why(reason: str, checks: list[tuple[str, Column]], default: Column | None = None) -> tuple[Column, Column]:
    """(whether any check holds, `reason` with the comma-separated names of those that do).

    The names are built only for the rows that fail: the valid ones, nearly all of a batch, pay
    for the boolean checks alone.
    """
    fails = functools.reduce(operator.or_, [cond for _, cond in checks])
    names = F.concat_ws(",", F.array_compact(F.array(*[F.when(cond, F.lit(name)) for name, cond in checks])))
    detail = F.when(names != "", names)
    if default is not None:
        detail = F.coalesce(detail, default)
    return fails, _outcome(reason, detail)


def line_shape(spark: SparkSession) -> Callable[[Column], Column]:
    """The JVM function that reads a line's shape (`SHAPE`, see `jvm/.../LineShape.java`), registered
    in `spark` once (registering it again makes Spark log a warning); a clear error when its jar is
    not on the classpath.
    """
    try:
        if not spark.catalog.functionExists(SHAPE_FUNCTION):
            spark.udf.registerJavaFunction(SHAPE_FUNCTION, SHAPE_CLASS, SHAPE)
    except Exception as err:  # py4j or Spark's AnalysisException, depending on where the class is missing
        if SHAPE_CLASS not in str(err):
            raise
        raise ConfigError(f"bronze needs recsys' JVM helper {SHAPE_CLASS} in {SHAPE_JAR}: run `make jars` (it is "
                          "in .jars/), or put the jar on the cluster's classpath with the Delta Lake jars") from None
    known, card, kinds = ",".join(KNOWN_TOP_LEVEL), ",".join(KNOWN_CARD), ",".join(DECLARED_KINDS)
    return lambda line: F.call_function(SHAPE_FUNCTION, line, F.lit(known), F.lit("card"), F.lit(card), F.lit(kinds))


def parse_events(raw: DataFrame, limits: LimitsConfig | None = None) -> DataFrame:
    """Parse `value` (one landing line) with the declared schema; add `_reason` and `_detail`.

    Rows with a NULL `_reason` keep the contract; the others say which rule they broke first,
    in the order of `REASONS`. A line is read twice: its shape (`_shape`: whether it is exactly one
    JSON object, its field names, its and its card's unknown fields, its declared fields' JSON types)
    in one streaming pass on the JVM, then its values by `from_json` with the declared schema (`j`).
    A line that is not one JSON object is `not_json`, with why (`not UTF-8`, `invalid JSON`, `empty
    line`, `not an object`, `text after the object`: two events run together lose neither). A field
    holding what its JSON type does not allow (`DECLARED_KINDS`: `true` in a text field, `2.5` in an
    integer one) is `wrong_type` with its path; an integral number such as `2.0` is an integer, as
    JSON Schema says, and is read from the line the shape pass normalized. Our bounds
    (`limits.max_count`, the label rule of `recsys.landing.contract.LABEL`) are `invalid_value` too.
    """
    limits = limits or LimitsConfig()
    j = F.col("j")
    keys = F.col("_shape.keys")
    ts_text = F.trim(j["event_ts"])
    card, rec, event_type = j["card"], j["recommendation"], j[EVENT_TYPE]
    geo, volume = j["context"]["geo"], card["volume"]
    wrong_type = _why("wrong_type", [
        *[(name, F.array_contains(keys, name) & j[name].isNull()) for name in KNOWN_TOP_LEVEL],
        ("event_ts", j["event_ts"].isNotNull() & ~ts_text.rlike(ISO_TIME) & ~ts_text.rlike(EPOCH_MS)),
    ], default=F.lit("nested field"))
    missing = _why("missing_required", [
        *[(name, _missing(j[name])) for name in (EVENT_ID, EVENT_TYPE, "event_ts", USER_ID)],
        ("card", card.isNull()),
        ("card.artist_id", card.isNotNull() & _missing(card[ARTIST_ID])),
        ("card.artist_name", card.isNotNull() & card["artist_name"].isNull()),
        ("card.track_id", event_type.isin("like", "unlike", "playlist_add") & _missing(card[TRACK_ID])),
        ("playlist.playlist_id", (event_type == "playlist_add") & _missing(j["playlist"]["playlist_id"])),
        ("recommendation", event_type.isin("impression", "click") & (
            _missing(rec["request_id"]) | _missing(rec["model_version"]) | rec["position"].isNull())),
        ("card.duration_ms", (event_type == "play") & card[TRACK_ID].isNotNull()
         & (card["duration_ms"].isNull() | card["played_ms"].isNull())),
    ])
    invalid = _why("invalid_value", [
        ("count", (j["count"] < 1) | (j["count"] > limits.max_count)),
        ("card.artist_rank", card["artist_rank"] < 1),
        ("card.artist_followers", card["artist_followers"] < 0),
        ("card.track_likes", card["track_likes"] < 0),
        ("card.played_ms", card["played_ms"] < 0),
        ("card.volume", (F.array_min(volume) < 0) | (F.array_max(volume) > MAX_VOLUME)),
        ("recommendation.position", rec["position"] < 0),
        ("recommendation.model_version", ~rec["model_version"].rlike(LABEL)),
        ("recommendation.variant", ~rec["variant"].rlike(LABEL)),
        ("context.geo", (F.abs(geo["lat"]) > MAX_LATITUDE) | (F.abs(geo["lon"]) > MAX_LONGITUDE)),
    ])
    # Spark keeps a line's bytes as they came, and JSON text is UTF-8. Other bytes (an old client's
    # Latin-1) decode to U+FFFD, which the shape pass flags; only flagged lines have their bytes
    # checked, since a line may carry that character itself (Spark's AND evaluates its right side
    # only when the left holds).
    not_utf8 = F.col("_shape.replaced") & ~F.is_valid_utf8("value")
    reason = (
        F.when(not_utf8, _outcome("not_json", F.lit("not UTF-8")))
        .when(F.col("_shape.problem").isNotNull(), _outcome("not_json", F.col("_shape.problem")))
        .when(F.col("_shape.mistyped").isNotNull(), _outcome("wrong_type", F.array_join("_shape.mistyped", ",")))
        .when(wrong_type[0] | j[CORRUPT].isNotNull(), wrong_type[1])
        .when(*missing)
        .when(~event_type.isin(*EVENT_TYPES), _outcome("unknown_event_type", event_type))
        .when(*invalid)
    )
    return (
        raw.withColumn("_shape", line_shape(raw.sparkSession)(F.col("value")))
        .withColumn("j", F.from_json(F.coalesce("_shape.normalized", "value"), EVENT_WITH_CORRUPT, JSON_OPTIONS))
        .withColumn("_why", reason)
        .select("*", F.col("_why.r").alias("_reason"), F.col("_why.d").alias("_detail"))
        .drop("_why")
    )


def to_bronze(parsed: DataFrame) -> DataFrame:
    """Contract-valid rows in the `bronze/events` schema."""
    return (
        parsed.filter(F.col("_reason").isNull())
        .select(
            F.col("value").alias("_raw"),
            *[F.col("j")[name].alias(name) for name in KNOWN_TOP_LEVEL],
            F.col("_shape.extra").alias("_extra"),
            F.col("_shape.extra_nested").alias("_extra_card"),
            "_source_file", "_ingested_at", "_run_id",
        )
    )


def to_quarantine(parsed: DataFrame) -> DataFrame:
    """The parsed lines that failed a rule, kept raw with their reason for `bronze/events_quarantine`."""
    return parsed.filter(F.col("_reason").isNotNull()).select(
        F.col("value").alias("_raw"), "_reason", "_detail", "_source_file", "_ingested_at", "_run_id"
    )


def _line_hash() -> Column:
    return F.xxhash64("value", "_source_file")


def _batch_metrics() -> list[Column]:
    """What `ingest_events` observes of a parsed batch as it writes bronze: lines, lines per failed
    reason, files, and the set of the failed lines' hashes (8 bytes each, however long the line).
    """
    reason = F.col("_reason")
    return [
        F.count("*").alias("lines"),
        *[F.count(F.when(reason == name, 1)).alias(name) for name in REASONS],
        F.size(F.collect_set("_source_file")).alias("files"),
        F.collect_set(F.when(reason.isNotNull(), _line_hash())).alias("failed"),
    ]


@dataclass
class IngestReport:
    """What one events ingest did: batches, files, lines, bronze and quarantined rows, reasons."""
    run_id: str
    started_at: datetime
    batches: int = 0
    files: int = 0
    lines_read: int = 0
    rows_bronze: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def over_quarantine_limit(self, max_rate: float) -> str | None:
        """Why this run fails bronze's quality gate (quarantined share above `max_rate`), or None."""
        rate = self.rows_quarantined / self.lines_read if self.lines_read else 0.0
        if rate <= max_rate:
            return None
        return (f"bronze quarantined {rate:.2%} of {self.lines_read} lines, above quality.max_quarantine_rate "
                f"{max_rate:.2%}: {self.reasons}")

    def as_row(self, finished_at: datetime) -> tuple:
        """The report as a row of `bronze/ingest_runs`."""
        return (self.run_id, self.started_at, finished_at, self.batches, self.files, self.lines_read,
                self.rows_bronze, self.rows_quarantined, self.reasons)


def with_source_file(lines: DataFrame) -> DataFrame:
    """Landing lines (Spark's text source) as `value` and the file each came from."""
    return lines.select("value", F.col("_metadata.file_path").alias("_source_file"))


def batch_files(spark: SparkSession, checkpoint: str, batch_id: int) -> list[str]:
    """The landing files of micro-batch `batch_id`, from the file source's log in the stream's
    checkpoint: `sources/0/<id>` (every tenth batch `<id>.compact`, holding all batches so far), a
    version line, then one JSON object per file with its path and batch.
    """
    for name in (str(batch_id), f"{batch_id}.compact"):
        text = lake.read_text(spark, f"{checkpoint}/sources/0/{name}")
        if text is not None:
            entries = [json.loads(line) for line in text.splitlines()[1:] if line.strip()]
            return [e["path"] for e in entries if e["batchId"] == batch_id]
    raise FileNotFoundError(f"{checkpoint}/sources/0: no log of batch {batch_id}")


def unreadable_file(err: Exception) -> tuple[str | None, str]:
    """The landing file Spark failed to read (`FAILED_READ_FILE`), if that is what `err` is, and the
    deepest Java cause (such as `java.io.EOFException: Unexpected end of input stream`).
    """
    text = str(err)
    found = re.search(r"Encountered error while reading file (\S+?)\.\s", text)
    causes = re.findall(r"Caused by: ([\w.$]+(?:Exception|Error)[^\n]*)", text)
    return (found.group(1) if found else None), (causes[-1].strip()[:200] if causes else "FAILED_READ_FILE")


def skipping_unreadable(spark: SparkSession, checkpoint: str,
                        write_lines: Callable[[DataFrame, int, dict[str, str]], None]
                        ) -> Callable[[DataFrame, int], None]:
    """A `foreachBatch` function: `write_lines(batch, batch_id, unreadable)`, where `unreadable` maps
    each landing file of the batch that Spark cannot read (a truncated or corrupt .gz) to why. Such a
    file fails the batch's first write, which then commits nothing; the batch is read again without
    it and written, the file quarantined whole. Any other failure is raised.
    """
    def write_batch(batch: DataFrame, batch_id: int) -> None:
        unreadable: dict[str, str] = {}
        while True:
            try:
                return write_lines(batch, batch_id, unreadable)
            except Exception as err:
                path, why = unreadable_file(err)
                if path is None or path in unreadable:
                    raise
                unreadable[path] = why
                log.warning("landing file %s is unreadable (%s): quarantined whole as %s, its batch written "
                            "without it (the task errors Spark logged above were this)", path, why, UNREADABLE)
                rest = [f for f in batch_files(spark, checkpoint, batch_id) if f not in unreadable]
                batch = with_source_file(spark.read.format("text").load(rest)) if rest else batch.limit(0)

    return write_batch


def ingest_events(spark: SparkSession, cfg: Config, run_id: str | None = None,
                  after_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Take every landing file not ingested before into bronze; return what this run did.

    `after_batch(batch_id)` runs after a batch's writes and before its offsets are committed.
    """
    landing = f"{cfg.landing.path.rstrip('/')}/{EVENTS_DIR}"
    if not lake.file_exists(spark, landing):  # Spark would fail later, on a stack trace
        raise ConfigError(f"landing.path: no landing zone at {landing} (producers write "
                          f"{EVENTS_DIR}/dt=YYYY-MM-DD/hour=HH/*.json there); set landing.path, or `make generate`")
    report = IngestReport(run_id=run_id or uuid.uuid4().hex, started_at=datetime.now(UTC))
    bronze_path = lake.table_path(cfg.lake, "bronze", "events")
    quarantine_path = lake.table_path(cfg.lake, "bronze", "events_quarantine")
    ledger_path = BRONZE_INGEST_BATCHES.path(cfg.lake)
    for path in (bronze_path, quarantine_path, ledger_path):
        lake.ensure_table(spark, path)
    checkpoint = lake.checkpoint_path(cfg.lake, "bronze_events")
    app_id = f"recsys-bronze-events-{lake.ensure_checkpoint_id(spark, checkpoint)}"

    def write_lines(batch: DataFrame, batch_id: int, unreadable: dict[str, str]) -> None:
        # One pass parses every line and writes the valid ones, observing the counts and a hash of
        # each failed line on the way; the quarantine then re-parses only the lines with those
        # hashes (a collision re-checks a valid line, which the filter drops). A replayed batch
        # whose bronze write a killed run had committed is skipped by Delta, unobserved: it is
        # parsed and counted again.
        batch = batch.withColumn("_ingested_at", F.current_timestamp()).withColumn("_run_id", F.lit(report.run_id))
        parsed = parse_events(batch, cfg.limits)
        seen = Observation()
        if lake.appended_once(to_bronze(parsed.observe(seen, *_batch_metrics())), bronze_path, app_id, batch_id):
            metrics = seen.get
        else:
            metrics = parsed.agg(*_batch_metrics()).collect()[0].asDict()
        hashes = spark.createDataFrame([(h,) for h in metrics["failed"]], "h bigint")
        failed = parse_events(batch.join(F.broadcast(hashes), _line_hash() == F.col("h"), "left_semi"), cfg.limits)
        quarantined = to_quarantine(failed)
        if unreadable:
            quarantined = quarantined.unionByName(spark.createDataFrame(
                [(None, UNREADABLE, why, path, datetime.now(UTC), report.run_id) for path, why in unreadable.items()],
                BRONZE_EVENTS_QUARANTINE.schema))
        lake.append_once(quarantined, quarantine_path, app_id, batch_id)
        bad = {reason: metrics[reason] for reason in REASONS if metrics[reason]}
        if unreadable:  # a file Spark cannot read is one quarantined row: its lines cannot be counted
            bad[UNREADABLE] = len(unreadable)
        good, files = metrics["lines"] - sum(bad.values()) + len(unreadable), metrics["files"] + len(unreadable)
        # The ledger row is written like the data (same app id and batch id): a batch replayed after a
        # crash adds it once, so the ledger sums to the landed lines however often the job was killed.
        ledger = spark.createDataFrame(
            [(app_id, batch_id, report.run_id, datetime.now(UTC), files, good + sum(bad.values()), good,
              sum(bad.values()), bad)], BRONZE_INGEST_BATCHES.schema)
        lake.append_once(ledger, ledger_path, app_id, batch_id)
        report.batches += 1
        report.files += files
        report.rows_bronze += good
        report.rows_quarantined += sum(bad.values())
        report.lines_read = report.rows_bronze + report.rows_quarantined
        for reason, n in bad.items():
            report.reasons[reason] = report.reasons.get(reason, 0) + n
        if after_batch is not None:
            after_batch(batch_id)

    source = with_source_file(
        spark.readStream.format("text")
        .option("recursiveFileLookup", "true")
        .option("maxFilesPerTrigger", cfg.ingest.max_files_per_trigger)
        .option("maxFileAge", "36500d")  # a late file with an old mtime must never be skipped
        .load(landing)
    )
    query = (
        source.writeStream.foreachBatch(skipping_unreadable(spark, checkpoint, write_lines))
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    runs = spark.createDataFrame([report.as_row(datetime.now(UTC))], BRONZE_INGEST_RUNS.schema)
    lake.append(runs, BRONZE_INGEST_RUNS.path(cfg.lake))
    return report
