"""The house's layers, read from the code's own imports (docs/architecture.md).

- No import circle anywhere in dumplib/ or cli/, counting imports inside functions (a lazy import
  that closes a circle is still a circle: it only moves the failure to run time).
- Only the switch (and the two dispatchers that choose a platform module, _psutil and postmortem)
  import a platform folder from the neutral side.
- Nothing below the public entry points picks the platform: the switch is imported by api, targets,
  watching, postmortem and by applications living in a platform folder (the postmortem handlers).
- Neutral modules never branch on the OS (no sys.platform, os.name, psutil's per-OS methods).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"dumplib": ROOT / "dumplib", "dumplib_cli": ROOT / "cli"}
#: Modules that choose a platform module by the OS they run on.
DISPATCHERS = {"dumplib._switch", "dumplib._psutil", "dumplib.postmortem"}
#: Public entry points: they pick the platform (dumplib._switch.current) and pass it down.
ENTRY_POINTS = {"dumplib.api", "dumplib.targets", "dumplib.watching", "dumplib.postmortem"}
#: Text for the shell a user pastes into (cmd.exe or a POSIX shell): the one neutral module that must
#: know which OS it speaks to, for quoting alone.
USER_SHELL = {"dumplib._text"}
#: psutil methods that exist on one OS only: asking for them is a platform branch.
ONE_OS_PSUTIL = {"num_fds", "num_handles", "ionice", "rlimit", "num_ctx_switches_win"}


def _modules() -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> Set[str]:
    """Every module of the house *name* imports, anywhere in it (functions included)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    here = name if _is_package(name) else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles() -> List[List[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            # A package's __init__ importing its own children is how packages work, not a circle.
            if w.startswith(v + ".") and _is_package(v):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_house_has_no_import_circle():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_circle():
    """The test above can fail: a planted back-arrow is found."""
    GRAPH["dumplib.errors"].add("dumplib.api")
    try:
        assert any("dumplib.errors" in group and "dumplib.api" in group for group in _cycles())
    finally:
        GRAPH["dumplib.errors"].discard("dumplib.api")


def _platform_module(name: str) -> bool:
    return name.startswith(("dumplib._linux", "dumplib._windows"))


def test_only_the_dispatchers_import_a_platform_folder():
    for name, deps in GRAPH.items():
        if _platform_module(name) or name in DISPATCHERS:
            continue
        reached = sorted(d for d in deps if _platform_module(d))
        assert not reached, f"{name} imports {reached}: only the switch chooses a platform"


def test_nothing_below_the_entry_points_picks_the_platform():
    for name, deps in GRAPH.items():
        if "dumplib._switch" not in deps or name in ENTRY_POINTS or _platform_module(name):
            continue
        if name.startswith("dumplib_cli") or name == "dumplib":
            continue  # the CLI and the package's own namespace are above the entry points
        raise AssertionError(f"{name} imports the switch: the entry point above it should pass the platform down")


def _neutral_branches(name: str) -> List[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in (("sys", "platform"), ("os", "name"), ("platform", "system")):
                found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in ONE_OS_PSUTIL:
            found.append(f"line {node.lineno}: .{node.attr} (a psutil method of one OS)")
        if isinstance(node, ast.Constant) and node.value in ONE_OS_PSUTIL:
            found.append(f"line {node.lineno}: {node.value!r} (a psutil method of one OS)")
    return found


def test_neutral_modules_never_branch_on_the_os():
    for name in MODULES:
        if _platform_module(name) or name in DISPATCHERS | USER_SHELL or name.startswith("dumplib_cli"):
            continue
        assert _neutral_branches(name) == [], name


def test_the_platform_serves_watching():
    from dumplib._switch import current

    support = current().watch_events()
    assert support is not None
    for method in ("source", "launch_held", "let_run", "cpu_seconds"):
        assert callable(getattr(support, method)), method
