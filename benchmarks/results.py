"""Benchmark results on disk: one JSON file per run in ``benchmarks/results/``, and the docs' tables
and figures rendered from those files, so every figure the docs show can be traced to a run.

A benchmark calls ``save(name, settings, figures, layout)``. ``figures`` holds every number
measured; ``layout`` names the module (``bench_search``, ``featurize_report`` ...) whose
``tables(figures, settings)`` turns them into the tables a reader sees, as
``{table_id: {"columns": [...], "rows": [[...]]}}``. No table is stored: ``--write`` and
``--check`` render every table from the figures, with the layout as it is now. A page marks
where each table goes, and each figure quoted in its prose:

    <!-- results: featurize_cpu/end_to_end -->
    | ... the table, written by `python benchmarks/results.py --write` ... |
    <!-- /results -->

    lookalike's search took <!-- figure: search/search.ratio.median:.2f -->1.13<!-- /figure -->x ...

``featurize_cpu`` names ``benchmarks/results/featurize_cpu.json``, ``end_to_end`` one of its
tables; ``search.ratio.median`` a path into ``search.json``'s figures (keys, or list
positions, joined by dots) and ``.2f`` the format it is shown in (Python's format spec;
none: as it is). Every Markdown page under ``docs/`` and ``README.md`` is searched.
``python benchmarks/results.py --check`` exits non-zero where a page differs from the JSON,
or names a table or figure that no JSON holds (the test suite runs it); ``--write`` rewrites
the marked tables and figures; either takes pages to work on instead (``--check docs/serve.md``).

A result is written only from a clean tree: ``save`` refuses (one line, exit 1) when ``git
status`` shows uncommitted changes to tracked files outside ``benchmarks/results/``, unless
the benchmark was given ``--dirty``, which the JSON records (``"dirty": true`` and the diff's
stat). Each benchmark checks this at its start too (``check_tree``), so that no long run is
lost to it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
PERFORMANCE = ROOT / "docs" / "performance.md"  # where most tables live
BLOCK = re.compile(r"(<!-- results: (?P<key>[\w.-]+)/(?P<table>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)
FIGURE = re.compile(r"(<!-- figure: (?P<key>[\w.-]+)/(?P<path>[^:>]+?)(?::(?P<format>[^>]*?))? -->)(?P<body>.*?)"
                    r"(<!-- /figure -->)", re.DOTALL)
PACKAGES = ("lookalike", "torch", "torchvision", "onnxruntime", "faiss-cpu", "numpy", "pillow", "ray", "fastapi", "timm")
OUTPUTS = "benchmarks/results"  # changes here are results, not code: they never make a tree dirty


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dirty`` and ``--results DIR``, which every benchmark takes."""
    parser.add_argument("--dirty", action="store_true",
                        help="save even with uncommitted changes to tracked files (recorded in the JSON)")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR",
                        help="where to write NAME.json (default: benchmarks/results)")


def check_tree(dirty: bool = False, repo: Path = ROOT) -> dict:
    """The code's commit and whether the tree has uncommitted changes; refuses a dirty tree unless ``dirty``.

    Raises:
        SystemExit: uncommitted changes to tracked files (or no git checkout) and ``dirty`` not given.
    """
    exclude = ["--", ".", f":(exclude){OUTPUTS}"]
    try:
        head = _git(repo, "rev-parse", "--short", "HEAD")
        changes = _git(repo, "status", "--porcelain", "--untracked-files=no", *exclude)
        stat = _git(repo, "diff", "--stat", "HEAD", *exclude) if changes else ""
    except (OSError, subprocess.CalledProcessError):
        head, changes, stat = "unknown", "?", f"unknown: {repo} is not a git checkout"
    if changes and not dirty:
        what = stat.splitlines()[-1].strip() if stat and head != "unknown" else stat
        raise SystemExit(f"refusing to save results from a tree with uncommitted changes ({what}): "
                         f"commit them, or pass --dirty to record them in the JSON")
    state = {"commit": head, "dirty": bool(changes)}
    if changes:
        state["diff_stat"] = stat
    return state


def _git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def commit() -> str:
    """The short commit of the code, with ``-dirty`` when tracked files have uncommitted changes."""
    state = check_tree(dirty=True)
    return state["commit"] + ("-dirty" if state["dirty"] else "")


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
    torch = sys.modules.get("torch")  # a benchmark that ran on a GPU imported it; one that did not needs no GPU
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def save(name: str, settings: dict, figures: dict, layout: str, folder: Path = RESULTS, dirty: bool = False,
         repo: Path = ROOT) -> Path:
    """Write ``folder/name.json`` with the hardware, versions, commit, date and layout; returns its path.

    ``layout`` names the module whose ``tables(figures, settings)`` renders the run; it is called
    here once, so that a run whose tables can't be rendered fails now, not in the docs.

    Raises:
        SystemExit: the tree has uncommitted changes and ``dirty`` is not given; the run is kept in
            a temporary file, which the message names.
    """
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    measured = {"hardware": hardware(), "versions": versions(), "settings": settings, "figures": figures}
    measured = json.loads(json.dumps(measured, default=_plain))  # as it will be read back
    tables({"layout": layout, **measured})
    try:
        state = check_tree(dirty, repo)
    except SystemExit as refused:
        kept = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".json")[1])
        kept.write_text(json.dumps({"benchmark": name, "layout": layout, "date": date, **measured}, indent=2) + "\n")
        raise SystemExit(f"{refused} (this run is kept in {kept})") from None
    record = {"benchmark": name, "layout": layout, "date": date, **state, **measured}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def tables(record: dict) -> dict:
    """The record's tables, rendered from its figures by its layout module's ``tables(figures, settings)``."""
    layout = record.get("layout")
    if not layout:
        raise KeyError("the record names no layout module")
    if str(HERE) not in sys.path:  # the layout modules live beside this one
        sys.path.insert(0, str(HERE))
    return importlib.import_module(layout).tables(record["figures"], record.get("settings", {}))


def figure(record: dict, path: str):
    """The value at ``path`` (keys and list positions joined by dots) in the record's figures.

    Raises:
        KeyError: no figure there.
    """
    value = record["figures"]
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"no figure {path!r} (nothing at {part!r})")
    return value


def markdown(table: dict) -> str:
    """A table as GitHub markdown: first column left-aligned, the others right-aligned."""
    columns = table["columns"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def caption(record: dict) -> str:
    """The line under a table: which run, when, at which commit, on what."""
    code = f"commit {record['commit']}" + (", with uncommitted changes" if record.get("dirty") else "")
    note = f"; {record['note']}" if record.get("note") else ""
    return (f"<sub>{record['benchmark']}, {record['date'][:10]}, {code}, {record['hardware']['cores']} cores "
            f"({record['hardware']['cpu']}){note}</sub>\n")


def pages() -> list[Path]:
    """The Markdown pages that may hold results blocks: ``docs/*.md`` (performance.md first), then README.md."""
    docs = sorted((ROOT / "docs").glob("*.md"), key=lambda path: (path != PERFORMANCE, path.name))
    return docs + [ROOT / "README.md"]


def render(text: str, folder: Path = RESULTS) -> tuple[str, list[str]]:
    """``text`` (a page) with every results block and figure rendered from its JSON, and the problems found."""
    problems: list[str] = []
    records: dict[str, dict | Exception] = {}

    def load(key: str) -> dict:
        if key not in records:
            try:
                records[key] = json.loads((folder / f"{key}.json").read_text())
            except (OSError, ValueError) as e:
                records[key] = e
        if isinstance(records[key], Exception):
            raise records[key]
        return records[key]

    def table(match: re.Match) -> str:
        key, name = match["key"], match["table"]
        try:
            record = load(key)
            body = markdown(tables(record)[name]) + "\n" + caption(record)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
            problems.append(f"{key}/{name}: no such table in {key}.json ({type(e).__name__}: {e})")
            return match.group(0)
        return match.group(1) + body + match.group(5)

    def value(match: re.Match) -> str:
        key, path, fmt = match["key"], match["path"], match["format"] or ""
        try:
            shown = format(figure(load(key), path), fmt)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{key}/{path}: no such figure in {key}.json ({type(e).__name__}: {e})")
            return match.group(0)
        return match.group(1) + shown + match.group(6)

    return FIGURE.sub(value, BLOCK.sub(table, text)), problems


def check(page: Path | None = None, folder: Path = RESULTS) -> list[str]:
    """Where a page's tables and figures differ from the JSON files (empty when they agree); every page by default."""
    if page is None:
        return [problem for each in pages() if each.is_file() for problem in check(each, folder)]
    text = page.read_text()
    rendered, problems = render(text, folder)
    problems = [f"{_shown(page)}: {problem}" for problem in problems]
    for pattern, what in ((BLOCK, "table"), (FIGURE, "figure")):
        for before, after in zip(pattern.finditer(text), pattern.finditer(rendered)):
            if before.group(0) != after.group(0):
                where = f"{before['key']}/{before['table'] if what == 'table' else before['path']}"
                problems.append(f"{_shown(page)}: {where}: the {what} differs from {before['key']}.json; "
                                f"run `python benchmarks/results.py --write`")
    return problems


def write(page: Path, folder: Path = RESULTS) -> list[str]:
    """Rewrite a page's tables and figures from the JSON files; the problems found (those are left as they were)."""
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
    group.add_argument("--write", action="store_true", help="rewrite the pages' tables and figures from the JSON")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR", help="the JSON files (default: benchmarks/results)")
    parser.add_argument("pages", nargs="*", type=Path,
                        help="Markdown files to work on (default: every docs/*.md page and README.md)")
    args = parser.parse_args()
    chosen = args.pages or [page for page in pages() if page.is_file()]
    problems = []
    for page in chosen:
        problems += write(page, args.results) if args.write else check(page, args.results)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
