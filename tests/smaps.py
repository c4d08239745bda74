"""How much of a file this process has mapped in: what warming an index must change."""

from __future__ import annotations

import os


def mapped_kib(path: str | os.PathLike) -> int:
    """KiB resident in this process of its mappings of ``path`` as it is now (``Rss`` in /proc/self/smaps).

    Mappings of a file since replaced (named ``path (deleted)``) are not counted.
    """
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and not fields[0].endswith(":"):  # a mapping's header: range, perms, offset, dev, inode[, path]
                inside = len(fields) == 6 and fields[5] == os.fspath(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total
