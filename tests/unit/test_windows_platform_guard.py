"""The Windows-only modules refuse to import elsewhere with an ImportError, even under `python -O`
(which strips the assert kept for type checkers); the pure-logic ones import on every OS.

Runs on every OS: the probe interpreter is told it runs on Linux before it imports anything of dumplib."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = ROOT / "dumplib" / "_windows"
#: Pure logic and ctypes layouts, no DLL: unit-tested on every OS.
EVERYWHERE = {"__init__", "masks", "policy", "privilege", "snapshot", "structs"}

PROBE = """
import importlib, sys
sys.platform = "linux"  # another OS than Windows, wherever this runs
for name in sys.argv[1:]:
    try:
        importlib.import_module("dumplib._windows." + name)
    except ImportError as exc:
        print(name, "ImportError", exc)
    except BaseException as exc:
        print(name, type(exc).__name__, exc)
    else:
        print(name, "imported")
"""


def test_windows_only_modules_raise_import_error_under_python_o():
    names = sorted(p.stem for p in WINDOWS.glob("*.py"))
    only_windows = [n for n in names if n not in EVERYWHERE]
    assert {"backend", "kernel32", "writer", "inflight", "verify", "capture"} <= set(only_windows)
    done = subprocess.run([sys.executable, "-O", "-c", PROBE, *names], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    seen = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    for name in only_windows:
        assert seen[name] == f"ImportError dumplib._windows.{name} is Windows only", (name, seen[name])
    for name in EVERYWHERE:
        assert seen[name] == "imported", (name, seen[name])
