"""The Python interpreter dumplib's own child processes run (a snapshot's tracer, the reader child of
core/far.py, the postmortem handler the kernel starts): sys.executable, when that is the very Python
running dumplib.

sys.executable is not always that. In a program that embeds Python, it is what the program told
Python (uWSGI: its own path), or, where it told nothing, whatever `python3` a search of PATH found
(any other install, a pyenv shim, a script someone put first on PATH), or even a script's path. Run
with a child's arguments (`-I -S -c CODE ...`), as root, that would do whatever it does: start a
server, run another Python that cannot import this dumplib, or someone's script. So it must be named
as a Python interpreter and be the binary this process runs (/proc/self/exe: the same file, or a copy
of it, as `python -m venv --copies` makes). Each caller has its way without one."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os
import re
from typing import Optional

#: Names of Python interpreters: python, python3, python3.11, python3.13t, Debian's python3.11-dbg.
_NAME = re.compile(r"python(\d+(\.\d+)?)?[a-z]?(-dbg)?")


def python_interpreter() -> Optional[str]:
    """sys.executable when it is a Python interpreter by its name and the binary running this process
    (or a byte-for-byte copy of it), and can be run; else None."""
    exe = sys.executable
    if not exe or not _NAME.fullmatch(os.path.basename(exe)) or not os.access(exe, os.X_OK):
        return None
    try:
        if os.path.samefile(exe, "/proc/self/exe") or _same_bytes(exe, "/proc/self/exe"):
            return exe
    except OSError:  # gone, or /proc not mounted: nothing to prove it by
        pass
    return None


def _same_bytes(a: str, b: str) -> bool:
    """A copy (a venv made with --copies): the same size and bytes. The binary is small where libpython
    is shared (~20 KiB) and tens of MiB at most where it is not; read only when the sizes agree."""
    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def not_an_interpreter() -> str:
    """Why there is no interpreter to run, for a message."""
    return (f"sys.executable ({sys.executable or 'empty'}) is not the Python interpreter running dumplib (in a program"
            " that embeds Python it names that program, or whatever python3 was first on PATH), and is never run with"
            " a child's arguments")
