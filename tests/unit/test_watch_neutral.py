"""watching.py is platform-neutral (#8): what answers event triggers comes from Backend.watch_events()."""
import ast
from pathlib import Path

import dumplib.watching

SOURCE = Path(dumplib.watching.__file__).read_text(encoding="utf-8")


def test_watching_has_no_platform_branch_and_imports_no_backend():
    tree = ast.parse(SOURCE)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "platform":
            raise AssertionError(f"line {node.lineno}: a platform branch in watching.py")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("_linux", "_windows")):
            raise AssertionError(f"line {node.lineno}: watching.py imports a backend ({node.module})")


def test_this_backend_serves_watching():
    from dumplib._backend import get_backend

    support = get_backend().watch_events()
    for method in ("source", "launch_held", "let_run", "cpu_seconds"):
        assert callable(getattr(support, method)), method
