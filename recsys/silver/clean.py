"""Pure transformations from bronze rows to clean silver events (chained with `.transform`).

Each takes and returns a DataFrame and never touches paths, clients or the clock (`now` is a
parameter), so the tests feed them hand-written rows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, timedelta

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.functions import pandas_udf

from recsys.tables import EVENT_TIME, EVENT_TYPE

EPOCH_MS = r"^\s*\d{1,16}\s*$"
ISO_WITHOUT_SECONDS = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})([Z+-])"  # upper case: date, hours:minutes, zone
# JSON may carry U+0000 in any string (`"\\u0000"`) and Delta keeps it, but PostgreSQL stores it in
# neither `text` nor `jsonb`: one such event stopped silver's `click_events` write, and gold's
# feature store, run after run. Silver writes U+FFFD instead, Unicode's mark for a character that
# cannot be shown, which keeps two ids that differ only there apart.
NUL, REPLACEMENT = "\u0000", "\ufffd"
FULL_SHARE, SKIP_SHARE, SKIP_MS = 0.8, 0.5, 30_000
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_SPACES = re.compile(r"\s+", re.UNICODE)


def readable(text: Column) -> Column:
    """`text` with every U+0000 replaced by U+FFFD (see `NUL`)."""
    return F.replace(text, F.lit(NUL), F.lit(REPLACEMENT))


def name_key(name: str | None) -> str | None:
    """The matching key of a displayed name: case, spacing, punctuation and accents removed.

    `"  The Beatles!! "`, `"THE BEATLES"` -> `"the beatles"`; `"Beyoncé"` (either Unicode
    form) -> `"beyonce"`. A name with no letters or digits keeps its punctuation as the key.
    """
    if name is None:
        return None
    decomposed = unicodedata.normalize("NFKD", name)
    base = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    key = _SPACES.sub(" ", _NOT_WORD.sub(" ", base)).strip()
    return key or _SPACES.sub(" ", base).strip() or None


def display_name(name: str | None) -> str | None:
    """A clean display form: composed Unicode (NFC), trimmed, single spaces, U+FFFD for U+0000; case
    kept.
    """
    if name is None:
        return None
    return _SPACES.sub(" ", unicodedata.normalize("NFC", name).replace(NUL, REPLACEMENT)).strip() or None


# A StructType, not a DDL string: this runs at import, before any SparkSession parses DDL.
@pandas_udf(T.StructType([T.StructField("display", T.StringType()),  # type: ignore[call-overload]
                          T.StructField("key", T.StringType())]))
def normalize_name(names: pd.Series) -> pd.DataFrame:
    """Display form and matching key of each name (a pandas UDF body)."""
    return pd.DataFrame({"display": names.map(display_name), "key": names.map(name_key)})


def with_event_time(df: DataFrame, ts_col: str = "event_ts", out_col: str = EVENT_TIME) -> DataFrame:
    """`event_ts` (ISO-8601 with Z or offset, or epoch milliseconds) as a UTC timestamp.

    Spark's cast reads the common form; the forms the contract also allows and it does not read (`t`
    or `z` in lower case, no seconds) are written in the common form first, only when the cast fails.
    """
    text = F.trim(F.col(ts_col))
    epoch = F.timestamp_millis(text.try_cast(T.LongType()))
    common = F.regexp_replace(F.upper(text), ISO_WITHOUT_SECONDS, "$1T$2:00$3")
    iso = F.coalesce(text.try_cast(T.TimestampType()), common.try_cast(T.TimestampType()))
    return df.withColumn(out_col, F.when(text.rlike(EPOCH_MS), epoch).otherwise(iso))


def with_genres(df: DataFrame, col: str = "genre", out_col: str = "genres") -> DataFrame:
    """`genre` (a string, or a JSON list as text) as an array of trimmed lower-case names (U+FFFD for
    U+0000).
    """
    raw = F.trim(F.col(col))
    as_list = F.when(raw.startswith("["), F.from_json(raw, "array<string>")).otherwise(F.array(raw))
    lowered = F.transform(as_list, lambda g: F.lower(F.trim(readable(g))))
    cleaned = F.filter(lowered, lambda g: g.isNotNull() & (g != ""))
    return df.withColumn(out_col, F.when(F.col(col).isNull(), F.array().cast("array<string>")).otherwise(cleaned))


def with_completion(df: DataFrame) -> DataFrame:
    """Full / partial / skipped per the contract's thresholds; NULL for plays without a track."""
    played, duration = F.col("played_ms"), F.col("duration_ms")
    completion = (
        F.when((F.col(EVENT_TYPE) != "play") | duration.isNull() | played.isNull(), F.lit(None))
        .when(played >= FULL_SHARE * duration, F.lit("full"))
        .when((played < SKIP_MS) & (played < SKIP_SHARE * duration), F.lit("skipped"))
        .otherwise(F.lit("partial"))
    )
    return df.withColumn("completion", completion)


def with_untrusted_reason(now: datetime, future_tolerance: timedelta, min_trusted: date,
                          max_duration_ms: int) -> Callable[[DataFrame], DataFrame]:
    """`_reason` for events silver must not trust: bad times and impossible durations."""

    def transform(df: DataFrame) -> DataFrame:
        t, duration, played = F.col(EVENT_TIME), F.col("duration_ms"), F.col("played_ms")
        reason = (
            F.when(t.isNull(), F.lit("bad_timestamp"))
            .when(t < F.lit(datetime.combine(min_trusted, datetime.min.time())), F.lit("ts_before_trusted"))
            .when(t > F.lit(now + future_tolerance), F.lit("ts_in_future"))
            .when((duration <= 0) | (duration > max_duration_ms), F.lit("impossible_duration"))
            .when(played > duration, F.lit("played_over_duration"))
        )
        return df.withColumn("_reason", reason)

    return transform


def with_names(df: DataFrame) -> DataFrame:
    """Display names and matching keys for artist and track names."""
    artist, track = normalize_name(F.col("card.artist_name")), normalize_name(F.col("card.track_name"))
    return (
        df.withColumn("_artist", artist).withColumn("_track", track)
        .withColumn("artist_name", F.col("_artist.display")).withColumn("artist_key", F.col("_artist.key"))
        .withColumn("track_name", F.col("_track.display")).withColumn("track_key", F.col("_track.key"))
        .drop("_artist", "_track")
    )
