"""The house rules that keep holding after a restructure (docs/architecture.md): the floors (an import-linter
layers contract in pyproject.toml: the CLI on top, nothing importing back up), no import cycle between modules,
no file over 500 lines, no function over 80 lines (a verb with many options declares them as data: roost.cli.app
`declare`, or generates them from its config dataclass), and backend names compared only in roost.registry.

    pytest tests/test_layout.py
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "roost"
MAX_FILE, MAX_FUNCTION = 500, 80
BACKEND_NAMES = {"sqlite", "postgres", "postgresql", "embedded", "postgresql://", "postgres://"}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))]


def test_floors() -> None:
    """`lint-imports` keeps the layers contract (it fails on any import from a lower floor to a higher one)."""
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, cwd=SRC.parents[1], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_no_import_cycles() -> None:
    import grimp

    graph = grimp.build_graph("roost", exclude_type_checking_imports=True)
    mods = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & mods for m in mods}
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    out.append(comp)
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(edges[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return out


def test_sizes() -> None:
    big_files = [
        f"{p.relative_to(SRC)}: {n}" for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_FILE
    ]
    long_bodies = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION:
                    long_bodies.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {lines}")
    assert not big_files and not long_bodies, big_files + long_bodies


def test_backend_names_compared_in_the_registry_only() -> None:
    """`x == "postgres"`, `x in ("sqlite", …)`, `url.startswith("postgresql://")`: only roost/registry.py."""
    found = []
    for path, tree in _modules():
        if path.name == "registry.py" and path.parent == SRC:
            continue
        for node in ast.walk(tree):
            consts: list[ast.expr] = []
            if isinstance(node, ast.Compare):
                consts = [node.left, *node.comparators]
                consts += [e for c in node.comparators if isinstance(c, ast.Tuple | ast.List | ast.Set) for e in c.elts]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
                consts = list(node.args)
                consts += [e for a in node.args if isinstance(a, ast.Tuple) for e in a.elts]
            if any(isinstance(c, ast.Constant) and str(c.value).lower() in BACKEND_NAMES for c in consts):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")  # type: ignore[attr-defined]
    assert not found
