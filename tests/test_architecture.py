"""The floors ARCHITECTURE.md states, checked against every import in the package (function-level ones too)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lookalike"
FLOORS = re.compile(r"<!-- floors -->\n(.*?)<!-- /floors -->", re.S)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The lookalike modules ``path`` imports, wherever the import statement sits."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def floors() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(group of each top-level module or package, the groups each group may import), from ARCHITECTURE.md."""
    table = FLOORS.search((ROOT / "ARCHITECTURE.md").read_text()).group(1)
    group_of, allowed = {}, {}
    for line in table.splitlines()[2:]:
        group, members, may = (cell.strip() for cell in line.strip("|").split("|"))
        for member in re.findall(r"`([\w.]+)`", members):
            group_of[member] = group
        allowed[group] = {g.strip() for g in may.split(",")} | {group}
    return group_of, allowed


def group(module: str, group_of: dict[str, str]) -> str | None:
    parts = module.split(".")
    return "doors" if len(parts) == 1 else group_of.get(parts[1])


def test_every_module_belongs_to_a_floor():
    group_of, _ = floors()
    homeless = sorted(m for m in graph() if group(m, group_of) is None)
    assert homeless == [], f"modules in no row of ARCHITECTURE.md's floors: {homeless}"


def test_no_import_goes_against_the_floors():
    group_of, allowed = floors()
    wrong = []
    for module, targets in graph().items():
        mine = group(module, group_of)
        if mine == "doors":  # lookalike/__init__.py opens the public doors, lazily
            continue
        wrong += [f"{module} -> {t}" for t in sorted(targets) if group(t, group_of) not in allowed[mine]]
    assert wrong == [], "imports against ARCHITECTURE.md's floors:\n" + "\n".join(wrong)


def test_no_import_circle_anywhere():
    edges = graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_the_walk_sees_an_import_inside_a_function(tmp_path):
    """The check would be blind to lazy imports if the walker only read module-level ones."""
    nested = PACKAGE / "store" / "layout.py"
    assert "lookalike.atomic" in imports_of(nested, set(graph()) | {"lookalike.atomic"})
    assert "lookalike.featurize.extractor" in graph()["lookalike.indexing"]
    assert "lookalike.serve" in graph()["lookalike.cli.serve"]  # `from ..serve import require_extra`, inside serve()
