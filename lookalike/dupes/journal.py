"""The journal of an action on user files: written ahead, so a crash never leaves a file unaccounted for.

One JSON-lines file per action in the store's ``journal/`` folder, append-only:

    {"journal": 1, "store": ID, "kind": "move"|"trash", "to": DIR, "created": ISO, "actions": N}
    {"intent": 7, "key": "a/b.jpg", "source": PATH, "dest": PATH, "size": .., "mtime_ns": .., "digest": ..,
     "record": {...the catalog row...}}          before the file is touched (fsynced)
    {"done": [7, 8, ...], "trashed": {...}}      after those files moved and their folders were fsynced
    {"stored": [7, 8, ...]}                      after the catalog follows them (not fsynced: ``recover``
                                                 makes the catalog follow again, as it does for a lost line)
    {"finished": ISO}                            the action is complete
    {"undone": [8, 7, ...]} ... {"undo_finished": ISO}   an undo, written the same way

Every line is flushed and fsynced before the step it announces (``intent``) or after the
step it records (``done``, ``stored``), so after a crash each intended file is at its source
or at its destination, and ``state`` says which lines were reached.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import fsync_folder
from ..errors import DuplicatesError

FORMAT = 1
FOLDER = "journal"


@dataclass
class Intent:
    """One file the action moves: where from, where to, and what it was when planned."""

    n: int
    key: str
    source: str
    dest: str | None  # None: to the trash
    size: int
    mtime_ns: int
    digest: str
    record: dict  # the catalog row (FileRecord as a dict), to give it back on undo


@dataclass
class State:
    """What a journal says happened."""

    path: Path
    header: dict
    intents: dict[int, Intent] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    undone: list[int] = field(default_factory=list)
    trashed: dict[int, str | None] = field(default_factory=dict)  # where the trash put each file (Linux)
    finished: str | None = None
    undo_started: str | None = None
    undo_finished: str | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def status(self) -> str:
        if self.undo_finished:
            return "undone"
        if self.undo_started:
            return "undo unfinished"
        return "done" if self.finished else "unfinished"


class Journal:
    """An open journal, appended to line by line; each ``write`` is durable when it returns."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    @classmethod
    def create(cls, store_dir: Path, header: dict) -> Journal:
        folder = Path(store_dir) / FOLDER
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            fsync_folder(folder.parent)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        journal = cls(folder / f"{stamp}-{secrets.token_hex(3)}.jsonl")
        journal.write({"journal": FORMAT, **header, "created": now()})
        fsync_folder(folder)  # the file itself is named durably before any file is touched
        return journal

    def write(self, *entries: dict, durable: bool = True) -> None:
        """Append entries; make them durable unless a lost line costs nothing (``recover`` redoes what it says)."""
        self._file.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
        self._file.flush()
        if durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read(path: str | os.PathLike) -> State:
    """What a journal says, up to its last whole line (a line cut off by a crash is not counted).

    Raises:
        DuplicatesError: not a lookalike journal.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DuplicatesError(f"cannot read the journal {path}: {e.strerror or e}") from None
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # the tail a crash cut off: everything after it was never made durable
    if not entries or entries[0].get("journal") != FORMAT:
        raise DuplicatesError(f"{path} is not a lookalike journal")
    state = State(path, entries[0])
    for entry in entries[1:]:
        if "intent" in entry:
            state.intents[entry["intent"]] = Intent(entry["intent"], entry["key"], entry["source"], entry["dest"],
                                                    entry["size"], entry["mtime_ns"], entry["digest"], entry["record"])
        state.done += entry.get("done", [])
        state.stored += entry.get("stored", [])
        state.undone += entry.get("undone", [])
        state.trashed.update((int(n), at) for n, at in entry.get("trashed", {}).items())
        state.finished = entry.get("finished", state.finished)
        state.undo_started = entry.get("undo_started", state.undo_started)
        state.undo_finished = entry.get("undo_finished", state.undo_finished)
    return state


def unfinished(store_dir: str | os.PathLike) -> list[State]:
    """The journals of actions a crash cut short (not finished, no undo begun), read whole; the others by their tail."""
    folder = Path(store_dir) / FOLDER
    cut_short = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode("utf-8", "replace")
        if '"finished"' in tail or '"undo_started"' in tail or '"undo_finished"' in tail:
            continue  # an action ends with its "finished" line; an undo never leaves one to settle
        state = read(path)
        if not state.finished and not state.undo_started:
            cut_short.append(state)
    return cut_short


def journals(store_dir: str | os.PathLike) -> list[State]:
    """Every journal of a store, oldest first (names start with the time)."""
    folder = Path(store_dir) / FOLDER
    return [read(p) for p in sorted(folder.glob("*.jsonl"))] if folder.is_dir() else []


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
