"""The docs are true: every Python example runs in a fresh process, every shell example names commands,
options, scripts and extras that exist, every link resolves, and the generated pages are current."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from lookalike.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def blocks(language: str) -> list[tuple[str, str]]:
    """(where, code) of every fenced block in that language, across README.md, ARCHITECTURE.md and docs/."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


@pytest.mark.slow
@pytest.mark.parametrize("where, code", blocks("python"), ids=[w for w, _ in blocks("python")])
def test_every_python_example_runs_in_a_fresh_process(where, code, tmp_path):
    """Each runs alone, from a folder holding a copy of examples/photos as `photos`."""
    shutil.copytree(ROOT / "examples" / "photos", tmp_path / "photos", ignore=shutil.ignore_patterns(".lookalike"))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{where} failed:\n{done.stderr[-3000:]}"


def _commands() -> list[tuple[str, list[str]]]:
    """(where, words) of every command line in the shell examples, comments and prompts taken off."""
    lines = []
    for where, code in blocks("bash"):
        for line in code.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            for part in re.split(r"\s*&&\s*", line):
                if part:
                    lines.append((where, part.split()))
    return lines


def test_every_shell_example_names_what_exists():
    """`lookalike CMD --opt`: the command and its options; `python X.py`, `scripts/...`: the file; extras: pyproject's."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    problems = []
    for where, words in _commands():
        if words[0] == "lookalike":
            command = main.commands.get(words[1]) if len(words) > 1 else None
            if command is None:
                problems.append(f"{where}: no command {' '.join(words[:2])}")
                continue
            names = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
            problems += [f"{where}: lookalike {words[1]} has no option {w}" for w in words[2:]
                         if w.startswith("-") and w.split("=")[0] not in names]
        elif words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
            if not (ROOT / words[1]).is_file():
                problems.append(f"{where}: no file {words[1]}")
        elif words[0].startswith("scripts/") and not (ROOT / words[0]).is_file():
            problems.append(f"{where}: no script {words[0]}")
        elif words[:2] == ["pip", "install"]:
            for extra in re.findall(r"\[([\w,]+)\]", " ".join(words)):
                problems += [f"{where}: no extra {e}" for e in extra.split(",") if e not in extras]
    assert problems == []


def test_the_readme_quick_start_runs(tmp_path):
    """The quick start's own commands, on a copy of the example photos, as a new user runs them."""
    shutil.copytree(ROOT / "examples" / "photos", tmp_path / "examples" / "photos",
                    ignore=shutil.ignore_patterns(".lookalike"))
    quick = next(code for where, code in blocks("bash") if "lookalike index examples/photos" in code)
    for part in re.split(r"\s*&&\s*", quick.strip()):
        if part.startswith("lookalike"):
            done = subprocess.run([sys.executable, "-m", "lookalike", *part.split()[1:]], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{part}:\n{done.stderr[-2000:]}"
    assert "chelsea.jpg" in done.stdout.splitlines()[1]  # the near-duplicate comes first


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_links_every_docs_page():
    readme = ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in LINK.findall(readme.read_text())}
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked] == []


def test_the_generated_docs_are_current():
    """docs/cli-reference.md (every --help) and ARCHITECTURE.md's codemap (every module's docstring)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_codemap_names_every_module():
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    codemap = architecture[architecture.index("<!-- codemap -->"):]
    listed, folder = set(), None
    for line in codemap.splitlines():
        if line.startswith("**`"):
            folder = line.strip("*`/")
        elif line.startswith("- `"):
            listed.add(f"{folder}/{line[3:line.index('`', 3)]}")
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lookalike").rglob("*.py")}
    assert sorted(modules - listed) == [] and sorted(listed - modules) == []


def test_the_duplicates_walk_through_runs_as_written(tmp_path):
    """docs/dupes.md's walk-through, line by line, in a folder holding a copy of examples/photos."""
    shutil.copytree(ROOT / "examples" / "photos", tmp_path / "examples" / "photos",
                    ignore=shutil.ignore_patterns(".lookalike"))
    page = (ROOT / "docs" / "dupes.md").read_text()
    walk = next(code for match in BLOCK.finditer(page) if match.group(1) == "bash" for code in [match.group(2)]
                if "lookalike undo --store my-photos" in code)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for line in walk.splitlines():
        command = line.split("  #")[0].strip()
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}:\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    groups, plan, moved, restored = outputs[3], outputs[4], outputs[5], outputs[7]
    assert "group 1 (near, 3 images)" in groups and "chelsea-again.jpg" in groups and "an exact copy of the keeper" in groups
    assert "plan: " in plan and "chelsea" in plan
    count = int(moved.split("moved ")[1].split(" files")[0])
    assert count >= 1 and f"restored {count} files" in restored
    assert list((tmp_path / "duplicates").rglob("*.jpg")) == []
    assert all((tmp_path / "my-photos" / n).exists() for n in ("chelsea.jpg", "chelsea-again.jpg", "chelsea-copy.jpg"))
