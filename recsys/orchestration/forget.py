"""Forgetting users, end to end: one run erases everyone asked to be forgotten from every place
recsys keeps data about them.

Requests land in `bronze/forget_requests` (by pseudonymous key) from two places: every accounts
ingest (an account the source no longer has) and `jobs/forget.py --user-id ...` (a request that
arrived another way). A Delta stream over that table hands each batch of requests to `erase`
once (checkpoint `forget`). Each batch first records its users in `bronze/forgotten` by a one-way
token of their key (`keys.forget_token`: silver drops their later events and the accounts ingest
their account by it, and it names no one), then erases them, then deletes their requests. A
crash reruns the same batch, and every step is idempotent, so a rerun finishes what it left.

Every Delta commit of an erasure is a MERGE against a small table of ids or keys, never a DELETE
with literal values: the transaction log keeps each commit's condition, so values written there
would outlive the erasure. Tables are created without column statistics for the same reason
(`recsys.spark`: the log's min/max of a column would name users).

`erase`, in order (the landing files first: bronze's lineage is what finds them):
1. landing files that held a line of theirs are rewritten without those lines (moved in whole;
   a file left empty is deleted), and so is a file bronze could not read (`unreadable_file`) whose
   readable part held one. Bronze's streams have seen those files and never reread them;
2. bronze: their events, their quarantined lines (matched by the id in the raw text), their account
   and last extract;
3. silver: events (catalog counts recounted first), quarantine, users; PostgreSQL click events;
4. gold: the feature store is synced first, then every gold table with a `user_key` loses their
   rows, and both feature stores (PostgreSQL, Redis) their entries;
5. their lists in every published version Redis still holds (so `--rollback` cannot serve them);
6. MLflow: the id maps and ALS user factors of every logged model (`recsys.model.forget`);
7. VACUUM of every table it rewrote, with `lake.retention_hours` (the maintenance rule): once
   that retention has passed, no Delta file holds them. Time travel to any version from before
   the erasure is refused at once (`lake.read`), so `--silver-version` cannot replay them.

Landing files not yet ingested are not searched: forgetting runs after the ingest (as `refresh`
orders it), and silver drops events of forgotten users that arrive later.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import lake
from recsys.bronze.accounts import request_forget
from recsys.config import Config
from recsys.gold.store import forget_features, sync_feature_store
from recsys.keys import forget_token, pseudonym
from recsys.landing.zone import STAGING_DIR
from recsys.model.forget import forget_in_models
from recsys.orchestration.maintain import vacuum
from recsys.pii_scan import GZIP_MAGIC, SHAPES
from recsys.serving.store import forget_users
from recsys.silver.build import forget_events
from recsys.stores.redis import connect
from recsys.tables import (
    BRONZE_ACCOUNTS,
    BRONZE_ACCOUNTS_EXTRACT,
    BRONZE_EVENTS,
    BRONZE_EVENTS_QUARANTINE,
    BRONZE_FORGET_REQUESTS,
    BRONZE_FORGOTTEN,
    SILVER_EVENTS,
    TABLES,
    UNREADABLE,
    USER_ID,
    USER_KEY,
)

ID_IN_TEXT = "(?i)" + SHAPES["user_id"]  # the id in a raw line, also when it is not valid JSON
_ID_IN_TEXT = re.compile(SHAPES["user_id"], re.IGNORECASE)
_FORGET_TMP = ".forget."  # a landing file's staged copy: <name>.forget.<pid>.tmp


@dataclass
class Erasure:
    """What one erasure removed: rows per table, landing files, lists, model runs, vacuumed files."""

    users: int
    rows: dict[str, int] = field(default_factory=dict)
    landing_files: int = 0
    redis_lists: int = 0
    model_runs: int = 0
    vacuumed_files: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for whoever runs it at scale

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step of the erasure."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)

    def __str__(self) -> str:
        rows = sum(self.rows.values())
        return (f"{self.users} users forgotten: {rows} rows in {sum(1 for n in self.rows.values() if n)} tables, "
                f"{self.landing_files} landing files rewritten, {self.redis_lists} published lists, "
                f"{self.model_runs} logged models, {self.vacuumed_files} old files vacuumed")


def _raw_ids(spark: SparkSession, cfg: Config, keys: set[str]) -> list[str]:
    """The ids (as bronze trims them) whose pseudonym is in `keys`: every distinct id bronze holds is
    hashed on the driver, one per user, not per event.
    """
    secret = cfg.require_secret("privacy.pseudonym_secret")
    candidates = _bronze_ids(spark, cfg).distinct().collect()
    return sorted({r[0] for r in candidates if r[0] and pseudonym(secret, r[0]) in keys})


def _bronze_ids(spark: SparkSession, cfg: Config) -> DataFrame:
    ids = [lake.read(spark, t.path(cfg.lake)).select(F.trim(USER_ID).alias("id"))
           for t in (BRONZE_EVENTS, BRONZE_ACCOUNTS, BRONZE_ACCOUNTS_EXTRACT) if lake.exists(spark, t.path(cfg.lake))]
    quarantine = BRONZE_EVENTS_QUARANTINE.path(cfg.lake)
    if lake.exists(spark, quarantine):
        ids.append(lake.read(spark, quarantine).select(_quarantined_id().alias("id")))
    union = ids[0]
    for more in ids[1:]:
        union = union.unionByName(more)
    return union


def _quarantined_id(raw: str = "_raw") -> F.Column:
    return F.trim(F.regexp_extract(raw, ID_IN_TEXT, 1))


def landing_files(spark: SparkSession, cfg: Config, ids: list[str]) -> list[str]:
    """The landing files bronze's lineage says held a line of these users, and every landing file
    Spark could not read (quarantined whole: whose lines are in what is readable of it, nobody knows).
    """
    files: set[str] = set()
    unreadable = F.col("_reason") == UNREADABLE
    for table, found in ((BRONZE_EVENTS, F.trim(USER_ID).isin(ids)),
                         (BRONZE_EVENTS_QUARANTINE, _quarantined_id().isin(ids) | unreadable)):
        path = table.path(cfg.lake)
        if lake.exists(spark, path):
            rows = lake.read(spark, path).filter(found).select("_source_file").distinct().collect()
            files |= {r[0] for r in rows if r[0]}
    return sorted(files)


def _line_user(line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict) and event.get(USER_ID) is not None:
        return str(event[USER_ID]).strip(" ")
    found = _ID_IN_TEXT.search(line)
    return found.group(1).strip(" ") if found else None


def _gzipped(path: Path) -> bool:
    """Whether a landing file holds gzip data, by its first bytes: a producer may name plain text
    `.gz` (bronze quarantines it whole as unreadable, but its lines are there to forget).
    """
    with path.open("rb") as head:
        return head.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _open(path: Path, mode: str, compressed: bool) -> IO[str]:
    """A landing file as text, gzip-compressed or not."""
    opener: Callable[..., IO[str]] = gzip.open if compressed else open
    return opener(path, mode, encoding="utf-8", errors="surrogateescape")


def rewrite_landing_file(landing: str, uri: str, ids: set[str]) -> bool:
    """Rewrite one landing file without the lines of `ids` (staged, then moved over it; deleted when
    nothing is left); whether it changed. Only local landing zones can be rewritten.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"cannot rewrite landing file {uri}: forgetting rewrites local landing zones only")
    path = Path(unquote(parsed.path))
    if not path.exists():
        return False
    kept, dropped = [], 0
    compressed = _gzipped(path)  # and written back the same way, whatever the file's name says
    with _open(path, "rt", compressed) as lines:
        try:
            for line in lines:
                if _line_user(line) in ids:
                    dropped += 1
                else:
                    kept.append(line)
        except (EOFError, gzip.BadGzipFile, zlib.error):  # a truncated or corrupt .gz (`unreadable_file`):
            pass  # what is readable is all anyone can read of it; rewritten, it holds the rest of that
    if not dropped:
        return False
    if not kept:
        path.unlink()
        return True
    staging = _staging(landing)
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{path.name}{_FORGET_TMP}{os.getpid()}.tmp"
    with _open(tmp, "wt", compressed) as out:
        out.writelines(kept)
    tmp.replace(path)
    return True


def _staging(landing: str) -> Path:
    """Where `rewrite_landing_file` stages a landing file's copy before moving it over the file."""
    return Path(landing) / STAGING_DIR


def remove_stale_copies(landing: str) -> None:
    """Delete the staged copies a rewrite killed half way left (other users' lines, which nothing
    would find to erase later). The file each was a copy of is whole, or already replaced.
    """
    for copy in _staging(landing).glob(f"*{_FORGET_TMP}*.tmp"):
        copy.unlink(missing_ok=True)


def _keys_frame(spark: SparkSession, keys: list[str]) -> DataFrame:
    """A one-column DataFrame of user keys, the source of the erasure's MERGEs."""
    return spark.createDataFrame([(k,) for k in keys], f"{USER_KEY} string")


def _same_key() -> F.Column:
    """The MERGE condition: the table's row (`t`) is of a user in the source (`s`)."""
    return F.col(f"t.{USER_KEY}") == F.col(f"s.{USER_KEY}")


def _user_tables(layer: str) -> list[str]:
    return [t.qualified for t in TABLES.values() if t.layer == layer and USER_KEY in t.schema.fieldNames()
            and t != SILVER_EVENTS]


def erase(spark: SparkSession, cfg: Config, keys: list[str]) -> Erasure:
    """Forget the users with these pseudonymous keys everywhere (see the module's steps)."""
    done = Erasure(users=len(keys))
    if not keys:
        return done
    ids = _raw_ids(spark, cfg, set(keys))
    touched: list[str] = []
    gone = _keys_frame(spark, keys)
    raw = spark.createDataFrame([(i,) for i in ids], "id string")

    def delete(qualified: str, source: DataFrame, condition: F.Column) -> None:
        path = TABLES[qualified].path(cfg.lake)
        if lake.exists(spark, path):
            done.rows[qualified] = lake.delete_matching(spark, path, source, condition)
            touched.append(path)

    remove_stale_copies(cfg.landing.path)
    if ids:
        with done.step("landing"):
            done.landing_files = sum(rewrite_landing_file(cfg.landing.path, uri, set(ids))
                                     for uri in landing_files(spark, cfg, ids))
    if lake.exists(spark, TABLES["gold/user_features"].path(cfg.lake)):
        with done.step("feature store sync"):
            sync_feature_store(spark, cfg, stage_suffix="forget")  # the stores hold gold's state before the erasure
    with lake.erasure(spark):
        with done.step("bronze"):
            for table in (BRONZE_EVENTS, BRONZE_ACCOUNTS, BRONZE_ACCOUNTS_EXTRACT):
                delete(table.qualified, raw, F.trim(F.col(f"t.{USER_ID}")) == F.col("s.id"))
            delete(BRONZE_EVENTS_QUARANTINE.qualified, raw, _quarantined_id("t._raw") == F.col("s.id"))
        events_path = SILVER_EVENTS.path(cfg.lake)
        with done.step("silver"):
            if lake.exists(spark, events_path):
                done.rows[SILVER_EVENTS.qualified] = forget_events(spark, cfg, gone)
                touched.extend([events_path, TABLES["silver/catalog_values"].path(cfg.lake)])
            for qualified in _user_tables("silver"):
                delete(qualified, gone, _same_key())
        with done.step("gold"):
            for qualified in _user_tables("gold"):
                delete(qualified, gone, _same_key())
    with done.step("stores"):
        forget_features(cfg, keys)
        client = connect(cfg.redis)
        try:
            done.redis_lists = forget_users(client, cfg.publish.prefix, keys)
        finally:
            client.close()
    with done.step("mlflow"):
        done.model_runs = forget_in_models(spark, cfg, set(keys))
    with done.step("vacuum"):
        done.vacuumed_files = sum(vacuum(spark, cfg, sorted(set(touched))).values())
    return done


def adopt_old_deletions(spark: SparkSession, cfg: Config) -> int:
    """Lakes from before `bronze/forget_requests` logged deleted accounts by raw id in
    `bronze/account_deletions`: turn those into requests, then delete that table (it holds PII);
    how many ids were adopted.
    """
    old = f"{cfg.lake.root.rstrip('/')}/bronze/account_deletions"
    if not lake.exists(spark, old):
        return 0
    ids = [r[0] for r in lake.read(spark, old).select(USER_ID).collect() if r[0]]
    request_forget(spark, cfg, ids, "deleted at the source", "adopted")
    lake.delete_path(spark, old)
    lake.delete_path(spark, lake.checkpoint_path(cfg.lake, "silver_forget"))  # the stream that read it
    return len(ids)


def forget_requested(spark: SparkSession, cfg: Config, on_erasure: Callable[[Erasure], None] | None = None) -> int:
    """Erase every user asked to be forgotten since the last run (each request once); how many."""
    adopt_old_deletions(spark, cfg)
    requests = BRONZE_FORGET_REQUESTS.path(cfg.lake)
    lake.ensure_table(spark, requests)
    seen = [0]

    forgotten = BRONZE_FORGOTTEN.path(cfg.lake)
    lake.ensure_table(spark, forgotten)

    def erase_batch(batch: DataFrame, _: int) -> None:
        requested = batch.select(USER_KEY, "source").distinct().collect()  # requests: few by nature
        keys = sorted({r[0] for r in requested})
        if not keys:
            return
        seen[0] += len(keys)
        tokens = [(forget_token(r[0]), datetime.now(UTC), r[1]) for r in requested]
        lake.upsert(spark.createDataFrame(tokens, BRONZE_FORGOTTEN.schema).dropDuplicates(["token"]), forgotten,
                    keys=("token",))  # first: silver keeps dropping their events whatever happens next
        report = erase(spark, cfg, keys)
        with lake.erasure(spark):  # the requests named them: erased last, so a crash before reruns the batch
            lake.delete_matching(spark, requests, _keys_frame(spark, keys), _same_key())
        if on_erasure is not None:
            on_erasure(report)

    (spark.readStream.format("delta").option("skipChangeCommits", "true").load(requests)
     .writeStream.foreachBatch(erase_batch)
     .option("checkpointLocation", lake.checkpoint_path(cfg.lake, "forget"))
     .trigger(availableNow=True).start().awaitTermination())
    # Only once every batch is committed: a batch a crash left uncommitted is read again from the
    # files its requests were appended in, which the DELETE above removed from the table but a VACUUM
    # with a short `lake.retention_hours` would remove from the disk (the stream could never run again).
    # A run with nothing to erase leaves the table to `make maintain`.
    if seen[0]:
        vacuum(spark, cfg, [requests])
    return seen[0]


def forget(spark: SparkSession, cfg: Config, user_ids: list[str], run_id: str,
           on_erasure: Callable[[Erasure], None] | None = None) -> int:
    """Request forgetting `user_ids`, then erase every pending request (theirs included); how many users."""
    request_forget(spark, cfg, user_ids, "request", run_id)
    return forget_requested(spark, cfg, on_erasure)
