"""Cleaned events into PostgreSQL `click_events`: pseudonymous, appended idempotently.

Each batch lands in a staging table over JDBC, then one `INSERT ... ON CONFLICT (event_id)
DO NOTHING` moves it, so a replayed batch adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame

from recsys.config import PostgresConfig
from recsys.stores.postgres import connect, delete_keys, staged
from recsys.tables import ARTIST_ID, EVENT_ID, EVENT_TIME, EVENT_TYPE, TRACK_ID, USER_KEY

TABLE = "click_events"
COLUMNS = (EVENT_ID, EVENT_TYPE, EVENT_TIME, USER_KEY, "count", ARTIST_ID, TRACK_ID, "completion",
           "request_id", "model_version", "variant", "position", "score", "source")
DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id text PRIMARY KEY,
    event_type text NOT NULL,
    event_time timestamptz NOT NULL,
    user_key text NOT NULL,
    count bigint NOT NULL,
    artist_id text,
    track_id text,
    completion text,
    request_id text,
    model_version text,
    variant text,
    position bigint,
    score double precision,
    source text,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {TABLE}_user_time ON {TABLE} (user_key, event_time);
"""


def ensure_click_events(cfg: PostgresConfig) -> None:
    """Create the PostgreSQL `click_events` table if missing."""
    with connect(cfg) as conn, conn.cursor() as cur:
        cur.execute(DDL)


def append_click_events(events: DataFrame, cfg: PostgresConfig, stage_suffix: str) -> None:
    """Append click events to PostgreSQL through a staging table; an event already there is skipped."""
    with staged(events.select(*COLUMNS), cfg, TABLE, stage_suffix) as rows, connect(cfg) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) {rows} ON CONFLICT (event_id) DO NOTHING")


def delete_users(cfg: PostgresConfig, user_keys: Iterable[str]) -> int:
    """Delete the given users' click events (when the table exists); how many rows went."""
    return delete_keys(cfg, TABLE, "user_key", list(user_keys))
