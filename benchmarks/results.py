"""Benchmark results on disk: one JSON file per run in ``benchmarks/results/``, and the docs'
tables rendered from those files, so every figure the docs show can be traced to a run.

A benchmark calls ``save(name, settings, figures, tables)``. ``figures`` holds every number
measured; ``tables`` the ones a reader sees, as ``{table_id: {"columns": [...], "rows": [[...]]}}``
with cells already formatted as strings. A page marks where each table goes:

    <!-- results: featurize_cpu/end_to_end -->
    | ... the table, written by `python benchmarks/results.py --write` ... |
    <!-- /results -->

``featurize_cpu`` names ``benchmarks/results/featurize_cpu.json``, ``end_to_end`` one of its
tables. The tables live in ``docs/performance.md``, and beside the text they belong to in
``docs/finetune.md``, ``docs/scale.md`` and ``docs/serve.md``: every Markdown page under
``docs/`` and ``README.md`` is searched for blocks. ``python benchmarks/results.py --check``
exits non-zero where a page differs from the JSON (the test suite runs it), ``--write``
rewrites those blocks; either takes pages to work on instead (``--check docs/serve.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
PERFORMANCE = ROOT / "docs" / "performance.md"  # where most tables live
BLOCK = re.compile(r"(<!-- results: (?P<key>[\w.-]+)/(?P<table>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
PACKAGES = ("lookalike", "torch", "torchvision", "onnxruntime", "faiss-cpu", "numpy", "pillow", "ray", "fastapi", "timm")


def hardware() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"cpu": cpu, "cores": cores, "memory_gib": _memory_gib(), "python": platform.python_version(),
            "system": platform.platform()}
    if hasattr(os, "getloadavg"):  # at save time: a busy machine (other jobs on the cores) shows here
        info["load_average_1_5_15_min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def versions() -> dict:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def save(name: str, settings: dict, figures: dict, tables: dict | None = None, folder: Path = RESULTS) -> Path:
    """Write ``folder/name.json`` with the hardware, versions, commit and date; returns its path."""
    record = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "hardware": hardware(),
        "versions": versions(),
        "settings": settings,
        "figures": figures,
        "tables": tables or {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=_plain) + "\n")
    return path


def markdown(table: dict) -> str:
    """A table as GitHub markdown: first column left-aligned, the others right-aligned."""
    columns = table["columns"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def pages() -> list[Path]:
    """The Markdown pages that may hold results blocks: ``docs/*.md`` (performance.md first), then README.md."""
    docs = sorted((ROOT / "docs").glob("*.md"), key=lambda path: (path != PERFORMANCE, path.name))
    return docs + [ROOT / "README.md"]


def render(text: str, folder: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` (a page) with every results block rendered from its JSON, and the problems found."""
    problems = []

    def replace(match: re.Match) -> str:
        key, table = match["key"], match["table"]
        path = folder / f"{key}.json"
        try:
            record = json.loads(path.read_text())
            body = markdown(record["tables"][table])
            note = f"<sub>{record['benchmark']}, {record['date'][:10]}, commit {record['commit']}, " \
                   f"{record['hardware']['cores']} cores ({record['hardware']['cpu']})</sub>\n"
            body += "\n" + note
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{key}/{table}: no such table in {path.name} ({type(e).__name__}: {e})")
            return match.group(0)
        return match.group(1) + body + match.group(5)

    return BLOCK.sub(replace, text), problems


def check(page: Path | None = None, folder: Path = RESULTS) -> list[str]:
    """Where a page's results blocks differ from the JSON files (empty when they agree); every page by default."""
    if page is None:
        return [problem for each in pages() if each.is_file() for problem in check(each, folder)]
    text = page.read_text()
    rendered, problems = render(text, folder)
    problems = [f"{_shown(page)}: {problem}" for problem in problems]
    for before, after in zip(BLOCK.finditer(text), BLOCK.finditer(rendered)):
        if before.group(0) != after.group(0):
            problems.append(f"{_shown(page)}: {before['key']}/{before['table']}: the table differs from "
                            f"{before['key']}.json; run `python benchmarks/results.py --write`")
    return problems


def write(page: Path, folder: Path = RESULTS) -> list[str]:
    """Rewrite a page's results blocks from the JSON files; the problems found (those blocks are left as they were)."""
    text = page.read_text()
    rendered, problems = render(text, folder)
    if rendered != text:
        page.write_text(rendered)
    return [f"{_shown(page)}: {problem}" for problem in problems]


def _shown(page: Path) -> str:
    try:
        return str(page.resolve().relative_to(ROOT))
    except ValueError:
        return str(page)


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="exit 1 where a page differs from the JSON")
    group.add_argument("--write", action="store_true", help="rewrite the pages' results blocks from the JSON")
    parser.add_argument("pages", nargs="*", type=Path,
                        help="Markdown files to work on (default: every docs/*.md page and README.md)")
    args = parser.parse_args()
    chosen = args.pages or [page for page in pages() if page.is_file()]
    problems = []
    for page in chosen:
        problems += write(page) if args.write else check(page)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
