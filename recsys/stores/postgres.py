"""PostgreSQL: psycopg2 for DDL and small admin work, JDBC for everything Spark reads or writes."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys.config import PostgresConfig
from recsys.endpoints import Endpoint, ServiceUnavailable

JDBC_DRIVER = "org.postgresql.Driver"


@contextmanager
def connect(
    cfg: PostgresConfig, database: str | None = None, *, autocommit: bool = False
) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection that commits on success (or autocommits) and always closes."""
    try:
        conn = psycopg2.connect(
            host=cfg.host,
            port=cfg.port,
            dbname=database or cfg.database,
            user=cfg.user,
            password=cfg.password or None,
            connect_timeout=cfg.connect_timeout_s,
            application_name="recsys",
        )
    except psycopg2.OperationalError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ServiceUnavailable(f"{Endpoint('PostgreSQL', cfg.host, cfg.port)}: {first_line}") from err
    try:
        if autocommit:
            conn.autocommit = True
            yield conn
        else:
            with conn:
                yield conn
    finally:
        conn.close()


def ensure_database(cfg: PostgresConfig) -> None:
    """Create the configured database when it does not exist (needs CREATEDB on the server)."""
    with connect(cfg, database="postgres", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.database,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.database)))


def drop_database(cfg: PostgresConfig) -> None:
    """Drop the configured database with everything in it, if it exists (scratch databases)."""
    with connect(cfg, database="postgres", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.database)))


def fresh_database(cfg: PostgresConfig) -> None:
    """Drop the configured database with everything in it, and create it empty (for scratch
    databases: tests, benchmarks).
    """
    drop_database(cfg)
    ensure_database(cfg)


def execute(cfg: PostgresConfig, statement: str, params: Sequence | None = None) -> None:
    """Run one statement (DDL, small admin work) in its own transaction."""
    with connect(cfg) as conn, conn.cursor() as cur:
        cur.execute(statement, params)


def tables(cfg: PostgresConfig) -> list[str]:
    """The names of the ordinary tables in the database's `public` schema."""
    with connect(cfg) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name")
        return [row[0] for row in cur.fetchall()]


def delete_keys(cfg: PostgresConfig, table: str, column: str, keys: Sequence[str]) -> int:
    """DELETE the rows whose `column` is one of `keys`, when `table` exists; how many went."""
    if not keys or table not in tables(cfg):
        return 0
    with connect(cfg) as conn, conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (list(keys),))  # noqa: S608 (names are ours)
        return cur.rowcount


def jdbc_url(cfg: PostgresConfig) -> str:
    """The JDBC URL of the configured database."""
    return f"jdbc:postgresql://{cfg.host}:{cfg.port}/{cfg.database}"


def jdbc_properties(cfg: PostgresConfig) -> dict[str, str]:
    """Connection properties for Spark's JDBC source; the password only from config (env)."""
    props = {"user": cfg.user, "driver": JDBC_DRIVER}
    if cfg.password:
        props["password"] = cfg.password
    return props


def read_jdbc(
    spark: SparkSession,
    cfg: PostgresConfig,
    table: str,
    *,
    predicates: Sequence[str] | None = None,
    fetch_size: int = 10_000,
) -> DataFrame:
    """Read a table (or a `(SELECT ...) AS t` subquery); one partition per predicate.

    Predicates split any key, text ones too (e.g. `mod(abs(hashtext(user_id)), 8) = 3`), where
    Spark's numeric `partitionColumn` bounds would not.
    """
    props = {**jdbc_properties(cfg), "fetchsize": str(fetch_size)}
    if predicates:
        return spark.read.jdbc(jdbc_url(cfg), table, predicates=list(predicates), properties=props)
    return spark.read.jdbc(jdbc_url(cfg), table, properties=props)


def hash_predicates(column: str, partitions: int) -> list[str]:
    """`partitions` disjoint predicates covering every row (NULL keys go to the first)."""
    bucket = f"mod(abs(hashtext({column}::text)::bigint), {partitions})"
    predicates = [f"{bucket} = {i}" for i in range(partitions)]
    predicates[0] = f"({predicates[0]} OR {column} IS NULL)"
    return predicates


def write_jdbc(df: DataFrame, cfg: PostgresConfig, table: str, mode: str = "append") -> None:
    """Write a DataFrame to a PostgreSQL table over JDBC in batched inserts."""
    props = {**jdbc_properties(cfg), "batchsize": "5000", "reWriteBatchedInserts": "true"}
    df.write.jdbc(jdbc_url(cfg), table, mode=mode, properties=props)


def stage_name(table: str, suffix: str) -> str:
    """The staging table of one load into `table`: `<table>_stage_<suffix>`, every character of
    `suffix` that is not a letter, digit or underscore (a run id's `-`, say) made `_`.
    """
    return f"{table}_stage_{re.sub(r'[^A-Za-z0-9_]', '_', suffix)}"


@contextmanager
def staged(rows: DataFrame, cfg: PostgresConfig, table: str, suffix: str,
           json_columns: Collection[str] = ()) -> Iterator[str]:
    """Load `rows` over JDBC into a staging table for `table` (`stage_name`; `json_columns` as JSON
    text) and yield the query that reads them back, those columns cast to jsonb, for the one SQL
    statement that moves them. The stage is dropped on leaving, whether that statement succeeded
    or not.
    """
    stage = stage_name(table, suffix)
    write_jdbc(rows.select(*[F.to_json(c).alias(c) if c in json_columns else c for c in rows.columns]),
               cfg, stage, mode="overwrite")
    try:
        columns = ", ".join(f"{c}::jsonb" if c in json_columns else c for c in rows.columns)
        yield f"SELECT {columns} FROM {stage}"
    finally:
        execute(cfg, f"DROP TABLE IF EXISTS {stage}")
