"""The review: resolving duplicate groups from the web app, as ``lookalike dupes --move-to``/``--trash`` does, and undo.

The page sends what the user decided for each group: its keeper (the rules' choice, or
another member the user picked) and the members to remove. Nothing is taken on the page's word:

- the keeper and every member to remove must be members of one group the server finds at
  that threshold for the store's current generation (``Gallery.groups``, the groups
  ``lookalike dupes`` finds); a page showing an older generation is told to reload;
- a member goes only if it is a duplicate of the keeper itself: the same bytes in an exact
  group, or a cosine to the keeper (recomputed from the stored vectors) at the threshold or
  more. A picked keeper never takes along a member that was alike only to the rules' keeper;
  a missing file is never acted on. Those left say why;
- then ``dupes.actions`` plans and applies it: the journal first, each file re-checked against
  the catalog, moved to the quarantine folder (``serve --quarantine DIR``) or to the trash
  (``serve --trash``), never deleted.

"Not duplicates" records a verdict, as ``lookalike distinct`` does; undo is ``lookalike undo``
of the last action. One action runs at a time; under ``serve --watch`` it runs on the
watcher's thread (``Watcher.call``), which holds the store's lock. The guard lets these requests through only
from the server's own page, with the session's token, on loopback or with ``--allow-actions``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..dupes import actions, verdicts
from ..dupes.groups import EXACT, Group, Member
from ..dupes.undo import undo
from ..errors import DuplicatesError
from ..store.store import Store
from .gallery import Gallery


class Decision(NamedTuple):
    """One group as the user left it: the keeper's id and the ids to remove."""

    keeper: int
    remove: list[int]


class Review:
    """Actions on the store's duplicates, for the web app.

    Args:
        store: the store the gallery reads.
        gallery: whose groups the decisions are checked against.
        quarantine: the folder resolved duplicates move to (their paths under the indexed folder kept).
        trash: send them to the OS trash instead.
        display_path: how paths appear in answers.
        writes: runs a function that writes to the store and returns its result; by default
            here and now, under ``serve --watch`` on the watcher's thread.

    Raises:
        DuplicatesError: both ``quarantine`` and ``trash``, or a quarantine folder that is the
            indexed folder itself or inside the store.
    """

    def __init__(self, store: Store, gallery: Gallery, quarantine: str | os.PathLike | None = None,
                 trash: bool = False, display_path: Callable[[str], str] = str,
                 writes: Callable[[Callable[[], Any]], Any] | None = None):
        if quarantine is not None and trash:
            raise DuplicatesError("choose one: --quarantine DIR or --trash")
        if quarantine is not None:  # a folder inside the store or the indexed folder itself is refused now
            actions.plan(store, [], to=quarantine)
        self.store, self.gallery, self.trash, self.display_path = store, gallery, trash, display_path
        self.quarantine = os.fspath(quarantine) if quarantine is not None else None
        self.writes = writes or (lambda fn: fn())
        self._lock = threading.Lock()

    def where(self) -> str | None:
        """Where resolved duplicates go, in words, or None when the server can't resolve."""
        if self.trash:
            return "the trash"
        return self.quarantine

    def resolve(self, threshold: float, k: int, generation: int, decisions: list[Decision]) -> dict:
        """Move (or trash) the members the decisions remove that are duplicates of their keeper; what moved, what stayed and why.

        Raises:
            DuplicatesError: no --quarantine or --trash, groups of another generation, or an id
                that is not in the keeper's group.
            StoreLockedError: another process writes to the store.
        """
        if self.where() is None:
            raise DuplicatesError("this server can't resolve duplicates: start it with --quarantine DIR or --trash")
        with self._lock:
            now, found = self.gallery.groups(threshold, k)
            if now != generation:
                raise DuplicatesError("the store changed since these groups were shown: reload them and decide again")
            groups, left = self._checked(found, decisions, threshold)
            planned = actions.plan(self.store, groups, to=self.quarantine, to_trash=self.trash)
            outcome = self.writes(lambda: actions.apply(self.store, planned, command=["lookalike serve", "resolve"]))
        return {"journal": os.path.basename(outcome.journal), "to": self.where(),
                "moved": [{"path": self.display_path(source)} for source, _ in outcome.moved],
                "left": [{"path": self.display_path(path), "why": why} for path, why in [*left, *outcome.skipped]]}

    def distinct(self, ids: list[int]) -> dict:
        """Record that these images are not duplicates of one another (``lookalike distinct``).

        Raises:
            DuplicatesError: fewer than two images, or one the store has no content hash of.
            UnknownImageError: an id the store doesn't hold.
        """
        paths = [self.gallery.path_of(image_id) for image_id in ids]
        with self._lock:
            pairs = self.writes(lambda: verdicts.record(self.store, paths))
            self.gallery.forget_groups()  # a verdict leaves the store's generation as it was
        return {"pairs": pairs}

    def undo(self) -> dict:
        """Undo the last action (``lookalike undo``): what came back, and what stayed where it is, and why.

        Raises:
            DuplicatesError: nothing to undo, or the last action is undone already.
        """
        with self._lock:
            outcome = self.writes(lambda: undo(self.store))
        return {"journal": os.path.basename(outcome.journal),
                "restored": [{"path": self.display_path(path)} for path in outcome.restored],
                "kept": [{"path": self.display_path(path), "why": why} for path, why in outcome.kept]}

    def _checked(self, found: list[Group], decisions: list[Decision], threshold: float):
        """The groups to act on, each the keeper and the members that are its duplicates; and those left, with why."""
        group_of = {m.id: g for g in found for m in g.members}
        groups, left, decided = [], [], set()
        for decision in decisions:
            group = group_of.get(decision.keeper)
            if group is None:
                raise DuplicatesError(f"image {decision.keeper} is in no duplicate group at {threshold}: reload the groups")
            if group.keeper.id in decided:  # two keepers for one group could remove both copies
                raise DuplicatesError(f"the group of image {decision.keeper} is decided twice: send one decision a group")
            decided.add(group.keeper.id)
            members = {m.id: m for m in group.members}
            strangers = [i for i in decision.remove if i not in members]
            if strangers:
                raise DuplicatesError(f"image {strangers[0]} is not in the group of image {decision.keeper}: reload the groups")
            keeper = members[decision.keeper]
            chosen = [members[i] for i in dict.fromkeys(decision.remove) if i != keeper.id]
            going = []
            for member, score in zip(chosen, self._scores(keeper, chosen)):
                if member.missing:
                    left.append((member.path, "missing from disk"))
                elif group.kind == EXACT or score >= threshold:
                    why = "the same bytes as the keeper" if group.kind == EXACT else f"{score:.3f} to the keeper"
                    going.append(member._replace(keep=False, score=score, reason=f"chosen in review: {why}"))
                else:
                    left.append((member.path, f"only {score:.3f} to the chosen keeper, under {threshold}"))
            if going:
                reason = keeper.reason if keeper.keep else "kept: chosen in review"
                groups.append(Group(group.kind, [keeper._replace(keep=True, score=1.0, reason=reason), *going]))
        return groups, left

    def _scores(self, keeper: Member, members: list[Member]) -> list[float]:
        """Each member's cosine to the keeper, from the stored vectors."""
        if not members:
            return []
        vectors = [self.store.stored(m.id) for m in [keeper, *members]]
        if any(v is None for v in vectors):
            raise DuplicatesError("an image of this group left the store: reload the groups")
        matrix = np.stack([v[1] for v in vectors])
        return [float(s) for s in matrix[1:] @ matrix[0]]

