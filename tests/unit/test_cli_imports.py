"""The CLI's import graph goes one way: app.py -> command modules -> shared helpers, with no circle.

Read from the source with `ast` (every import, those inside functions too: an import moved into a
function to dodge a circle is still a circle), so the test sees what a reader sees, not what
happens to be in sys.modules.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

CLI = Path(__file__).resolve().parents[2] / "cli"
PACKAGE = "dumplib_cli"  # what pyproject.toml's package-dir makes of cli/


def _edges(source: str, modules: Set[str]) -> Set[str]:
    """The cli modules *source* imports: relative imports and absolute `dumplib_cli.` ones."""
    out: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and node.module is not None
                                   and (node.module == PACKAGE or node.module.startswith(PACKAGE + "."))):
                inside = node.module if node.level == 1 else node.module[len(PACKAGE) + 1:]  # type: ignore[index]
                if inside:  # from .x import y, from dumplib_cli.x import y
                    out.add(inside.split(".")[0])
                else:  # from . import x, from dumplib_cli import x: x may be a module
                    out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith(PACKAGE + "."))
    return out & modules


def import_graph(root: Path = CLI) -> Dict[str, Set[str]]:
    """Module name (file stem) -> the cli modules it imports."""
    files = {p.stem: p for p in sorted(root.glob("*.py"))}
    return {name: _edges(path.read_text(), set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle in *graph* as [a, b, ..., a], or None."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_is_read_at_all():
    # Without this, a parser that saw no import would pass the cycle test below vacuously.
    graph = import_graph()
    assert {"app", "dump", "watch", "postmortem", "_common", "_fastparse"} <= set(graph), sorted(graph)
    assert {"dump", "estimate", "info", "ps", "watch", "postmortem", "_fastparse"} <= graph["app"], graph["app"]
    assert "_common" in graph["watch"] and "_common" in graph["dump"]


def test_no_import_circle_among_cli_modules():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_shared_helpers_import_no_command_and_nothing_imports_app():
    # The arrows go down only: a helper (a _module) imports helpers, and only the entry points
    # (__main__) import app.py, which assembles the commands.
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith("_") and not name.startswith("__"):
            assert all(m.startswith("_") for m in imported), (name, sorted(imported))
        if name not in ("__main__",):
            assert "app" not in imported, f"{name} imports app.py back"


def test_the_cycle_finder_finds_cycles(tmp_path):
    # The finder itself, on a made-up package: a circle through a function-level import and
    # through an absolute dumplib_cli import, and none where arrows only go down.
    (tmp_path / "app.py").write_text("from . import a\n")
    (tmp_path / "a.py").write_text("def f():\n    from .b import x\n")
    (tmp_path / "b.py").write_text("import dumplib_cli.a\n")
    (tmp_path / "c.py").write_text("from ._h import y\n")
    (tmp_path / "_h.py").write_text("import json\n")
    graph = import_graph(tmp_path)
    assert graph["app"] == {"a"} and graph["a"] == {"b"} and graph["b"] == {"a"}
    assert find_cycle(graph) == ["a", "b", "a"]
    (tmp_path / "b.py").write_text("from dumplib_cli import _h\n")
    assert find_cycle(import_graph(tmp_path)) is None


def _int_literals(node: ast.AST) -> List[int]:
    """The integers written in *node*, but not an index (``stopped_by[0]`` is no exit code)."""
    indices = {id(n.slice) for n in ast.walk(node) if isinstance(n, ast.Subscript)}
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and type(n.value) is int
            and id(n) not in indices]


def test_exit_codes_are_written_in_the_table_only():
    # An exit code is a name from _common.py's table (EXIT_USAGE, exit_code_for...), never a number
    # written where it is used: Exit(2), Exit(128 + n), {"exit_code": 2}.
    found = []
    for path in sorted(CLI.glob("*.py")):
        if path.name == "_common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "Exit", "SystemExit", "exit"):
                found += [(path.name, node.lineno, v) for arg in node.args for v in _int_literals(arg)]
            if isinstance(node, ast.Dict):
                found += [(path.name, node.lineno, v) for k, v in zip(node.keys, node.values)
                          if isinstance(k, ast.Constant) and k.value == "exit_code" for v in _int_literals(v)]
    assert found == [], found
