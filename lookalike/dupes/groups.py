"""Duplicate groups safe to act on: one keeper each, and only members that are duplicates of the keeper itself.

Two tiers. **Exact**: files with the same content hash (the bytes are equal). **Near**: the
CNN's cosine similarity at or above a threshold. The near tier starts from the connected
components of the store's kNN graph (``ann.dupes``), which can chain A to C through B; so
each component is split into stars: the best keeper by the rules, every member whose own
similarity to that keeper reaches the threshold, then the same again on what is left. A
member is proposed for removal only through its similarity to its own keeper.

Never proposed: the keeper; a member under a ``--protect`` folder; a near-blank image (it
looks like every other blank one); a file missing from disk (a stale entry, marked so); and
a pair a user said are not duplicates (``lookalike distinct``), which never share a group.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..ann.dupes import duplicate_groups as linked_components
from .keeper import Candidate, Rule, choose, parse_rules, protected

EXACT, NEAR = "exact", "near"
VECTOR_BATCH_ROWS = 16_384  # member vectors read at a time (80 MiB of 1280-d)
# Memory a near pass holds per stored file (ids and rows by id, the union-find forest and its
# sort), per member of a group (the components, their catalog rows, the groups returned), and
# for one batch of kNN results: what ``memory_plan`` adds up.
BYTES_PER_FILE = 24 + 8 + 32
BYTES_PER_MEMBER = 1_200


class Member(NamedTuple):
    """One file of a group, with the decision about it and why."""

    id: int
    key: str  # relative to the indexed folder
    path: str
    score: float  # cosine similarity to the keeper (1.0 for the keeper and exact copies)
    keep: bool
    reason: str
    size: int
    width: int | None
    height: int | None
    mtime_ns: int
    digest: str | None
    missing: bool = False  # in the store, not on disk: never proposed

    @property
    def proposed(self) -> bool:
        return not self.keep and not self.missing


class Group(NamedTuple):
    """``exact`` (every member has the keeper's bytes) or ``near``; the keeper is ``members[0]``."""

    kind: str
    members: list[Member]

    @property
    def keeper(self) -> Member:
        return self.members[0]

    @property
    def proposed(self) -> list[Member]:
        return [m for m in self.members if m.proposed]


@dataclass
class Settings:
    """How groups are found and decided.

    Attributes:
        threshold: the least cosine similarity to the keeper for a near duplicate.
        k: neighbours looked at per image (the kNN graph's degree).
        rules: keeper rules (``keeper.parse_rules``).
        protect: real paths of folders whose files are never proposed.
        exact: the exact tier only (no vectors are read).
    """

    threshold: float = 0.95
    k: int = 10
    rules: list[Rule] = field(default_factory=parse_rules)
    protect: list[str] = field(default_factory=list)
    exact: bool = False


def find_groups(store, settings: Settings, progress: Callable[[int, int], None] | None = None) -> list[Group]:
    """The duplicate groups of a store, largest first; ``progress(done, total)`` as rows are searched."""
    if settings.exact:
        with store.catalog() as catalog:
            same = list(catalog.same_content())
        groups = [g for records in same if (g := _exact_group(store, records, settings)) is not None]
    else:
        groups = _near_groups(store, settings, progress)
    groups.sort(key=lambda g: (-len(g.members), g.keeper.key))
    return groups


def _near_groups(store, settings: Settings, progress) -> list[Group]:
    ids, vectors = store.vector_rows()  # by id: a member's row is found by binary search, no dict of a million
    total = len(ids)
    search = lambda queries, n: store.knn(queries, min(n, total))  # noqa: E731 - a store smaller than k
    components = linked_components(vectors, ids, search, threshold=settings.threshold, k=min(settings.k, max(total, 2)),
                                   progress=(lambda done: progress(done, total)) if progress else None)
    if not components:
        return []
    with store.catalog() as catalog:
        distinct = {(a, b) for a, b, _ in catalog.verdicts()}
    root = str(store.root)
    groups: list[Group] = []
    for batch in _batches(components):
        member_ids = [i for component in batch for i in component.ids]
        with store.catalog() as catalog:
            records = catalog.by_ids(member_ids)
        rows = vectors[np.searchsorted(ids, np.array(member_ids, dtype=np.int64))]
        at = dict(zip(member_ids, range(len(member_ids))))
        for component in batch:
            present = [records[i] for i in component.ids if i in records]  # a row removed meanwhile is left out
            stars = _stars(present, rows[[at[r.id] for r in present]], root, settings, distinct)
            groups += stars
    return groups


def memory_plan(files: int, members: int, dim: int, k: int, search_batch: int = 4096) -> int:
    """The bytes a near pass may hold beyond the open store: linear in the files and the group members, never all pairs."""
    search = search_batch * (dim * 4 + k * (4 + 8) * 3)  # the queries, and D and I with their sorted copies
    vectors = VECTOR_BATCH_ROWS * dim * 4 * 2  # one batch of members' vectors, and its slices
    return files * BYTES_PER_FILE + members * BYTES_PER_MEMBER + search + vectors


def _batches(components):
    """Components in runs of at most ``VECTOR_BATCH_ROWS`` members, so their vectors are read a block at a time."""
    batch, size = [], 0
    for component in components:
        if batch and size + len(component.ids) > VECTOR_BATCH_ROWS:
            yield batch
            batch, size = [], 0
        batch.append(component)
        size += len(component.ids)
    if batch:
        yield batch


def _stars(records, vectors: np.ndarray, root: str, settings: Settings, distinct: set) -> list[Group]:
    """Split one connected component into keeper-centred groups (no member joins through another)."""
    candidates = [_candidate(r, root) for r in records]
    missing = [not os.path.lexists(c.path) for c in candidates]
    remaining = list(range(len(records)))
    groups = []
    while len(remaining) > 1:
        eligible = [i for i in remaining if not missing[i] and not records[i].blank]  # a blank one keeps nothing
        if not eligible:
            break
        chosen, kept, whys = choose([candidates[i] for i in eligible], settings.rules)
        keeper = eligible[chosen]
        why_of = dict(zip(eligible, whys))
        scores = vectors[remaining] @ vectors[keeper]
        taken, digests = [keeper], [records[keeper].digest]
        for i, score in zip(remaining, scores.tolist()):
            if i == keeper or score < settings.threshold:
                continue
            if any(_said_distinct(records[i].digest, d, distinct) for d in digests):
                continue  # a user said these are not duplicates: never in one group
            taken.append(i)
            digests.append(records[i].digest)
        gone = set(taken)
        remaining = [i for i in remaining if i not in gone]
        if len(taken) < 2:
            continue
        members = [_member(records[i], candidates[i], 1.0 if i == keeper else float(vectors[i] @ vectors[keeper]),
                           i == keeper, kept if i == keeper else why_of.get(i, ""), records[keeper], missing[i], settings)
                   for i in taken]
        groups.append(Group(_kind(members), members))
    return groups


def _exact_group(store, records, settings: Settings) -> Group | None:
    root = str(store.root)
    candidates = [_candidate(r, root) for r in records]
    missing = [not os.path.lexists(c.path) for c in candidates]
    eligible = [i for i in range(len(records)) if not missing[i]]
    if not eligible:
        return None
    chosen, kept, whys = choose([candidates[i] for i in eligible], settings.rules)
    keeper = eligible[chosen]
    why_of = dict(zip(eligible, whys))
    order = [keeper] + [i for i in range(len(records)) if i != keeper]
    members = [_member(records[i], candidates[i], 1.0, i == keeper, kept if i == keeper else why_of.get(i, ""),
                       records[keeper], missing[i], settings) for i in order]
    return Group(EXACT, members)


def _member(record, candidate: Candidate, score: float, is_keeper: bool, why: str, keeper_record, missing: bool,
            settings: Settings) -> Member:
    """A member with its decision: kept (keeper, protected, near-blank), missing, or proposed, and why."""
    keep, reason = True, why
    if not is_keeper:
        folder = protected(candidate.path, settings.protect)
        same = record.digest is not None and record.digest == keeper_record.digest
        if missing:
            keep, reason = False, "missing: in the store but not on disk (a stale entry); nothing is done to it"
        elif folder is not None:
            reason = f"kept: under the protected folder {folder}"
        elif record.blank or keeper_record.blank:
            reason = "kept: near-blank, it looks like every other blank image; never proposed"
        else:
            keep = False
            what = "an exact copy of the keeper" if same else f"a near duplicate of the keeper ({score:.3f})"
            reason = f"proposed: {what}; {why}"
    return Member(record.id, record.path, candidate.path, score, keep, reason, record.size, record.width, record.height,
                  record.mtime_ns, record.digest, missing)


def _kind(members: list[Member]) -> str:
    digests = {m.digest for m in members}
    return EXACT if len(digests) == 1 and None not in digests else NEAR


def _candidate(record, root: str) -> Candidate:
    return Candidate(record.path, os.path.join(root, record.path), record.size, record.width, record.height,
                     record.mtime_ns, record.taken_ns)


def _said_distinct(a: str | None, b: str | None, distinct: set) -> bool:
    if a is None or b is None or a == b:
        return False
    return (min(a, b), max(a, b)) in distinct
