"""Undo: every file an action moved (or trashed) put back where it was, byte for byte, and the store following.

A file comes back only if it is at its destination with the bytes it left with (its content
hash) and its old path is free; anything else is reported, never overwritten. The moves back
are journalled in the action's own journal (``undone`` lines), so an undo that is killed
is finished by running it again. The catalog gets back the rows the files had, pointing at the
vectors they had (vector files are append-only), so nothing is embedded again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import crashpoints
from ..errors import DuplicatesError
from ..featurize.images.facts import file_digest
from ..store.catalog import FileRecord
from . import journal as journals
from . import moves, trash
from .actions import BATCH, _key_under, recover


@dataclass
class UndoOutcome:
    """What an undo did: the journal, the files put back, and the ones it could not, with why."""

    journal: str
    restored: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (where it is, why it stayed)
    reindex: bool = False  # the store was made anew since: the files came back, their vectors didn't


def undo(store, name: str | os.PathLike | None = None) -> UndoOutcome:
    """Undo the store's last action, or the journal ``name`` (a file, or its name in ``journal/``).

    Raises:
        DuplicatesError: nothing to undo, a journal of another store, or one undone already.
        StoreLockedError: another process writes to the store.
    """
    with store.writer() as writer:
        recover(store, writer)
        state = _chosen(store, name)
        with journals.Journal(state.path) as journal:
            if not state.undo_started:
                journal.write({"undo_started": journals.now()})
            outcome = UndoOutcome(str(state.path), reindex=state.header.get("store") != store.manifest.id)
            pending = [n for n in reversed(state.done) if n not in set(state.undone)]
            for start in range(0, len(pending), BATCH):
                _batch(store, writer, journal, state, pending[start : start + BATCH], outcome)
            journal.write({"undo_finished": journals.now()})
    return outcome


def _chosen(store, name) -> journals.State:
    every = journals.journals(store.directory)
    if name is None:
        candidates = [s for s in every if s.status != "undone"]
        if not candidates:
            raise DuplicatesError("nothing to undo: no action on this store's files is left to undo")
        return candidates[-1]
    path = Path(name)
    if not path.exists():
        path = Path(store.directory) / journals.FOLDER / (path.name if path.suffix else f"{path.name}.jsonl")
    state = journals.read(path)
    if state.header.get("store") != store.manifest.id and state.header.get("root") != str(store.root):
        raise DuplicatesError(f"{name} is the journal of another store, not of {store.directory}")
    if state.status == "undone":
        raise DuplicatesError(f"{state.name} was undone already ({state.undo_finished})")
    return state


def _batch(store, writer, journal, state: journals.State, numbers: list[int], outcome: UndoOutcome) -> None:
    folders: set[str] = set()
    back = []
    for n in numbers:
        intent = state.intents[n]
        where, info, why = _where(intent)
        if why:
            outcome.kept.append((where or intent.source, why))
            continue
        try:
            if where == intent.source:  # back already (an undo killed after the move, before its journal line)
                pass
            elif intent.dest is None:
                trash.restore(where, info, intent.source)
                folders.add(os.path.dirname(intent.source))
            else:
                moves.move(where, intent.source, folders)
        except OSError as e:
            outcome.kept.append((where, f"could not be moved back: {e.strerror or e}"))
            continue
        crashpoints.reached("undo.moved")
        back.append(n)
        outcome.restored.append(intent.source)
    moves.sync(folders)
    if not outcome.reindex:  # the same store: the rows come back, pointing at the vectors they had
        _follow_back(store, writer, [state.intents[n] for n in back])
    journal.write({"undone": back})
    crashpoints.reached("undo.done")


def _where(intent: journals.Intent) -> tuple[str | None, str | None, str | None]:
    """Where the file is now, its .trashinfo (from the trash), and why it can't go back (None when it can)."""
    if os.path.lexists(intent.source):
        if _back_already(intent):
            return intent.source, None, None
        return intent.source, None, f"something is at {intent.source} again: left where it is"
    info = None
    if intent.dest is None:
        found = trash.find(intent.source)
        if found is None:
            return None, None, "not found in the trash (restore it from the trash by hand)"
        where, info = found
    else:
        where = intent.dest
    if not os.path.lexists(where):
        return where, info, "no longer where the action put it"
    try:
        if file_digest(where) != intent.digest:
            return where, info, "changed since it was moved (other bytes): left where it is"
    except OSError as e:
        return where, info, f"can't be read ({e.strerror})"
    return where, info, None


def _back_already(intent: journals.Intent) -> bool:
    """Whether the file at the source is the one the action moved, put back by a killed undo (its other name gone)."""
    try:
        if file_digest(intent.source) != intent.digest:
            return False
        if intent.dest is not None:
            where = moves.settle(intent.dest, intent.source, intent.digest)  # finish a move back cut off midway
            return where == "dest"
        return True  # out of the trash: its .trashinfo, if a kill left one, names a file no longer there
    except OSError:
        return False


def _follow_back(store, writer, back: list[journals.Intent]) -> None:
    """Rows for the files put back: a re-pathed row takes its old path again; a removed one is restored."""
    if not back:
        return
    root = str(store.root)
    with store.catalog() as catalog:
        rows = catalog.meta("rows")
        shards = {s.id for s in catalog.shards()}
        present = catalog.by_paths([_key_under(i.dest, root) for i in back if i.dest and _key_under(i.dest, root)])
        taken = catalog.by_paths([i.key for i in back])
    repath, restore = [], []
    for intent in back:
        info = os.stat(intent.source)
        stat = (intent.key, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)
        dest_key = _key_under(intent.dest, root) if intent.dest else None
        if dest_key is not None and dest_key in present:
            repath.append((dest_key, stat))
        elif intent.key not in taken and _vector_still_there(intent.record, rows, shards):
            record = FileRecord(**{**intent.record, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
                                   "ctime_ns": info.st_ctime_ns, "mode": info.st_mode})
            restore.append(record._replace(path=intent.key))
    writer.move(repath)
    writer.restore(restore)


def _vector_still_there(record: dict, rows: int, shards: set[int]) -> bool:
    """Whether the row's vector is still in the store (a reset since makes new files: then ``index`` embeds it)."""
    return record["shard"] in shards if record["shard"] else record["row"] is not None and record["row"] < rows
