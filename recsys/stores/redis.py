"""Redis: one client factory (connection failures name the server's host:port), and the one sink
every Spark job writes Redis through: `load_hashes`, hashes loaded from the executors.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from recsys.config import RedisConfig
from recsys.endpoints import Endpoint, ServiceUnavailable

if TYPE_CHECKING:  # the API imports this module and must not load pyspark
    from pyspark.sql import DataFrame


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client for the configured server and db, checked with a PING."""
    client = redis.Redis.from_url(
        cfg.url,
        db=cfg.db,
        password=cfg.password or None,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
    )
    try:
        client.ping()
    except redis.ConnectionError as err:
        pool = client.connection_pool.connection_kwargs
        endpoint = Endpoint("Redis", pool.get("host", "?"), pool.get("port", 0))
        raise ServiceUnavailable(f"{endpoint} is not reachable ({type(err).__name__})") from err
    return client


def async_client(cfg: RedisConfig, timeout_s: float, max_connections: int = 64) -> redis.asyncio.Redis:
    """An asyncio client (for the API) whose every call gives up after `timeout_s`; it connects on
    first use and reconnects by itself after Redis comes back.
    """
    # One retry, at once, on a broken connection (a Redis that restarted): the pool's old sockets are
    # dead, a new one answers. Timeouts are not retried: the caller's deadline is the timeout.
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    # A request waits (up to the timeout) for one of `max_connections` sockets rather than failing
    # at once when all are busy: measured 1,363 of 18,239 requests refused at 128 connections without.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        cfg.url, db=cfg.db, password=cfg.password or None, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, retry=retry, max_connections=max_connections, timeout=timeout_s)
    return redis.asyncio.Redis.from_pool(pool)


def text(reply: bytes | str | None) -> str | None:
    """A reply as text: the clients here return bytes (no `decode_responses`), so values pass through binary."""
    return reply.decode() if isinstance(reply, bytes) else reply


def texts(replies: Iterable[bytes | str]) -> list[str]:
    """Replies that cannot be nil (list members, hash fields) as text."""
    return [r.decode() if isinstance(r, bytes) else r for r in replies]


# ---------------------------------------------------------------- bulk loading from Spark
#
class HashLoader:
    """Loads (hash key, encoded field-value pairs) runs as multi-field HSETs on one connection.

    `load(keys, pairs)` takes two aligned Arrow arrays: the hash key of each row (string) and the
    row's field and value as two RESP bulk strings (`bulk_strings`, binary). Rows with the same
    key should be adjacent (sort them in Spark): each run becomes one HSET whose arguments are a
    zero-copy slice of Arrow's data buffer. Up to `batch_size` fields go per round trip; a Redis
    error (wrong key type, out of memory) raises `redis.ResponseError`.

    With `replace`, each key is deleted before its first fields, so the hash holds exactly the
    loaded fields (all of a key's rows must then reach one loader, adjacent); with `ttl_s`, each
    key expires that many seconds after it is written.
    """

    def __init__(self, client: redis.Redis, key_prefix: str, batch_size: int, *, replace: bool = False,
                 ttl_s: int | None = None):
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        self.key_prefix, self.batch_size = key_prefix, batch_size
        self.replace, self.ttl_s = replace, ttl_s
        self.last_key: bytes | None = None  # the key of the previous run, which may go on in the next batch
        self.parts: list[bytes | memoryview] = []
        self.commands = self.fields = 0   # pending in the current round trip
        self.counted: list[bool] = []     # per pending command: is it an HSET whose reply counts new fields
        self.in_flight: list[bool] = []   # the same for commands sent whose replies are unread
        self.added = 0                    # new fields Redis reported
        self.first_sent = self.last_reply = 0.0  # epoch seconds: when this loader wrote

    def load(self, keys: pa.Array, pairs: pa.Array) -> None:
        """Send HSETs of (key, field, value) rows, pipelined; raise on any error reply."""
        if pairs.null_count:
            raise ValueError(f"{pairs.null_count} rows without a field-value pair")
        n = len(keys)
        if n == 0:
            return
        changes = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        bounds = [0, *(np.flatnonzero(changes) + 1).tolist(), n]
        _, offset_buffer, data_buffer = pairs.buffers()
        width = np.int64 if pa.types.is_large_binary(pairs.type) else np.int32
        offsets = np.frombuffer(offset_buffer, dtype=width)[pairs.offset:pairs.offset + n + 1]
        data = memoryview(data_buffer)
        for start, end in itertools.pairwise(bounds):
            key = (self.key_prefix + keys[start].as_py()).encode()
            if self.replace and key != self.last_key:
                self._command(b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(key), key))
            for a in range(start, end, self.batch_size):
                b = min(end, a + self.batch_size)
                self._command(b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 + 2 * (b - a), len(key), key),
                              data[offsets[a]:offsets[b]], fields=b - a)
            if self.ttl_s is not None:
                ttl = str(self.ttl_s).encode()
                self._command(b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(ttl), ttl))
            self.last_key = key

    def _command(self, head: bytes, body: memoryview | None = None, fields: int = 0) -> None:
        self.parts += [head] if body is None else [head, body]
        self.counted.append(fields > 0)
        self.commands += 1
        self.fields += max(fields, 1)
        if self.fields >= self.batch_size:
            self._round_trip()

    def _round_trip(self) -> None:
        """Sends the pending commands, then reads the replies of the round before: one round is
        always in flight, so Redis works on it while this process prepares the next.
        """
        if self.commands:
            self.first_sent = self.first_sent or time.time()
            self.conn.send_packed_command(self.parts, check_health=False)
        self._replies(self.in_flight)
        self.in_flight, self.counted = self.counted, []
        self.parts, self.commands, self.fields = [], 0, 0

    def _replies(self, counted: list[bool]) -> None:
        for is_hset in counted:
            reply = self.conn.read_response()
            self.added += reply if is_hset else 0

    def close(self) -> int:
        """Sends what is pending and waits for every reply; returns the number of new fields."""
        self._round_trip()
        self._replies(self.in_flight)
        self.in_flight = []
        self.last_reply = time.time()
        self.pool.release(self.conn)
        return self.added


LOAD_SCHEMA = "added long, first_sent double, last_reply double"


def per_core(entries: DataFrame) -> DataFrame:
    """`entries` in one partition per core, without a shuffle: a write task costs ~0.1 s to set up,
    more than writing 10,000 entries.
    """
    return entries.coalesce(entries.sparkSession.sparkContext.defaultParallelism)


def by_hash(entries: DataFrame) -> DataFrame:
    """`entries` laid out as `load_hashes(replace=True)` needs them: one partition per core, and
    each hash's rows adjacent within its partition.
    """
    return per_core(entries).sortWithinPartitions("hash")


def load_hashes(entries: DataFrame, cfg: RedisConfig, key_prefix: str, batch_size: int, *,
                replace: bool = False, ttl_s: int | None = None) -> DataFrame:
    """Load `entries` (`hash` string, `entry` binary from `resp.bulk_strings(field, value)`) into Redis.

    Lazy: one row per partition (`LOAD_SCHEMA`: new fields, when the partition's loader first sent
    and last heard back) once an action runs it. Each Arrow batch is grouped by hash before it is
    sent, so rows need no order; with `replace`, all rows of a hash must share a partition and be
    adjacent (`by_hash`), since a hash is deleted before its first run.
    """
    return entries.select("hash", "entry").mapInArrow(
        _partition_loader(cfg, key_prefix, batch_size, replace, ttl_s), LOAD_SCHEMA)


def _partition_loader(cfg: RedisConfig, key_prefix: str, batch_size: int, replace: bool,
                      ttl_s: int | None) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def load_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = connect(cfg)
        loader = HashLoader(client, key_prefix, batch_size, replace=replace, ttl_s=ttl_s)
        for batch in batches:
            # each batch's rows grouped by hash here, so that Spark need not sort them
            rows = batch if replace else batch.take(pc.sort_indices(batch.column("hash")))
            loader.load(rows.column("hash"), rows.column("entry"))
        added = loader.close()
        client.close()
        yield pa.RecordBatch.from_pydict({"added": [added], "first_sent": [loader.first_sent],
                                          "last_reply": [loader.last_reply]})

    return load_partition
