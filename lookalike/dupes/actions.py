"""Acting on duplicate groups: each proposed file moved to a folder or sent to the trash, journal first.

``plan`` turns groups into the files to move; ``apply`` moves them, a batch at a time, holding
the store's write lock throughout:

1. re-check each file against the catalog (size, mtime, content hash; a regular file with one
   name) and its keeper (still there, unchanged), and that nothing is at its destination;
   a changed file is skipped and reported, a changed keeper cancels its group;
2. write the batch's intents to the journal (fsynced);
3. move them (``moves.move``: never over a file, never half-written) and fsync their folders;
4. journal them done; 5. the catalog follows (moved within the indexed folder: the row keeps
   its id and vector under the new path; out of it: the row goes); 6. journal them stored.

A kill at any step leaves each file at its source or its destination; ``recover`` (run before
any new action, and by ``undo``) settles an unfinished journal, and the same command run again
moves what is left.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import crashpoints
from ..errors import DuplicatesError
from ..featurize.images.facts import file_digest
from . import journal as journals
from . import moves, trash
from .groups import Group, Member
from .keeper import protected

BATCH = 1024  # files per journal fsync and catalog commit


@dataclass
class Planned:
    """One file to act on, its keeper, and the catalog row it had."""

    member: Member
    keeper: Member
    dest: str | None  # None: to the trash
    record: dict


@dataclass
class Outcome:
    """What an action did: files moved (or trashed), and the ones left alone, with why."""

    journal: str
    moved: list[tuple[str, str | None]] = field(default_factory=list)  # (source, where it went)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def plan(store, groups: list[Group], *, to: str | os.PathLike | None = None, to_trash: bool = False,
         protect: list[str] = ()) -> list[Planned]:
    """The files the groups propose, each with its destination: ``to``/its path under the indexed folder, or the trash.

    Raises:
        DuplicatesError: no destination, or one inside a protected folder, the indexed folder itself or the store.
    """
    if (to is None) == (not to_trash):
        raise DuplicatesError("say where the duplicates go: --move-to DIR or --trash")
    folder = None
    if to is not None:
        folder = os.path.realpath(os.path.expanduser(os.fspath(to)))
        inside = protected(folder, list(protect))
        if inside is not None:
            raise DuplicatesError(f"--move-to {to} is inside the protected folder {inside}: choose a folder outside it")
        if folder == str(store.root):
            raise DuplicatesError(f"--move-to {to} is the indexed folder itself: choose another folder")
        if protected(folder, [os.path.realpath(store.directory)]) is not None:
            raise DuplicatesError(f"--move-to {to} is inside the store {store.directory}: choose another folder")
    lacking = sum(m.digest is None for g in groups for m in [g.keeper, *g.proposed])
    if lacking:
        raise DuplicatesError(f"{lacking} of these files have no content hash yet (indexed by an older lookalike): "
                              f"run `lookalike index` on the folder once, then act")
    with store.catalog() as catalog:
        records = catalog.by_ids([m.id for g in groups for m in g.proposed])
    planned = []
    for group in groups:
        for member in group.proposed:
            record = records.get(member.id)
            if record is None:
                continue  # left the store since the groups were found
            dest = os.path.join(folder, member.key) if folder is not None else None
            planned.append(Planned(member, group.keeper, dest, record._asdict()))
    planned.sort(key=lambda p: p.member.key)  # a batch then touches few folders: fewer folder fsyncs
    return planned


def apply(store, planned: list[Planned], command: list[str] | None = None,
          progress: Callable[[int], None] | None = None) -> Outcome:
    """Carry out a plan (see the module's docstring); ``progress`` is told each batch's count.

    Raises:
        StoreLockedError: another process writes to the store.
    """
    kind = "trash" if planned and planned[0].dest is None else "move"
    with store.writer() as writer:
        recover(store, writer)
        store_id = _store_id(store, writer)
        header = {"store": store_id, "root": str(store.root), "kind": kind, "command": command or [],
                  "actions": len(planned)}
        with journals.Journal.create(store.directory, header) as journal:
            outcome = Outcome(str(journal.path))
            crashpoints.reached("dupes.journal")
            cancelled: dict[int, str] = {}
            for start in range(0, len(planned), BATCH):
                batch = planned[start : start + BATCH]
                ready = _recheck(batch, cancelled, outcome)
                _act(store, writer, journal, ready, start, outcome)
                if progress:
                    progress(len(batch))
            journal.write({"finished": journals.now()})
    return outcome


def _recheck(batch: list[Planned], cancelled: dict[int, str], outcome: Outcome) -> list[Planned]:
    """The files of a batch still as planned; the others reported in ``outcome.skipped``."""
    ready = []
    for item in batch:
        keeper = item.keeper
        if keeper.id not in cancelled:
            why = _changed(keeper.path, keeper.size, keeper.mtime_ns, keeper.digest)
            if why:
                cancelled[keeper.id] = f"its keeper {keeper.path} {why}: the group was left alone"
        why = cancelled.get(keeper.id) or _changed(item.member.path, item.member.size, item.member.mtime_ns,
                                                     item.member.digest, single=True)
        if not why and item.dest is not None and os.path.lexists(item.dest):
            why = f"something is already at {item.dest}"
        if why:
            outcome.skipped.append((item.member.path, why))
        else:
            ready.append(item)
    return ready


def _changed(path: str, size: int, mtime_ns: int, digest: str | None, single: bool = False) -> str | None:
    """Why the file at ``path`` is no longer what the catalog says, or None when it is."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "is gone"
    except OSError as e:
        return f"can't be read ({e.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a link or a folder): only regular files are moved"
    if single and info.st_nlink > 1:
        return f"is a hard link ({info.st_nlink} names): not moved, only files with one name are"
    if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
        return "changed since it was indexed"
    if digest is None or file_digest(path) != digest:
        return "has other content than when it was indexed" if digest else "has no content hash recorded: index it again"
    return None


def _act(store, writer, journal, ready: list[Planned], start: int, outcome: Outcome) -> None:
    """Steps 2 to 6 for a batch that passed its checks."""
    if not ready:
        return
    numbered = list(enumerate(ready, start))
    journal.write(*({"intent": n, "key": p.member.key, "source": p.member.path, "dest": p.dest, "size": p.member.size,
                     "mtime_ns": p.member.mtime_ns, "digest": p.member.digest, "record": p.record} for n, p in numbered))
    crashpoints.reached("dupes.intents")
    folders: set[str] = set()
    done, trashed = [], {}
    for n, item in numbered:
        try:
            if item.dest is None:
                trashed[str(n)] = trash.trash(item.member.path)
            else:
                moves.move(item.member.path, item.dest, folders)
        except OSError as e:
            outcome.skipped.append((item.member.path, f"could not be moved: {e.strerror or e}"))
            continue
        crashpoints.reached("dupes.moved")
        done.append(n)
        outcome.moved.append((item.member.path, item.dest if item.dest is not None else trashed[str(n)]))
    moves.sync(folders)
    journal.write({"done": done, **({"trashed": trashed} if trashed else {})})
    crashpoints.reached("dupes.done")
    _follow(store, writer, [p for n, p in numbered if n in set(done)])
    crashpoints.reached("dupes.stored")
    journal.write({"stored": done}, durable=False)


def _follow(store, writer, moved: list[Planned]) -> None:
    """The catalog follows moved files: re-pathed when they stay where indexing finds them, else removed."""
    root = str(store.root)
    stays, gone = [], []
    for item in moved:
        key = _key_under(item.dest, root) if item.dest else None
        if key is not None:
            info = os.stat(item.dest)
            stays.append((item.member.key, (key, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)))
        else:
            gone.append(item.member.key)
    writer.move(stays, gone)


def _key_under(path: str, root: str) -> str | None:
    """The catalog key of ``path`` if indexing would find it there (under the root, in no hidden folder)."""
    prefix = root.rstrip(os.sep) + os.sep
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix):].split(os.sep)
    return None if any(p.startswith(".") for p in parts) else "/".join(parts)


def settle(store) -> list[str]:
    """``recover`` under the store's write lock: before duplicates are looked for again after a crash."""
    with store.writer() as writer:
        return recover(store, writer)


def recover(store, writer) -> list[str]:
    """Settle every unfinished journal of the store (after a crash): each file at its source or its destination,
    the catalog following what moved; returns the journals settled."""
    settled = []
    for state in journals.unfinished(store.directory):
        done = set(state.done)
        for n, intent in state.intents.items():
            if n in done:
                continue
            where = _settle(intent)
            if where == "dest":
                done.add(n)
        unstored = [state.intents[n] for n in sorted(done) if n not in set(state.stored)]
        with store.catalog() as catalog:
            present = catalog.by_paths([i.key for i in unstored])
        _follow(store, writer, [_as_planned(i) for i in unstored if i.key in present])
        with journals.Journal(state.path) as journal:
            journal.write({"done": sorted(done - set(state.done))}, {"stored": [i.n for i in unstored]},
                          {"finished": journals.now(), "recovered": True})
        settled.append(state.name)
    return settled


def _settle(intent: journals.Intent) -> str:
    if intent.dest is None:  # the trash: moved there, or not
        return "dest" if not os.path.lexists(intent.source) else "source"
    return moves.settle(intent.source, intent.dest, intent.digest)


def _as_planned(intent: journals.Intent) -> Planned:
    member = Member(intent.record["id"], intent.key, intent.source, 0.0, False, "", intent.size, None, None,
                    intent.mtime_ns, intent.digest)
    return Planned(member, member, intent.dest, intent.record)


def _store_id(store, writer) -> str:
    """The store's id, given to a store of an older lookalike the first time it acts (journals name their store)."""
    if not store.manifest.id:
        writer.use_id()
    return store.manifest.id
