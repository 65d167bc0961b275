"""The writer's word that a process held at a debug event may go on.

The debug loop (debugloop.py) dumps a watched process while a debug event holds it: Windows
suspends every thread of a debuggee when it reports an event and resumes them only at
ContinueDebugEvent ("Debugging Events", Microsoft's documentation). That hold must end where the
write's own does, when MiniDumpWriteDump has returned (or, for a snapshot, once the capture is
taken), not after the compressor's last flush, the read-back, the sidecar and the rename. Only the
writer knows that moment, and create_dump takes no argument saying who handed the process over (a
hand-over is not a caller's business). So the loop runs the dump inside ``handed_over(pid,
give_back)`` and the writer (backend.py) calls ``target_runs(pid)`` as soon as it has read all it
needs; *give_back* must be cheap, safe to call more than once, and must not raise (the loop's own
thread calls ContinueDebugEvent: only the debugger thread may). The record lives in the running
context (contextvars), so only the dump the loop runs, on the thread it runs on, can reach it.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import contextlib
import contextvars
from typing import Callable, Iterator, Optional, Tuple

_HANDED: "contextvars.ContextVar[Optional[Tuple[int, Callable[[], None]]]]" = contextvars.ContextVar(
    "dumplib_windows_handed_over", default=None)


@contextlib.contextmanager
def handed_over(pid: int, give_back: Callable[[], None]) -> Iterator[None]:
    """Within the block, a dump of *pid* that has read all it needs calls *give_back*."""
    token = _HANDED.set((pid, give_back))
    try:
        yield
    finally:
        _HANDED.reset(token)


def target_runs(pid: int) -> None:
    """Called by the writer once it needs nothing more of *pid*: the loop holding it lets it go now."""
    handed = _HANDED.get()
    if handed is not None and handed[0] == pid:
        handed[1]()
