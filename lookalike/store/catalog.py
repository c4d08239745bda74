"""The catalog: one SQLite row per file, the store's source of truth.

A file keeps its id for life (``AUTOINCREMENT`` never reuses one), so FAISS ids and
paths can't drift apart. Every write happens in one transaction that also advances the
store's generation and its count of committed vector rows, so a crash loses at most the
batch in flight. WAL mode lets readers query while an indexer writes.

Store format 2 added ``ctime_ns`` and ``mode`` (a failure is retried when they change: a
chmod changes both) and ``recorded`` (when the row was written, in Unix seconds). Format 3
added ``shard``: which vector file holds the row (0 is ``vectors.f32``, others are named in
the ``shards`` table, written whole by the Ray engine's workers; see ``shards``). Format 4
added what acting on duplicates needs: ``digest`` (the file's content hash, SHA-256 of its
bytes), ``width``, ``height``, ``taken_ns`` (EXIF DateTimeOriginal) and ``blank`` (1 for an
image that shows next to nothing, never proposed for removal) of the image, and the
``verdicts`` table (pairs of contents a user said are not duplicates). An older catalog gains
the missing columns, empty (``shard`` 0), the first time a writer opens it.

Readers open it read-only (``write=False``): they run no statement that writes, so they work
on a store they may not write, and on a read-only filesystem. Why an open failed is told
apart by ``access``: permission, a read-only filesystem, a lock, or damage.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .. import crashpoints
from .access import explain, explained, read_only_filesystem
from .schema import ADDED_COLUMNS, COLUMNS, INDEXES, SCHEMA, Entry, FileRecord, Shard

_IDS_PER_QUERY = 900  # under SQLite's oldest limit of 999 bound parameters
BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's lock on the catalog


def _explained(method):
    """A write whose ``sqlite3.Error`` (a lock held by another program, a full disk) becomes a typed error."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise explain(e, self.path, writing=True) from e
    return wrapper


class Catalog:
    """The SQLite catalog of a store. Use as a context manager, or call ``close``.

    ``write=False`` opens it read-only (what every reader should do); ``create`` makes it if missing.

    Raises:
        StorePermissionError, StoreReadOnlyError, StoreLockedError, StoreDamagedError: why it can't be opened.
    """

    def __init__(self, path: str | Path, write: bool = True, create: bool = False):
        self.path = Path(path)
        self.write = write
        with explained(self.path, write):
            self._db = self._open_for_writing(create) if write else self._open_for_reading()

    def _open_for_writing(self, create: bool) -> sqlite3.Connection:
        db = self._connect("rwc" if create else "rw")
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not just a crash
            db.executescript(SCHEMA)  # it writes: a store that can't be written fails here, not mid-run
            self._db = db
            self._add_missing_columns()
            self._db.execute(INDEXES)
        except BaseException:
            db.close()
            raise
        return db

    def _open_for_reading(self) -> sqlite3.Connection:
        try:
            return self._connect("ro")
        except sqlite3.OperationalError:
            if not self._readable_as_immutable():
                raise
            # A WAL reader needs a shared-memory file beside the database, which it can't make on a
            # read-only filesystem or in a folder this user may not write. With no write-ahead log
            # left, no writer is at work and the database file holds every commit: read it as is.
            return self._connect("ro", "&immutable=1")

    def _connect(self, mode: str, extra: str = "") -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode={mode}{extra}"
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()  # opening is lazy: read now
        except sqlite3.OperationalError as e:
            if mode != "rwc" or "no such table" not in str(e):
                db.close()
                raise
        except BaseException:
            db.close()
            raise
        return db

    def _readable_as_immutable(self) -> bool:
        wal = self.path.with_name(self.path.name + "-wal")
        unwritable = read_only_filesystem(self.path) or not os.access(self.path.parent, os.W_OK)
        return unwritable and self.path.is_file() and (not wal.exists() or wal.stat().st_size == 0)

    def _add_missing_columns(self) -> None:
        """Bring an older catalog to this format, in one transaction (a second process finds it done)."""
        if not self._missing_columns():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in self._missing_columns():
                self._db.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _missing_columns(self) -> list[tuple[str, str]]:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        return [(name, kind) for name, kind in ADDED_COLUMNS if name not in present]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if isinstance(exc, sqlite3.Error):  # met reading a catalog that opened (a page cut off, say)
            raise explain(exc, self.path, self.write) from exc

    def meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @_explained
    def set_meta(self, **values) -> None:
        """Set meta values in one transaction (None deletes a key)."""
        own = not self._db.in_transaction
        if own:
            self._db.execute("BEGIN IMMEDIATE")
        try:
            for key, value in values.items():
                if value is None:
                    self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            if own:
                self._db.execute("COMMIT")
        except BaseException:
            if own:
                self._db.execute("ROLLBACK")
            raise

    def snapshot(self) -> "Catalog":
        """Begin a read transaction: until ``end_snapshot``, reads see one committed state."""
        self._db.execute("BEGIN")
        return self

    def end_snapshot(self) -> None:
        self._db.execute("COMMIT")

    def records(self, status: str | None = None) -> Iterator[FileRecord]:
        query = f"SELECT {COLUMNS} FROM files" + (" WHERE status = ?" if status else "") + " ORDER BY path"
        for row in self._db.execute(query, (status,) if status else ()):
            yield FileRecord(*row)

    def by_paths(self, paths: Iterable[str]) -> dict[str, FileRecord]:
        found = {}
        for path in paths:
            row = self._db.execute(f"SELECT {COLUMNS} FROM files WHERE path = ?", (path,)).fetchone()
            if row:
                found[path] = FileRecord(*row)
        return found

    def by_ids(self, ids: Iterable[int]) -> dict[int, FileRecord]:
        ids = [int(i) for i in ids]
        found = {}
        for start in range(0, len(ids), _IDS_PER_QUERY):  # one query a chunk: 10k hits cost 10k queries before
            chunk = ids[start:start + _IDS_PER_QUERY]
            query = f"SELECT {COLUMNS} FROM files WHERE id IN ({','.join('?' * len(chunk))})"
            found.update((row[0], FileRecord(*row)) for row in self._db.execute(query, chunk))
        return found

    def count(self, status: str | None = None, at_most: int | None = None) -> int:
        """Files with ``status``; with ``at_most``, counting stops there (a full count reads every row)."""
        rows = "SELECT 1 FROM files" + (" WHERE status = ?" if status else "")
        if at_most is not None:
            rows += f" LIMIT {int(at_most)}"
        return self._db.execute(f"SELECT COUNT(*) FROM ({rows})", (status,) if status else ()).fetchone()[0]

    def ids_and_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids, shards and vector rows of every embedded file, by id, as three int64 arrays (24 bytes a file)."""
        count = self.count("ok")
        triples = np.fromiter(
            self._db.execute("SELECT id, shard, row FROM files WHERE status = 'ok' ORDER BY id"),
            dtype=np.dtype((np.int64, 3)), count=count,
        ).reshape(count, 3)
        return tuple(np.ascontiguousarray(triples[:, i]) for i in range(3))

    def shards(self) -> list[Shard]:
        """The committed shard files (not shard 0, ``vectors.f32``), oldest first."""
        return [Shard(*row) for row in self._db.execute("SELECT id, name, rows, generation FROM shards ORDER BY id")]

    def changed_since(self, generation: int) -> tuple[list[FileRecord], list[int]]:
        """Files written after ``generation``, and ids removed after it."""
        changed = [FileRecord(*r) for r in self._db.execute(f"SELECT {COLUMNS} FROM files WHERE generation > ?", (generation,))]
        removed = [r[0] for r in self._db.execute("SELECT id FROM removed WHERE generation > ?", (generation,))]
        return changed, removed

    def by_digests(self, digests: Iterable[str]) -> dict[str, list[FileRecord]]:
        """The embedded files of each content hash, by path."""
        digests = list(dict.fromkeys(digests))
        found: dict[str, list[FileRecord]] = {}
        for start in range(0, len(digests), _IDS_PER_QUERY):
            chunk = digests[start:start + _IDS_PER_QUERY]
            query = (f"SELECT {COLUMNS} FROM files WHERE status = 'ok' AND digest IN ({','.join('?' * len(chunk))}) "
                     f"ORDER BY path")
            for row in self._db.execute(query, chunk):
                found.setdefault(row[12], []).append(FileRecord(*row))
        return found

    def same_content(self) -> Iterator[list[FileRecord]]:
        """Groups of embedded files with the same content hash (two or more), each by path."""
        query = (f"SELECT {COLUMNS} FROM files WHERE status = 'ok' AND digest IN (SELECT digest FROM files "
                 f"WHERE status = 'ok' AND digest IS NOT NULL GROUP BY digest HAVING COUNT(*) > 1) ORDER BY digest, path")
        group: list[FileRecord] = []
        for row in self._db.execute(query):
            record = FileRecord(*row)
            if group and group[0].digest != record.digest:
                yield group
                group = []
            group.append(record)
        if group:
            yield group

    def verdicts(self) -> list[tuple[str, str, float | None]]:
        """Every (digest, digest, when) pair a user said are not duplicates, smaller digest first."""
        return list(self._db.execute("SELECT a, b, recorded FROM verdicts ORDER BY recorded, a, b"))

    @_explained
    def record_verdicts(self, pairs: Iterable[tuple[str, str]], forget: bool = False) -> int:
        """Add (or with ``forget`` drop) "not duplicates" verdicts between contents, in one transaction; how many changed."""
        rows = {tuple(sorted(pair)) for pair in pairs if pair[0] != pair[1]}
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            if forget:
                db.executemany("DELETE FROM verdicts WHERE a = ? AND b = ?", list(rows))
            else:
                now = time.time()
                db.executemany("INSERT OR IGNORE INTO verdicts VALUES (?, ?, ?)", [(a, b, now) for a, b in rows])
            changed = db.total_changes - before
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return changed

    @_explained
    def commit(self, entries: list[Entry], rows: int | None = None, removed_paths: Iterable[str] = (),
               shard: tuple[str, int] | None = None, moved: Iterable[tuple[str, Entry]] = ()) -> int:
        """Write entries and removals, and the new committed row count of ``vectors.f32``, in one transaction.

        Args:
            entries: files with their vector row (or failure reason).
            rows: rows of ``vectors.f32`` now committed; None leaves the count as it is.
            removed_paths: files gone.
            shard: ``(name, rows)`` of a shard file the entries' rows are in, recorded in the same
                transaction; None: the rows are in ``vectors.f32``.
            moved: ``(old path, entry)`` of files that moved: the row keeps its id and vector and takes
                the entry's path and stat (the row it points at stays where it was).

        Returns:
            The new generation.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            generation = self.meta("generation") + 1
            shard_id = self._insert_shard(shard, generation)
            now = time.time()
            db.executemany(
                "INSERT INTO files (path, size, mtime_ns, ctime_ns, mode, status, reason, row, generation, recorded, shard,"
                " digest, width, height, taken_ns, blank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns,"
                " ctime_ns=excluded.ctime_ns, mode=excluded.mode, status=excluded.status, reason=excluded.reason,"
                " row=excluded.row, generation=excluded.generation, recorded=excluded.recorded, shard=excluded.shard,"
                " digest=excluded.digest, width=excluded.width, height=excluded.height, taken_ns=excluded.taken_ns,"
                " blank=excluded.blank",
                [(e.path, e.size, e.mtime_ns, e.ctime_ns, e.mode, "ok" if e.row is not None else "failed", e.reason,
                  e.row, generation, now, shard_id if e.row is not None else 0, e.digest, e.width, e.height, e.taken_ns,
                  e.blank) for e in entries],
            )
            db.executemany(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ?, ctime_ns = ?, mode = ?, generation = ?, recorded = ?"
                " WHERE path = ?", [(e.path, e.size, e.mtime_ns, e.ctime_ns, e.mode, generation, now, old)
                                    for old, e in moved])
            removed_paths = list(removed_paths)
            for start in range(0, len(removed_paths), _IDS_PER_QUERY):  # a chunk a statement: 150k removals at once
                chunk = removed_paths[start : start + _IDS_PER_QUERY]
                ids = db.execute(f"SELECT id FROM files WHERE path IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                db.executemany("DELETE FROM files WHERE id = ?", ids)
                db.executemany("INSERT OR REPLACE INTO removed VALUES (?, ?)", [(i, generation) for (i,) in ids])
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))
            if rows is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'rows'", (rows,))
            crashpoints.reached("catalog.before_commit")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        crashpoints.reached("catalog.after_commit")
        return generation

    @_explained
    def restore(self, records: Iterable[FileRecord]) -> int:
        """Rows given back to files that left and came back, pointing at the vector rows they had (new ids)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            generation = self.meta("generation") + 1
            now = time.time()
            db.executemany(
                "INSERT INTO files (path, size, mtime_ns, ctime_ns, mode, status, reason, row, generation, recorded, shard,"
                " digest, width, height, taken_ns, blank) VALUES (?, ?, ?, ?, ?, 'ok', NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.path, r.size, r.mtime_ns, r.ctime_ns, r.mode, r.row, generation, now, r.shard, r.digest, r.width,
                  r.height, r.taken_ns, r.blank) for r in records])
            db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return generation

    @_explained
    def set_facts(self, facts: Iterable[tuple]) -> None:
        """Fill ``(path, digest, width, height, taken_ns, blank)`` into rows that lack them (rows from before format 4)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("UPDATE files SET digest = ?, width = ?, height = ?, taken_ns = ?, blank = ? WHERE path = ?",
                           [(*rest, path) for path, *rest in facts])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert_shard(self, shard: tuple[str, int] | None, generation: int) -> int:
        if shard is None:
            return 0
        name, rows = shard
        return self._db.execute("INSERT INTO shards (name, rows, generation) VALUES (?, ?, ?)",
                                (name, rows, generation)).lastrowid
