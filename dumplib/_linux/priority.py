"""A thread's nice value raised for a block and put back: the priority of the work done while a target
is stopped (backend.py's copying thread; snapshot/clone.py's injected clone(), run in a target thread)."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional


class raised:
    """Thread *tid* at nice *nice* for the block, where that is the higher priority and allowed
    (CAP_SYS_NICE, or the thread's RLIMIT_NICE); never lowered. Its own value comes back at the end of
    the block, or at restore() (idempotent). Nice weighs only within one autogroup (session) or cpu
    cgroup: the scheduler shares CPU between groups first (sched(7))."""

    def __init__(self, tid: int, nice: int) -> None:
        self.tid, self.nice = tid, nice
        self.before: Optional[int] = None

    def __enter__(self) -> "raised":
        try:
            current = os.getpriority(os.PRIO_PROCESS, self.tid)  # Linux: a tid names one thread
            if current > self.nice:
                os.setpriority(os.PRIO_PROCESS, self.tid, self.nice)
                self.before = current
        except OSError:  # EPERM without the right to raise it; ESRCH for a thread gone meanwhile
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Back to the thread's own value (idempotent)."""
        before, self.before = self.before, None
        if before is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, self.tid, before)
            except OSError:  # the thread is gone: nothing left to put back
                pass
