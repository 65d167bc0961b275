"""The Python dumplib's own child processes run: the binary running this process (a snapshot's
tracer, the reader child of core/far.py), and the interpreter the postmortem handler names.

sys.executable is not always that. In a program that embeds Python, it is what the program told
Python (uWSGI: its own path), or, where it told nothing, whatever `python3` a search of PATH found
(any other install, a pyenv shim, a script someone put first on PATH). Run with a child's arguments
(`-I -S -c CODE ...`), as root, that would do whatever it does. And after a routine upgrade of the
interpreter on disk (dpkg renames a new file over it) the file is not the binary running dumplib.

So children run /proc/self/exe, the very binary running this process (deleted or not: the kernel
keeps it), and only where that binary is named as a Python interpreter: an embedding program (uWSGI,
a C program calling Py_Initialize) is not, whatever its sys.executable says. Its argv[0] is
sys.executable, from which the child finds the same standard library. The postmortem handler,
started by the kernel long after, names a file: sys.executable, only while it is that binary."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os
import re
from typing import List, Optional, Tuple

#: Names of Python interpreters: python, python3, python3.11, python3.13t, Debian's python3.11-dbg.
_NAME = re.compile(r"python(\d+(\.\d+)?)?[a-z]?(-dbg)?")
#: What the kernel appends to /proc/PID/exe's target once the file was removed or renamed over.
_DELETED = " (deleted)"
SELF_EXE = "/proc/self/exe"


def running_binary() -> str:
    """The path of the binary this process runs, as the kernel names it ('' if /proc cannot tell),
    without the " (deleted)" of a file upgraded on disk since."""
    try:
        target = os.readlink(SELF_EXE)
    except OSError:
        return ""
    return target[: -len(_DELETED)] if target.endswith(_DELETED) else target


def child_command(*args: str) -> Optional[Tuple[str, List[str]]]:
    """(executable, argv) that run this very Python with *args* (`-I -S -c CODE ...`): /proc/self/exe,
    with sys.executable (or the binary's own path) as argv[0]; None where the binary running this
    process is not named as a Python interpreter (an embedding program), which is never run so."""
    binary = running_binary()
    if not binary or not _NAME.fullmatch(os.path.basename(binary)):
        return None
    return SELF_EXE, [sys.executable or binary, *args]


def python_interpreter() -> Optional[str]:
    """sys.executable, for a command line that outlives this process (the postmortem handler the kernel
    starts at a crash), when it names the binary running this process (the same file) and that binary
    is named as a Python interpreter; else None."""
    exe = sys.executable
    if not exe or child_command() is None or not os.access(exe, os.X_OK):
        return None
    try:
        return exe if os.path.samefile(exe, SELF_EXE) else None
    except OSError:  # gone, or /proc not mounted: nothing to prove it by
        return None


def not_an_interpreter() -> str:
    """Why there is no interpreter to run, for a message."""
    binary = running_binary() or "a binary /proc does not name"
    if child_command() is None:
        return (f"dumplib runs inside {binary}, which is not a Python interpreter (a program that embeds Python), and"
                " no child is started from it with a child's arguments")
    return (f"sys.executable ({sys.executable or 'empty'}) is not the binary running dumplib ({binary}): replaced on"
            " disk since it started, or a program that embeds Python and named another")
