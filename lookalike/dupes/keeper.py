"""Keeper rules: which copy of a duplicate group to keep, by rules the user orders, each breaking
the ties of the one before, with the reason each member was kept or not.

    pixels          most pixels
    size            largest file
    oldest, newest  by EXIF DateTimeOriginal, else the file's modification time
    shortest-path   the shortest path under the indexed folder
    format:heic,jpg the formats preferred, in that order (jpg also means .jpeg)
    in:DIR          files under DIR first

The default is ``pixels,size,oldest``; the path breaks the last ties, so the choice never
depends on the order files were indexed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import DuplicatesError

DEFAULT_RULES = "pixels,size,oldest"
_NAMES = ("pixels", "size", "oldest", "newest", "shortest-path", "format:...", "in:DIR")
_SAME_FORMAT = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "heif": "heic"}


class Candidate(NamedTuple):
    """What the rules look at in a member: its key under the root, its path, and the catalog's facts."""

    key: str
    path: str
    size: int
    width: int | None
    height: int | None
    mtime_ns: int
    taken_ns: int | None

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    @property
    def when_ns(self) -> int:
        return self.taken_ns if self.taken_ns is not None else self.mtime_ns

    @property
    def format(self) -> str:
        suffix = os.path.splitext(self.key)[1].lower().lstrip(".")
        return _SAME_FORMAT.get(suffix, suffix)


@dataclass(frozen=True)
class Rule:
    """One keeper rule: ``rank`` (lower keeps) and the words for why one member beat another."""

    name: str
    formats: tuple[str, ...] = ()
    folder: str = ""

    def rank(self, c: Candidate):
        if self.name == "pixels":
            return -c.pixels
        if self.name == "size":
            return -c.size
        if self.name == "oldest":
            return c.when_ns
        if self.name == "newest":
            return -c.when_ns
        if self.name == "shortest-path":
            return len(c.key)
        if self.name == "format":
            return self.formats.index(c.format) if c.format in self.formats else len(self.formats)
        return 0 if _under(c.path, self.folder) else 1  # in:DIR

    def why(self, c: Candidate) -> str:
        """What ``c`` has that this rule values, e.g. "most pixels (6000x4000)"."""
        if self.name == "pixels":
            return f"most pixels ({c.width or '?'}x{c.height or '?'})"
        if self.name == "size":
            return f"largest file ({c.size:,} bytes)"
        if self.name in ("oldest", "newest"):
            taken = "taken" if c.taken_ns is not None else "modified"
            return f"{self.name} ({taken} {_date(c.when_ns)})"
        if self.name == "shortest-path":
            return f"shortest path ({len(c.key)} characters)"
        if self.name == "format":
            return f"preferred format ({c.format})"
        return f"under {self.folder}"

    def why_not(self, c: Candidate, keeper: Candidate) -> str:
        """Why ``c`` lost to ``keeper`` on this rule, e.g. "fewer pixels (1000x800 against 6000x4000)"."""
        if self.name == "pixels":
            return f"fewer pixels ({c.width or '?'}x{c.height or '?'} against {keeper.width or '?'}x{keeper.height or '?'})"
        if self.name == "size":
            return f"smaller file ({c.size:,} against {keeper.size:,} bytes)"
        if self.name in ("oldest", "newest"):
            mine, theirs = _dates(c.when_ns, keeper.when_ns)
            return f"{'newer' if self.name == 'oldest' else 'older'} ({mine} against {theirs})"
        if self.name == "shortest-path":
            return f"longer path ({len(c.key)} against {len(keeper.key)} characters)"
        if self.name == "format":
            return f"a less preferred format ({c.format} against {keeper.format})"
        return f"not under {self.folder}"


def parse_rules(text: str | None = None) -> list[Rule]:
    """The rules of ``--keep RULE[,RULE...]``, in order (``format:`` takes the formats up to the next rule).

    Raises:
        DuplicatesError: an unknown rule, or ``format:``/``in:`` with nothing after it.
    """
    rules: list[Rule] = []
    for word in (text or DEFAULT_RULES).split(","):
        word = word.strip()
        if not word:
            continue
        if word.startswith("format:"):
            rules.append(Rule("format", formats=(_format(word[len("format:"):]),)))
        elif word.startswith("in:"):
            if not word[3:]:
                raise DuplicatesError("in: needs a folder, e.g. --keep in:~/Pictures/originals")
            rules.append(Rule("in", folder=os.path.realpath(os.path.expanduser(word[3:]))))
        elif word in ("pixels", "size", "oldest", "newest", "shortest-path"):
            rules.append(Rule(word))
        elif rules and rules[-1].name == "format" and "/" not in word and ":" not in word:
            rules[-1] = Rule("format", formats=rules[-1].formats + (_format(word),))  # format:heic,jpg,png
        else:
            raise DuplicatesError(f"unknown keeper rule {word!r}: use {', '.join(_NAMES)}, comma-separated")
    if any(r.name == "format" and not all(r.formats) for r in rules):
        raise DuplicatesError("format: needs formats in order, e.g. --keep format:heic,jpg,png")
    return rules


def choose(candidates: list[Candidate], rules: list[Rule]) -> tuple[int, str, list[str]]:
    """The keeper among ``candidates``: (its index, why it is kept, why each one is not: "" for the keeper)."""
    order = sorted(range(len(candidates)), key=lambda i: (*(r.rank(candidates[i]) for r in rules), candidates[i].key))
    best = order[0]
    keeper = candidates[best]
    runner_up = candidates[order[1]] if len(order) > 1 else None
    decisive = next((r for r in rules if runner_up is not None and r.rank(keeper) != r.rank(runner_up)), None)
    kept = f"kept: {decisive.why(keeper)}" if decisive else "kept: first by path (every rule ties)"
    reasons = []
    for i, c in enumerate(candidates):
        if i == best:
            reasons.append("")
            continue
        rule = next((r for r in rules if r.rank(c) != r.rank(keeper)), None)
        reasons.append(rule.why_not(c, keeper) if rule else "ties on every rule, after it by path")
    return best, kept, reasons


def _format(word: str) -> str:
    word = word.strip().lower().lstrip(".")
    return _SAME_FORMAT.get(word, word)


def _under(path: str, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)


def _date(ns: int, digits: int = 0) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S") + (f"{when.microsecond / 1e6:.{digits}f}"[1:] if digits else "")


def _dates(a: int, b: int) -> tuple[str, str]:
    """Two times as far as they differ (to the second, else to the microsecond)."""
    digits = 0 if a // 10**9 != b // 10**9 else 6
    return _date(a, digits), _date(b, digits)


def protected(path: str, folders: list[str]) -> str | None:
    """The protected folder ``path`` lies under, if any (``--protect DIR``: never proposed for removal)."""
    return next((folder for folder in folders if _under(path, folder)), None)


def protect_folders(folders) -> list[str]:
    """``--protect DIR`` values as real paths; a folder that does not exist is an error (a typo protects nothing)."""
    found = []
    for folder in folders or ():
        real = os.path.realpath(os.path.expanduser(os.fspath(folder)))
        if not Path(real).is_dir():
            raise DuplicatesError(f"--protect {folder}: no such folder")
        found.append(real)
    return found
