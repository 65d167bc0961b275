"""The writer's word that it has let a handed-over process go.

The signal watcher (signalwatch.py) holds a process at a signal-delivery-stop and hands it to
create_dump in group-stop; it takes the process back afterwards to deliver the signal. That stop must
end where a plain dump's does: when the writer has read the last byte of the process's memory and
let its threads go, not after the compressor's final flush, the read-back, the sidecar and the
rename. Only the writer knows that moment, and it does not know who handed the process over (nor
does create_dump take such an argument: a hand-over is not a caller's business). So the hand-over
runs the dump inside ``handed_over(pid, give_back)`` and the writer calls ``target_runs(pid)`` as
soon as its own stop has ended; *give_back* must be cheap, safe to call more than once, and must not
raise (the watcher's own thread does the work). The record lives in the running context
(contextvars), so only the dump the hand-over runs, on the thread it runs on, can reach it.

The writer calls it once its whole stop is over, never at a snapshot's resume: a snapshot's stopper
stops the target again to reap its clone (none is taken of a handed-over process anyway: it is
stopped already, snapshot/policy.py).
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import contextlib
import contextvars
from typing import Callable, Iterator, Optional, Tuple

_HANDED: "contextvars.ContextVar[Optional[Tuple[int, Callable[[], None]]]]" = contextvars.ContextVar(
    "dumplib_handed_over", default=None)


@contextlib.contextmanager
def handed_over(pid: int, give_back: Callable[[], None]) -> Iterator[None]:
    """Within the block, a dump of *pid* that lets it go calls *give_back*."""
    token = _HANDED.set((pid, give_back))
    try:
        yield
    finally:
        _HANDED.reset(token)


def target_runs(pid: int) -> None:
    """Called by the writer once it has let *pid* go: the watcher that handed it over takes it back now."""
    handed = _HANDED.get()
    if handed is not None and handed[0] == pid:
        handed[1]()
