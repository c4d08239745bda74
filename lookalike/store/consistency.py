"""Consistency: whether a store's catalog, vector files and index agree, and mending the index when not.

The catalog and the vectors are the truth; the index is a cache of them. So every repair
rebuilds or updates the index from the vectors, and a problem in the catalog or the vector
files themselves (a shard shorter than its rows) is reported, never papered over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..ann import faiss_io
from ..errors import IndexFileError
from .layout import INDEX
from .shards import shard_problems


@dataclass
class CheckReport:
    """What ``Store.check`` found and did.

    Attributes:
        problems: what was inconsistent when checked (empty when all agreed).
        vectors: the embedded files counted.
        caught_up: ``(reflected, current)`` generations when a lagging index was brought up to date.
        rebuilt: whether the index was rebuilt from the vectors (it disagreed, or there was none).
        remaining: what is still inconsistent after mending (only a damaged catalog or vector file).
    """

    problems: list[str] = field(default_factory=list)
    vectors: int = 0
    caught_up: tuple[int, int] | None = None
    rebuilt: bool = False
    remaining: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the store is consistent now (after any mending)."""
        return not (self.remaining if self.problems and self.rebuilt else self.problems)


def check_store(store, repair: bool = False) -> CheckReport:
    """Check ``store``; with ``repair``, under its write lock, mend the index (see ``Store.check``)."""
    if not repair:
        return CheckReport(problems(store), len(store))
    with store.writer(sync=False):  # no writer may change the store while it is checked
        found = problems(store)
    report = CheckReport(found)
    if not found:
        written, generation = store.index_lag()
        if written != generation:
            with store.writer():  # on exit: the index catches up with the catalog
                pass
            report.caught_up = (written, generation)
            report.rebuilt = written < 0
    else:
        store.repair()
        report.rebuilt = True
        report.remaining = problems(store)
    report.vectors = len(store)
    return report


def problems(store) -> list[str]:
    """What is inconsistent between catalog, vectors and index; empty when all agree.

    An index behind the catalog is no inconsistency: searches add what changed since it
    was written, and the next writer brings it up to date (see ``Store.index_lag``). Its ids
    are checked all the same: every embedded file unchanged since must be in it, and
    nothing else but files changed or removed since.
    """
    with store.catalog() as catalog:
        catalog.snapshot()
        rows, index_generation = catalog.meta("rows"), catalog.meta("index_generation")
        records, shards = list(catalog.records("ok")), catalog.shards()
        changed, removed = catalog.changed_since(index_generation) if index_generation >= 0 else ([], [])
        catalog.end_snapshot()
    found = shard_problems(store.directory, store.dim, rows, shards, records)
    if index_generation >= 0:  # else none is written yet, or one is to be rebuilt: the next writer builds it
        found += _index_problems(store, {r.id for r in records}, {r.id for r in changed} | set(removed))
    return found


def _index_problems(store, embedded: set[int], changed: set[int]) -> list[str]:
    path = store.directory / INDEX
    if not path.exists():
        return ["index.faiss is missing"]
    try:  # an on-disk index also needs the .ivfdata file it names
        index = faiss_io.read_index(path)
    except IndexFileError as e:
        return [str(e)]
    short = _short_lists(index, path.parent)
    if short:  # reading them would kill this process (SIGBUS), not raise
        return [short]
    indexed = faiss_io.ids(index)
    unique = set(indexed.tolist())
    missing = (embedded - changed) - unique
    unknown = unique - embedded - changed
    found = []
    if missing or unknown:
        found.append(f"index.faiss holds {len(unique)} ids: {len(missing)} embedded files are missing from it, "
                     f"{len(unknown)} of its ids name no embedded file")
    if len(unique) != len(indexed):
        found.append(f"index.faiss holds {len(indexed) - len(unique)} ids twice")
    return found


def _short_lists(index, directory: Path) -> str | None:
    """What is wrong when an on-disk index's lists file is shorter than the index says it is."""
    lists = faiss_io.ondisk_lists(index)
    if lists is None:
        return None
    file = directory / os.path.basename(lists.filename)
    size = file.stat().st_size if file.exists() else -1
    if size >= lists.totsize:
        return None
    return (f"{file.name} holds {max(size, 0)} bytes, the index's lists {lists.totsize}"
            + ("" if size >= 0 else " (missing)") + ": the index is damaged; `lookalike check --repair` rebuilds it")
