"""Writing to the landing zone exactly as the contract specifies (`landing-zone.md`).

Files go to `<landing>/events/dt=YYYY-MM-DD/hour=HH/<name>.json[.gz]`, where dt/hour is when
the file was written. Each file is written under `<landing>/.staging/` and then renamed into
place, so a reader never sees a partial file.
"""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

EVENT_TYPES = ("play", "like", "unlike", "follow", "unfollow", "playlist_add", "impression", "click")
EVENTS_DIR = "events"
STAGING_DIR = ".staging"


def hour_dir(landing: str | Path, written_at: datetime) -> Path:
    """The folder for files written during `written_at`'s hour (UTC)."""
    return Path(landing) / EVENTS_DIR / f"dt={written_at:%Y-%m-%d}" / f"hour={written_at:%H}"


def write_file(
    landing: str | Path,
    written_at: datetime,
    lines: Iterable[str],
    *,
    name: str | None = None,
    compress: bool = False,
) -> Path:
    """Write JSON lines into one new landing file, moved in whole; returns its final path."""
    name = name or uuid.uuid4().hex
    suffix = ".json.gz" if compress else ".json"
    staging = Path(landing) / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{name}{suffix}.{os.getpid()}.tmp"
    payload = "".join(line + "\n" for line in lines).encode("utf-8")
    with open(tmp, "wb") as raw:
        if compress:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
                gz.write(payload)
        else:
            raw.write(payload)
        raw.flush()
        os.fsync(raw.fileno())
    final = hour_dir(landing, written_at) / f"{name}{suffix}"
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return final
