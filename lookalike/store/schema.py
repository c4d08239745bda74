"""The catalog's schema: its tables as SQLite makes them, the columns older formats lack, and its rows as tuples.

``catalog`` reads and writes these; the store format's history is told in ``catalog``'s docstring.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason TEXT,
    row INTEGER,
    generation INTEGER NOT NULL,
    ctime_ns INTEGER,
    mode INTEGER,
    recorded REAL,
    shard INTEGER NOT NULL DEFAULT 0,
    digest TEXT,
    width INTEGER,
    height INTEGER,
    taken_ns INTEGER,
    blank INTEGER
);
CREATE INDEX IF NOT EXISTS files_generation ON files (generation);
CREATE TABLE IF NOT EXISTS verdicts (a TEXT NOT NULL, b TEXT NOT NULL, recorded REAL, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS shards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('generation', 0), ('rows', 0), ('index_generation', -1);
"""
ADDED_COLUMNS = (("ctime_ns", "INTEGER"), ("mode", "INTEGER"), ("recorded", "REAL"),  # format 2
                  ("shard", "INTEGER NOT NULL DEFAULT 0"),  # format 3
                  ("digest", "TEXT"), ("width", "INTEGER"), ("height", "INTEGER"), ("taken_ns", "INTEGER"),
                  ("blank", "INTEGER"))  # format 4
INDEXES = "CREATE INDEX IF NOT EXISTS files_digest ON files (digest)"  # after the columns an old catalog gains
COLUMNS = ("id, path, size, mtime_ns, status, reason, row, generation, ctime_ns, mode, recorded, shard, digest, width, "
            "height, taken_ns, blank")


class FileRecord(NamedTuple):
    """A catalog row. ``row`` is the file's row in its ``shard``'s vector file (None when it failed).

    ``ctime_ns``, ``mode`` and ``recorded`` are None in rows written before store format 2.
    """

    id: int
    path: str
    size: int
    mtime_ns: int
    status: str
    reason: str | None
    row: int | None
    generation: int
    ctime_ns: int | None = None
    mode: int | None = None
    recorded: float | None = None  # Unix seconds
    shard: int = 0  # 0: vectors.f32; else an id in the shards table
    digest: str | None = None  # the content hash (None in rows written before format 4)
    width: int | None = None
    height: int | None = None
    taken_ns: int | None = None  # EXIF DateTimeOriginal, as Unix nanoseconds (None where the file has none)
    blank: int | None = None  # 1: the image shows next to nothing (never proposed for removal)

    @property
    def recorded_utc(self) -> str | None:
        """When the row was written, ISO 8601 in UTC; None for rows of a format-1 store, which kept no time."""
        if self.recorded is None:
            return None
        return datetime.datetime.fromtimestamp(self.recorded, datetime.timezone.utc).isoformat(timespec="seconds")


class Entry(NamedTuple):
    """What the indexer writes for one file: a vector row, or a failure reason; and what it learnt of the file."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int | None = None
    mode: int | None = None
    row: int | None = None
    reason: str | None = None
    digest: str | None = None
    width: int | None = None
    height: int | None = None
    taken_ns: int | None = None
    blank: int | None = None


class Shard(NamedTuple):
    """A vector file written whole: ``shards/<name>.f32`` holding ``rows`` rows, committed at ``generation``."""

    id: int
    name: str
    rows: int
    generation: int
