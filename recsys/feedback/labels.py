"""`gold/feedback` kept current from what silver added since the labelling before, not rebuilt.

Each impression is labelled once it reaches silver, with the re-ranker's features as gold holds
them at that labelling, and kept: later runs only change its label, when a click for it arrives
(clicks can land after their impression, in another file or another day). The features can hold
what happened until that first run, but a rerun no longer rewrites old impressions with
everything that happened since (as rebuilding the table from all of silver did, showing the
re-ranker more of what followed each click). A run's cost follows what silver added:

1. The run before recorded, in its commit's user metadata, the `silver/events` version it read
   and the newest `_silver_at` in it. If silver only had rows appended since (checked as gold
   checks it, `recsys.gold.changes.appended_since`) and `gold/feedback` was not written by
   anything else since (compactions aside), the new rows are those with a later `_silver_at`.
2. The impressions the new impressions and clicks touch (same user, artist and request) are
   labelled again from silver, reading only the dates a click can reach them from
   (`feedback.attribution_window_s` after, `feedback.clock_skew_s` before).
3. One MERGE by `event_id`: a new impression is inserted with its features, a known one gets its
   new label and keeps its features. The commit records what was read, so a crash before it
   leaves the run to be done again and a crash after leaves nothing to do.

Otherwise (the first run, an erasure or another rewrite since), every impression of silver is
labelled again in the same MERGE, which also deletes the rows silver no longer has; the rows
already there still keep their features. The labels equal labelling all of silver at once in
either case (`tests/test_feedback.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.config import Config
from recsys.feedback.attribution import attribute
from recsys.gold.changes import appended_since, newest_written
from recsys.model.rerank import with_ranker_features
from recsys.tables import ARTIST_ID, EVENT_DATE, EVENT_ID, EVENT_TYPE, GOLD_FEEDBACK, SILVER_AT, SILVER_EVENTS, USER_KEY

_READ = "recsys:feedback-read "  # the prefix of a labelling commit's user metadata
_REQUEST = (USER_KEY, ARTIST_ID, "request_id")  # what ties a click to its impression
_SAME_ROWS = ("OPTIMIZE", "VACUUM START", "VACUUM END")  # compactions and their clean-up


@dataclass(frozen=True)
class Labelling:
    """What one run did to `gold/feedback`: impressions inserted, labels changed, rows deleted, and
    why every impression was labelled again (None: only those silver's new rows touch).
    """
    inserted: int
    relabelled: int
    deleted: int
    full_because: str | None


def _recorded(spark: SparkSession, path: str) -> tuple[int, datetime] | str:
    """The silver version and newest `_silver_at` the labelling before read, or why there is none
    to start from: no labelling recorded, or a commit since that was not a compaction.
    """
    history = DeltaTable.forPath(spark, path).history().select("version", "operation", "userMetadata")
    ours = history.filter(F.col("userMetadata").startswith(_READ)).orderBy(F.desc("version")).first()
    if ours is None:
        return "no labelling before it recorded what it read"
    since = history.filter((F.col("version") > ours["version"]) & ~F.col("operation").isin(*_SAME_ROWS))
    other = since.orderBy("version").first()
    if other is not None:
        return f"gold/feedback version {other['version']} is a {other['operation']} by another job"
    read = json.loads(ours["userMetadata"].removeprefix(_READ))
    if read["silver_at"] is None:
        return "the labelling before read no events"
    return int(read["silver_version"]), datetime.fromisoformat(read["silver_at"])


def _touched(feedback_events: DataFrame, new: DataFrame, reach: timedelta) -> tuple[DataFrame, tuple[date, date]]:
    """The impressions and clicks of the requests that `new` (impressions and clicks) touch, and the
    dates whose impressions they label: those within `reach` of the new rows' dates (their clicks
    within twice that, so only those dates are read).
    """
    first, last = new.agg(F.min(EVENT_DATE), F.max(EVENT_DATE)).collect()[0]
    # The keys under names of their own: both sides of the join come from the same read of silver.
    keys = new.select(*(F.col(c).alias(f"_new_{c}") for c in _REQUEST)).distinct()
    nearby = feedback_events.filter(F.col(EVENT_DATE).between(first - 2 * reach, last + 2 * reach))
    same = [F.col(c).eqNullSafe(F.col(f"_new_{c}")) for c in _REQUEST]
    requested = nearby.join(keys, on=same[0] & same[1] & same[2], how="left_semi")
    return requested, (first - reach, last + reach)


def label_impressions(spark: SparkSession, cfg: Config) -> Labelling:
    """Bring `gold/feedback` up to the current `silver/events` (see the module's docstring)."""
    f = cfg.feedback
    silver, out = SILVER_EVENTS.path(cfg.lake), GOLD_FEEDBACK.path(cfg.lake)
    lake.ensure_table(spark, out)
    version = lake.current_version(spark, silver)
    events = lake.read(spark, silver, version=version)
    recorded = _recorded(spark, out)
    reason = recorded if isinstance(recorded, str) else None
    if reason is None:
        reason, n_new, newest = appended_since(silver, events, version, *recorded)
    feedback_events = events.filter(F.col(EVENT_TYPE).isin("impression", "click"))
    if reason is None:
        if n_new == 0:
            return Labelling(0, 0, 0, None)
        new = feedback_events.filter(F.col(SILVER_AT) > F.lit(recorded[1]))
        if new.isEmpty():
            return Labelling(0, 0, 0, None)  # nothing for feedback: the next run starts from the same record
        reach = timedelta(days=1 + (f.attribution_window_s + f.clock_skew_s) // 86_400)
        requested, (first, last) = _touched(feedback_events, new, reach)
        labelled = attribute(requested, f.attribution_window_s, f.clock_skew_s) \
            .filter(F.col(EVENT_DATE).between(first, last))
    else:
        newest = newest_written(events)
        labelled = attribute(feedback_events, f.attribution_window_s, f.clock_skew_s)
    return _merge(spark, cfg, labelled, out, version, newest, reason)


def _merge(spark: SparkSession, cfg: Config, labelled: DataFrame, out: str, version: int,
           newest: datetime | None, full_because: str | None) -> Labelling:
    gold = {t: lake.read(spark, lake.table_path(cfg.lake, "gold", t)) for t in ("artist_stats", "user_features")}
    source = lake.conform(with_ranker_features(labelled, gold["artist_stats"], gold["user_features"]), out)
    label = "NOT (t.clicked <=> s.clicked AND t.clicked_at <=> s.clicked_at)"
    merge = (DeltaTable.forPath(spark, out).alias("t").merge(source.alias("s"), f"t.{EVENT_ID} = s.{EVENT_ID}")
             .whenMatchedUpdate(condition=label, set={"clicked": "s.clicked", "clicked_at": "s.clicked_at"})
             .whenNotMatchedInsertAll())
    if full_because is not None:
        merge = merge.whenNotMatchedBySourceDelete()
    before = lake.current_version(spark, out)
    read = {"silver_version": version, "silver_at": newest.isoformat() if newest else None}
    with lake.committed_as(spark, _READ + json.dumps(read)):
        merge.execute()
    done = lake.metrics_since(spark, out, before)
    return Labelling(done.get("numTargetRowsInserted", 0), done.get("numTargetRowsUpdated", 0),
                     done.get("numTargetRowsDeleted", 0), full_because)
