"""Labelled images: an ImageFolder layout (one subfolder per class) or a CSV of path,label."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import DatasetError


class LabelledImages(NamedTuple):
    """``paths[i]`` has label ``labels[i]``; ``root`` is the folder the paths live under."""

    paths: list[str]
    labels: list[str]
    root: Path



def read_labelled(source: str | os.PathLike, extensions: frozenset[str]) -> LabelledImages:
    """Read an ImageFolder directory or a ``path,label`` CSV (paths relative to the CSV's folder).

    Raises:
        DatasetError: nothing usable: no images, an unreadable CSV.
    """
    source = Path(source)
    images = _read_csv(source) if source.is_file() else _read_folder(source, extensions)
    if not images.paths:
        raise DatasetError(
            f"no labelled images in {source}: expected one subfolder per class with images in it, "
            f"or a CSV with path,label columns"
        )
    return images


def check_trainable(labels: Sequence[str], folds: int, where: str | os.PathLike) -> list[str]:
    """Raise if no classifier can be trained on ``labels``; return warnings for what will work poorly."""
    counts = Counter(labels)
    if len(counts) < 2:
        only = f"only {next(iter(counts))!r}" if counts else "no readable images"
        raise DatasetError(f"a classifier needs at least two classes with readable images; found {only} in {where}")
    warnings = [
        f"class {label!r} has a single image: it can't be cross-validated and will be hard to learn"
        for label, n in sorted(counts.items())
        if n == 1
    ]
    smallest = min(counts.values())
    if 1 < smallest < folds:
        warnings.append(f"the smallest class has {smallest} images: cross-validating with {smallest} folds, not {folds}")
    return warnings


def _read_folder(root: Path, extensions: frozenset[str]) -> LabelledImages:
    from ..featurize.images.discover import discover

    if not root.is_dir():
        raise DatasetError(f"{root} is neither a folder nor a CSV file")
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for found in discover(folder, extensions):
            paths.append(found.path)
            labels.append(folder.name)
    return LabelledImages(paths, labels, root)


def _read_csv(path: Path) -> LabelledImages:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"{path} needs a header with path and label columns, found {', '.join(rows[0])}")
    unlabelled = [i + 2 for i, row in enumerate(rows) if row.get("path") and not (row.get("label") or "").strip()]
    if unlabelled:
        raise DatasetError(f"{path}: line {unlabelled[0]} has a path but no label ({len(unlabelled)} such lines)")
    base = path.parent
    paths = [str(base / row["path"]) for row in rows if row.get("path")]
    labels = [row["label"].strip() for row in rows if row.get("path")]
    root = Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])) if paths else base
    return LabelledImages(paths, labels, root)
