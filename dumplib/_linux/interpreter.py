"""The Python interpreter dumplib's own child processes run (a snapshot's tracer, the reader child of
core/far.py, the postmortem handler the kernel starts): sys.executable, when that is one.

In a program that embeds Python (uWSGI, Blender, a game), sys.executable names that program. Run with
a child's arguments (`-I -S -c CODE ...`), it would do whatever that program does with them, as root:
start a server, open a window, or read `-c` as its own option. Each caller has its way without one."""
from __future__ import annotations

import os
import re
import sys
from typing import Optional


def python_interpreter() -> Optional[str]:
    """sys.executable when it is a Python interpreter by its name (python, python3, python3.11,
    python3.13t, Debian's python3.11-dbg...) and can be run, else None."""
    exe = sys.executable
    if exe and re.fullmatch(r"python(\d+(\.\d+)?)?[a-z]?(-dbg)?", os.path.basename(exe)) and os.access(exe, os.X_OK):
        return exe
    return None


def not_an_interpreter() -> str:
    """Why there is no interpreter to run, for a message."""
    return (f"dumplib runs inside {sys.executable or 'a program that does not name itself'}, which is not a Python"
            " interpreter, and must not be run with a child's arguments")
