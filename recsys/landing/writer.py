"""A buffered, thread-safe producer of landing-zone files for services (the API's impressions
and posted events): lines collect in memory and go out as one file, moved in whole, when
`max_lines` are waiting or `flush_s` seconds have passed, and on `close()`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.landing.zone import write_file


class LandingWriter:
    """Appends events to the landing zone in files of at most `max_lines`, at least every `flush_s` seconds."""
    def __init__(self, landing: str | Path, max_lines: int = 500, flush_s: float = 5.0):
        self.landing, self.max_lines, self.flush_s = landing, max_lines, flush_s
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="landing-writer", daemon=True)
        self._thread.start()

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        """Queue events; write a file when `max_lines` are waiting."""
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events]
        with self._lock:
            self._lines.extend(lines)
            full = len(self._lines) >= self.max_lines
        if full:
            self.flush()

    def flush(self) -> Path | None:
        """Write what is waiting as one landing file now; the file, or None when nothing waited."""
        with self._lock:
            lines, self._lines = self._lines, []
            if not lines:
                return None
            return write_file(self.landing, datetime.now(UTC), lines)  # under the lock: files keep their order

    def _tick(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        self._thread.join(timeout=self.flush_s + 1)
        self.flush()
