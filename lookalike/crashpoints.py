"""Named crash points: places in every durable step where a test can stop the process dead.

SQLite's crash tests stop the process at every write and sync and then check the database;
this does the same for a store. Each durable step calls ``reached(name)``; unless the
environment variable ``LOOKALIKE_CRASH`` names that point, nothing happens (one dictionary
lookup). Tests set it for a ``python -m lookalike`` subprocess:

    LOOKALIKE_CRASH="vectors.after_fsync:3"          os._exit(CRASH_EXIT_CODE) the 3rd time there
    LOOKALIKE_CRASH="catalog.after_commit:*=pause"   every time: stop and wait (see ``pause``)
    LOOKALIKE_CRASH="index.written,catalog.after_commit:2=pause"   several, comma-separated

``os._exit`` skips every ``finally``, ``atexit`` hook and buffer flush, as ``kill -9`` would.
The kernel keeps what was written, synced or not, so this proves the order of the steps, not
their durability: ``tests/test_powercut.py`` runs the same points on a filesystem that drops
at a simulated power cut whatever no fsync made durable. A pause writes "point count"
to the file named by ``LOOKALIKE_CRASH_PAUSE_FILE`` and waits until a test deletes it, so a
test can query or kill the process at an exact step.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

ENV = "LOOKALIKE_CRASH"
PAUSE_FILE_ENV = "LOOKALIKE_CRASH_PAUSE_FILE"
CRASH_EXIT_CODE = 86  # what the killed process returns; no other path in lookalike exits with it
PAUSE_LIMIT_S = 300  # a pause whose test died goes on after this

POINTS = frozenset({
    "create.catalog",  # a new store's catalog exists, its manifest not yet
    "manifest.written",  # a new manifest.json is written and fsynced beside the old one, not yet renamed
    "manifest.renamed",  # it replaced the old one; the folder is not fsynced yet
    "vectors.before_fsync",  # a batch's vectors are written to vectors.f32, not fsynced
    "vectors.after_fsync",  # fsynced, not yet committed by the catalog
    "catalog.before_commit",  # the batch's rows are in an open SQLite transaction
    "catalog.after_commit",  # committed
    "shard.written",  # a Ray worker's shard file is written and fsynced under a temporary name
    "shard.renamed",  # it is complete under its final name, not committed
    "shard.committed",  # the catalog committed a shard and the files whose rows it holds
    "trained.written",  # a trained on-disk index, named by its factory, is fsynced under a temporary name
    "trained.renamed",  # it is in place; the folder is not fsynced yet
    "ondisk.parts_written",  # every part of an on-disk index is written, not merged
    "ondisk.ivfdata_written",  # the merged inverted lists are durable, name and all; index.faiss not yet
    "index.written",  # a new index.faiss is written and fsynced under a temporary name
    "index.renamed",  # it replaced the old one; the catalog does not record its generation yet
    "index.recorded",  # the catalog records the generation it reflects
    "dupes.journal",  # an action on duplicates has its journal, nothing is touched yet
    "dupes.intents",  # a batch's intents are durable in the journal, no file moved yet
    "dupes.moved",  # one more file of the batch moved (or trashed)
    "dupes.done",  # the batch's moves are durable and journalled done; the catalog not yet following
    "dupes.stored",  # the catalog follows the batch; the journal doesn't say so yet
    "undo.moved",  # one more file moved back by an undo
    "undo.done",  # an undo's batch is back, the catalog following, and journalled
    "upgrade.catalog",  # an older store's catalog is upgraded; its manifest still says the old format
    "repair.marked",  # repair: the catalog records that no index is to be trusted; none is rebuilt yet
    "reset.manifest_removed",  # --reset: the manifest is gone, durably; the store's other files not yet
    "reset.files_removed",  # --reset: the store's files are gone; no new store is made yet
})

_counts: Counter[str] = Counter()
_parsed: tuple[str, dict[str, tuple[int | None, str]]] | None = None


def reached(point: str) -> None:
    """Called by each durable step: crash or pause here if ``$LOOKALIKE_CRASH`` says so."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    plan = _plan(spec).get(point)
    if plan is None:
        return
    _counts[point] += 1
    nth, action = plan
    if nth is not None and _counts[point] != nth:
        return
    if action == "pause":
        pause(point, _counts[point])
    else:
        os._exit(CRASH_EXIT_CODE)


def pause(point: str, count: int) -> None:
    """Say where the process stands in ``$LOOKALIKE_CRASH_PAUSE_FILE``, then wait until that file is gone."""
    path = Path(os.environ[PAUSE_FILE_ENV])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{point} {count}\n")
    os.replace(tmp, path)  # the test never reads half a line
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def _plan(spec: str) -> dict[str, tuple[int | None, str]]:
    """``{point: (nth or None for every time, "exit" or "pause")}``, parsed once per value of the variable."""
    global _parsed
    if _parsed is not None and _parsed[0] == spec:
        return _parsed[1]
    plan = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        where, _, action = entry.partition("=")
        point, _, nth = where.partition(":")
        if point not in POINTS or action not in ("", "exit", "pause") or not (nth in ("", "*") or nth.isdigit()):
            raise ValueError(f"${ENV}: {entry!r} is not POINT[:N|:*][=exit|=pause]; points: {', '.join(sorted(POINTS))}")
        if action == "pause" and not os.environ.get(PAUSE_FILE_ENV):
            raise ValueError(f"${ENV}: {entry!r} pauses, which needs ${PAUSE_FILE_ENV}")
        plan[point] = (None if nth == "*" else int(nth or 1), action or "exit")
    _parsed = (spec, plan)
    return plan
