"""A buffered, thread-safe producer of landing-zone files for services (the API's impressions
and posted events).

Callers only append lines to memory (`add`, never blocking on the disk); a writer thread moves
them into one landing file, written in whole, when `max_lines` are waiting or `flush_s` seconds
have passed, and `close()` writes what is left. A write that fails (the landing zone briefly
unwritable) keeps its lines and is retried, with a backoff up to `flush_s`; meanwhile the buffer
holds at most `max_buffered` lines, and lines past that are dropped, counted (`dropped`) and
logged: memory stays bounded, and no loss is silent. A SIGKILL loses what is buffered: normally
at most `flush_s` seconds or `max_lines` lines of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from recsys.landing.zone import write_file

log = logging.getLogger(__name__)


def json_line(event: dict[str, Any]) -> str:
    """One event as a compact JSON line (no spaces, UTF-8 kept)."""
    return orjson.dumps(event).decode()


class LandingWriter:
    """Appends events to the landing zone in files of at most `max_lines`, at least every `flush_s` seconds."""

    def __init__(self, landing: str | Path, max_lines: int = 500, flush_s: float = 5.0, max_buffered: int = 100_000,
                 on_written: Callable[[int], None] | None = None, on_dropped: Callable[[int], None] | None = None):
        self.landing, self.max_lines, self.flush_s, self.max_buffered = landing, max_lines, flush_s, max_buffered
        self.on_written, self.on_dropped = on_written, on_dropped
        self.written = self.dropped = self.failed_writes = 0
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one file at a time: files keep their order
        self._closing = False
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def add(self, events: Iterable[dict[str, Any]]) -> int:
        """Queue events; how many were accepted (the rest dropped: the buffer was full)."""
        return self.add_lines([json_line(e) for e in events])

    def add_lines(self, lines: list[str]) -> int:
        """Queue JSON lines; how many were accepted (the rest dropped: the buffer was full)."""
        with self._cond:
            room = max(self.max_buffered - len(self._lines) - self._in_flight, 0)
            accepted = lines if len(lines) <= room else lines[:room]
            self._lines.extend(accepted)
            if len(self._lines) >= self.max_lines:
                self._cond.notify()
        lost = len(lines) - len(accepted)
        if lost:
            self._drop(lost, "the buffer is full (landing.max_buffered lines wait for a write)")
        return len(accepted)

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        if self.on_dropped is not None:
            self.on_dropped(n)
        log.error("landing writer dropped %d lines: %s", n, why)

    def waiting(self) -> int:
        """Lines in memory, not yet in a file (a write in progress included)."""
        with self._cond:
            return len(self._lines) + self._in_flight

    def flush(self) -> Path | None:
        """Write what is waiting as one landing file now; the file, or None when nothing waited.
        On failure the lines go back to the front of the buffer and the error is raised.
        """
        with self._write_lock:
            with self._cond:
                lines, self._lines = self._lines, []
                self._in_flight = len(lines)
            if not lines:
                return None
            try:
                path = write_file(self.landing, datetime.now(UTC), lines)
            except OSError:
                with self._cond:
                    self._lines[:0] = lines
                    self._in_flight = 0
                self.failed_writes += 1
                raise
            with self._cond:
                self._in_flight = 0
        self.written += len(lines)
        if self.on_written is not None:
            self.on_written(len(lines))
        return path

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if not self._closing and (backoff or len(self._lines) < self.max_lines):
                    self._cond.wait(timeout=backoff or self.flush_s)  # after a failure, wait even when full
                if self._closing:
                    return
            try:
                self.flush()
                backoff = 0.0
            except OSError as err:
                backoff = min(max(backoff * 2, 0.05), self.flush_s)
                log.warning("landing writer could not write (%s); retrying in %.2f s", type(err).__name__, backoff)

    def close(self, attempts: int = 5) -> None:
        """Stop the thread and write what is left, retrying a failing write a few times; lines that
        still cannot be written are counted as dropped.
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout=self.flush_s + 1)
        for attempt in range(attempts):
            try:
                self.flush()
                return
            except OSError:
                time.sleep(0.05 * 2 ** attempt)
        with self._cond:
            lost, self._lines = len(self._lines), []
        if lost:
            self._drop(lost, "the landing zone stayed unwritable at shutdown")
