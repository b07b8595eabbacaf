"""The package's import graph: no module imports a private name of another, and no two modules import each other
(directly or in a circle), counting imports inside functions too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "featkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every featkit import in the file."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("featkit"):
                continue
            names = [a.name for a in node.names]
            # `from . import x` may import a submodule x rather than a name of the package
            subs = [
                n
                for n in names
                if (PACKAGE.parent / (target.replace(".", "/") + f"/{n}.py")).exists()
                or (PACKAGE.parent / (target.replace(".", "/") + f"/{n}/__init__.py")).exists()
            ]
            for n in subs:
                out.append((f"{target}.{n}", [], node.lineno))
            if len(subs) < len(names):
                out.append((target, [n for n in names if n not in subs], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("featkit")]
    return out


def _graph() -> dict[str, list[tuple[str, list[str], int]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for mod, imports in _graph().items():
        for target, names, line in imports:
            parts = target.split(".")
            private_module = [p for p in parts[1:] if p.startswith("_") and p != "__init__"]
            if private_module:
                bad.append(f"{mod}:{line} imports private module {target}")
            bad += [f"{mod}:{line} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert bad == []


def test_no_import_circle():
    graph = {m: sorted({t for t, _, _ in imps if t != m}) for m, imps in _graph().items()}
    # a package's __init__ importing its own submodules is how packages work; a submodule importing its package
    # back (to reach a name the __init__ defines) closes a circle
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "active"
        for t in graph.get(m, []):
            if t not in graph:
                continue
            if state.get(t) == "active":
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checker_sees_a_private_import_and_a_circle(tmp_path, monkeypatch):
    """The two checks above would fail on a package that has the defects they look for."""
    pkg = tmp_path / "featkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import _helper\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    g = _graph()
    assert ("featkit.b", ["_helper"], 1) in g["featkit.a"] and ("featkit.a", [], 2) in g["featkit.b"]
    for check in (test_no_module_imports_a_private_name_of_another, test_no_import_circle):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a package with the defect")
