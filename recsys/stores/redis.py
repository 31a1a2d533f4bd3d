"""Redis: one client factory (connection failures name the server's host:port), and bulk loading
from Spark executors.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from recsys.config import RedisConfig
from recsys.endpoints import Endpoint, ServiceUnavailable


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


# ---------------------------------------------------------------- bulk loading from Spark
#
class HashLoader:
    """Loads (hash key, encoded field-value pairs) runs as multi-field HSETs on one connection.

    `load(keys, pairs)` takes two aligned Arrow arrays: the hash key of each row (string) and the
    row's field and value as two RESP bulk strings (`bulk_strings`, binary). Rows with the same
    key should be adjacent (sort them in Spark): each run becomes one HSET whose arguments are a
    zero-copy slice of Arrow's data buffer. Up to `batch_size` fields go per round trip; a Redis
    error (wrong key type, out of memory) raises `redis.ResponseError`.
    """

    def __init__(self, client: redis.Redis, key_prefix: str, batch_size: int):
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        self.key_prefix, self.batch_size = key_prefix, batch_size
        self.parts: list[bytes | memoryview] = []
        self.commands = self.fields = 0   # pending in the current round trip
        self.in_flight = 0                # commands sent whose replies are unread
        self.added = 0                    # new fields Redis reported
        self.first_sent = self.last_reply = 0.0  # epoch seconds: when this loader wrote

    def load(self, keys: pa.Array, pairs: pa.Array) -> None:
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
            for a in range(start, end, self.batch_size):
                b = min(end, a + self.batch_size)
                self.parts += [b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n" % (2 + 2 * (b - a), len(key), key),
                               data[offsets[a]:offsets[b]]]
                self.commands += 1
                self.fields += b - a
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
        self.in_flight = self.commands
        self.parts, self.commands, self.fields = [], 0, 0

    def _replies(self, count: int) -> None:
        self.added += sum(self.conn.read_response() for _ in range(count))

    def close(self) -> int:
        """Sends what is pending and waits for every reply; returns the number of new fields."""
        self._round_trip()
        self._replies(self.in_flight)
        self.in_flight = 0
        self.last_reply = time.time()
        self.pool.release(self.conn)
        return self.added
