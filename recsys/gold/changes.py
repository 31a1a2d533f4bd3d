"""What changed in gold's window since the build before, so a build can update a table from the
difference instead of recomputing it from every event of the window.

A build as of `a2` reads the events of `[a2 - W, a2)` in `silver/events` at version `v2`; the
build before read `[a1 - W, a1)` at `v1` (`W` is `gold.feature_window_days`). When silver only
had rows appended in between (appends and compactions: no delete, update, overwrite or erasure),
the rows of `v1` are exactly the rows of `v2` whose `_silver_at` is at most `M1`, the newest
`_silver_at` of `v1`, which the build before recorded. Then

- **entering** = the rows of `v2` in the new window with `_silver_at > M1` (written since) or
  `event_time >= a1` (written before, but after the old window's end);
- **leaving** = the rows with `_silver_at <= M1` in `[a1 - W, min(a1, a2 - W))`: in the old
  window, before the new one.

Both are read from `v2` with the event date bounding the partitions, so their cost follows the
days that moved, not the window. `_silver_at` is the clock of the silver run, and runs follow one
another, so rows written later have a later one; that is checked, not assumed: the rows of `v2`
with `_silver_at > M1` must number exactly the rows `v2` has more than `v1` (a count Delta answers
from its log), or the build is a full one.

A build is also full when there is no build before, when the settings it depends on changed, when it
is as of an earlier time or an older silver version, when anything rewrote a gold table since (an
erasure, a maintenance compaction), or when more than `gold.max_update_share` of the window may have
entered it (the rows written since, and those before dated from the day of the build before on):
updating from a difference that large costs at least as much as aggregating the window. At 60,000
users, one day entering after a build 26 minutes before (`make bench-pipeline`'s lake, alternating
in one process, 2026-12-07), an update took 123.0-127.4 s against 141.2-145.1 s in full with 4.4% of
the window's 10,074,767 events entering, 107.4-111.4 s against 107.6-113.2 s with 7.9% of 5,570,382,
and 56.7-65.6 s against 55.4-62.4 s with 19.9% of 2,210,866 (13 of a window's 15 days entering at
12,000 users: 56.7-60.6 s against 50.6-51.2 s). `Change.full_because` says which.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import GoldConfig
from recsys.tables import EVENT_DATE, EVENT_TIME, SILVER_AT

# The commits of `silver/events` that leave its rows as they were, or only add rows.
_APPENDS = ("WRITE", "STREAMING UPDATE")
_SAME_ROWS = ("OPTIMIZE",)


def settings_digest(gold: GoldConfig) -> str:
    """A digest of the gold settings a build depends on: a build with other settings starts over."""
    settings = {k: v for k, v in asdict(gold).items() if k not in ("feature_ttl_s", "redis_prefix", "max_update_share")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Previous:
    """What a build recorded for the next one: its as-of time, the `silver/events` version it read,
    the newest `_silver_at` in it, its settings' digest and the gold tables' versions it wrote.
    """
    as_of: datetime
    silver_version: int
    silver_at: datetime
    settings: str
    outputs: dict[str, int]


@dataclass(frozen=True)
class Difference:
    """The events that entered and left the window since the build `previous`, for a build as of
    `as_of` on silver's rows `events`.
    """
    previous: Previous
    entering: DataFrame
    leaving: DataFrame
    events: DataFrame
    as_of: datetime

    def left(self, days: int) -> DataFrame:
        """The rows the build before counted in its last `days` that this build does not (`leaving`
        for a shorter span than the window, such as the summaries' 30 days).
        """
        return left_since(self.events, self.previous, self.as_of, days)


@dataclass(frozen=True)
class Change:
    """How a build's window differs from the build before's (`difference`), or why this build is a
    full one (`full_because`); and the newest `_silver_at` of the silver version read, for the next
    build.
    """
    silver_at: datetime | None
    difference: Difference | None = None
    full_because: str | None = None


def _appends_only(spark: SparkSession, path: str, since: int, until: int) -> str | None:
    """None when every commit of `path` in `(since, until]` only appended rows or compacted files;
    otherwise the first one that did more.
    """
    history = (DeltaTable.forPath(spark, path).history()
               .filter((F.col("version") > since) & (F.col("version") <= until))
               .select("version", "operation", "operationParameters", "userMetadata").orderBy("version"))
    for version, operation, parameters, metadata in history.collect():
        appended = operation in _APPENDS and (parameters or {}).get("mode") == "Append"
        if metadata == lake.ERASURE or not (appended or operation in _SAME_ROWS):
            return f"silver/events version {version} is a {operation}, not an append"
    return None


def appended_since(events_path: str, events: DataFrame, version: int, since_version: int,
                   since_silver_at: datetime) -> tuple[str | None, int, datetime | None]:
    """Whether `silver/events` version `version` (`events`: all its rows) holds the rows of version
    `since_version` (newest `_silver_at`: `since_silver_at`) and, besides, only the rows whose
    `_silver_at` is later: (None, how many, the newest `_silver_at` among them), or (why not, 0, None).
    Checked, not assumed: every commit in between appended or compacted, and the rows with a later
    `_silver_at` number exactly the rows added.
    """
    spark = events.sparkSession
    reason = _appends_only(spark, events_path, since_version, version)
    if reason is not None:
        return reason, 0, None
    n_since, newest = events.filter(F.col(SILVER_AT) > F.lit(since_silver_at)) \
        .agg(F.count("*"), F.max(SILVER_AT)).collect()[0]
    added = events.count() - lake.read(spark, events_path, version=since_version).count()
    if n_since != added:
        return f"{n_since} rows have a later _silver_at but {added} were added", 0, None
    return None, n_since, _aware(newest)


def window_change(events_path: str, events: DataFrame, version: int, previous: Previous | None, as_of: datetime,
                  gold: GoldConfig, current_outputs: dict[str, int | None]) -> Change:
    """How the window of a build as of `as_of` on `silver/events` version `version` (`events`: all
    its rows) differs from the window of the build `previous` (see the module's docstring).
    `current_outputs` are the gold tables' current versions (None: no such table), which must still
    be the ones `previous` wrote.
    """
    spark = events.sparkSession
    if previous is None:
        return Change(newest_written(events), full_because="no build before it recorded what it read")
    reason = None
    if previous.settings != settings_digest(gold):
        reason = "the gold settings changed"
    elif as_of < previous.as_of or version < previous.silver_version:
        reason = "it is as of an earlier time or silver version than the build before"
    elif any(v is None or k not in previous.outputs for k, v in current_outputs.items()):
        reason = "the build before did not write every gold table"
    elif any(previous.outputs[k] != v for k, v in current_outputs.items()):
        reason = "a gold table was rewritten since the build before"
    else:
        reason, n_since, newest = appended_since(events_path, events, version, previous.silver_version,
                                                 previous.silver_at)
    if reason is not None:
        return Change(newest_written(events), full_because=reason)
    read_before = lake.read(spark, events_path, version=previous.silver_version)

    start = as_of - timedelta(days=gold.feature_window_days)
    # What entered is at most the rows written since and the rows before dated from the day of the
    # build before on: counted from the date partitions alone (no column is read), like the rows of
    # the window's dates they are compared with.
    n_window = _dated(events, start.date(), as_of.date()).count()
    n_entering = n_since + _dated(read_before, previous.as_of.date(), as_of.date()).count()
    silver_at = max(previous.silver_at, newest) if newest else previous.silver_at
    if n_entering > gold.max_update_share * n_window:
        return Change(silver_at, full_because=f"up to {n_entering} of the {n_window} events of the window's dates "
                                              f"entered it, more than gold.max_update_share "
                                              f"({gold.max_update_share:g})")
    entering = between(events, start, as_of).filter(
        (F.col(SILVER_AT) > F.lit(previous.silver_at)) | (F.col(EVENT_TIME) >= F.lit(previous.as_of)))
    leaving = left_since(events, previous, as_of, gold.feature_window_days)
    return Change(silver_at, Difference(previous, entering, leaving, events, as_of))


def left_since(events: DataFrame, previous: Previous, as_of: datetime, days: int) -> DataFrame:
    """The rows of `events` that `previous` read in its last `days` and a build as of `as_of` does
    not count in its own: `_silver_at <= M1` in `[a1 - days, min(a1, as_of - days))`.
    """
    span = timedelta(days=days)
    return between(events, previous.as_of - span, min(previous.as_of, as_of - span)).filter(
        F.col(SILVER_AT) <= F.lit(previous.silver_at))


def _dated(events: DataFrame, first: date, last: date) -> DataFrame:
    """Events dated `first` to `last`, both included: a filter of partitions alone."""
    return events.filter((F.col(EVENT_DATE) >= F.lit(first)) & (F.col(EVENT_DATE) <= F.lit(last)))


def between(events: DataFrame, start: datetime, end: datetime) -> DataFrame:
    """Events in `[start, end)`; the date bounds prune `silver/events`' partitions."""
    return _dated(events, start.date(), end.date()).filter(
        (F.col(EVENT_TIME) >= F.lit(start)) & (F.col(EVENT_TIME) < F.lit(end)))


def _aware(t: datetime | None) -> datetime | None:
    """A timestamp Spark collected (naive, in this process's time zone) as an aware UTC time."""
    return None if t is None else t.astimezone(UTC)


def newest_written(events: DataFrame) -> datetime | None:
    """The newest `_silver_at` of `events` (None when it has no rows), as an aware UTC time."""
    return _aware(events.agg(F.max(SILVER_AT)).collect()[0][0])


def updated_sums(previous: DataFrame, entering: DataFrame, leaving: DataFrame, keys: list[str], sums: list[str],
                 newest: tuple[str, datetime] | None = None) -> DataFrame:
    """Per `keys`, a window's sums after its change: `previous` plus `entering` minus `leaving`.
    Integer sums make the result equal to summing the new window, bit for bit.

    `newest` = (`latest`, the window's start) names the column of the time of the newest event
    summed, which each of the three then carries. `latest` is the previous one while it is still in
    the window (at or after its start: the events that left are all older), or the newest entering
    one; a key with neither has no event left in the window and is dropped. Without `newest`, every
    key is kept, its sums possibly 0.
    """
    latest, window_start = newest or (None, None)
    times = [] if latest is None else [latest]
    kept = previous.select(*keys, *sums, *[F.when(F.col(t) >= F.lit(window_start), F.col(t)).alias(t) for t in times])
    left = leaving.select(*keys, *[(-F.col(c)).alias(c) for c in sums],
                          *[F.lit(None).cast("timestamp").alias(t) for t in times])
    summed = (kept.unionByName(left).unionByName(entering.select(*keys, *sums, *times))
              .groupBy(*keys).agg(*[F.sum(c).alias(c) for c in sums], *[F.max(t).alias(t) for t in times]))
    return summed if latest is None else summed.filter(F.col(latest).isNotNull())
