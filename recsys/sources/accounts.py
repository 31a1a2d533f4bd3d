"""The `accounts` table (DDL from the contract's `accounts.sql`) and its loader.

`upsert_accounts` is the one way rows get in: the generator, the Last.fm importer and
`jobs/load_accounts.py --csv FILE` all use it. An upsert by `user_id` moves `updated_at`, as the
account service does, so incremental extracts see the change.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from psycopg2.extras import execute_values

from recsys.config import PostgresConfig
from recsys.stores.postgres import connect

TABLE = "accounts"
COLUMNS = (
    "user_id", "full_name", "email", "date_of_birth", "gender",
    "latitude", "longitude", "country_code", "signup_at",
)
_NULLABLE_NUMBERS = {"latitude", "longitude"}


def accounts_ddl() -> str:
    """The contract's `accounts` DDL, as shipped with the package."""
    return resources.files("recsys.sources").joinpath("accounts.sql").read_text(encoding="utf-8")


def ensure_accounts_table(cfg: PostgresConfig) -> None:
    """Create the `accounts` table if missing."""
    with connect(cfg) as conn, conn.cursor() as cur:
        cur.execute(accounts_ddl())


def upsert_accounts(cfg: PostgresConfig, rows: Iterable[Mapping[str, Any]], batch_size: int = 5_000) -> int:
    """Insert or update accounts by `user_id`; returns how many rows were written.

    Rows are mappings with the `COLUMNS` keys (missing ones are NULL); `updated_at` is set by
    the database clock.
    """
    ensure_accounts_table(cfg)
    columns = ", ".join(COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "user_id")
    statement = (
        f"INSERT INTO {TABLE} ({columns}, updated_at) VALUES %s "
        f"ON CONFLICT (user_id) DO UPDATE SET {updates}, updated_at = now()"
    )
    template = "(" + ", ".join(["%s"] * len(COLUMNS)) + ", now())"
    written = 0
    with connect(cfg) as conn, conn.cursor() as cur:
        for batch in _batches(rows, batch_size):
            values = [tuple(_value(row, c) for c in COLUMNS) for row in batch]
            execute_values(cur, statement, values, template=template, page_size=batch_size)
            written += len(values)
    return written


def _value(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    if value == "" or value is None:
        return None
    if column in _NULLABLE_NUMBERS:
        return float(value)
    if column == "user_id":
        return str(value)
    return value


def _batches(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_accounts_csv(path: str | Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV with a header naming `accounts.sql` columns; fails on unknown columns."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = sorted(set(header) - set(COLUMNS) - {"updated_at"})
        if unknown or "user_id" not in header or "signup_at" not in header:
            raise ValueError(
                f"{path}: header must name accounts columns including user_id and signup_at; "
                f"unknown: {unknown}"
            )
        for line_no, row in enumerate(reader, start=2):
            if not row.get("user_id") or not row.get("signup_at"):
                raise ValueError(f"{path}:{line_no}: user_id and signup_at are required")
            yield row
