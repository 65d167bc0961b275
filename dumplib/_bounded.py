"""Calls that may block in the kernel for good, made in a worker thread that is abandoned after a bound.

A read of another process's /proc/PID/cmdline, environ, maps, smaps or mem takes that process's mmap
lock; when something holds it for good (a thread stuck in a page fault on a stalled FUSE or NFS mount,
and a writer queued behind it), the read waits uninterruptibly. No flag or signal gets the reader out,
so the read is made in a thread of its own and abandoned after *seconds*: the caller gets TimeoutError
(an OSError, so callers that treat an unreadable /proc file as "unknown" need no change). The abandoned
thread finishes whenever the kernel lets it, or dies with the process: those waits are killable.
"""
from __future__ import annotations

import _thread  # not threading: its import costs the one-shot command's start-up
from typing import Any, Callable, Dict, Hashable, List, Optional, TypeVar

__all__ = ["call_within", "stuck"]

T = TypeVar("T")

#: key -> the lock a still-running abandoned call holds: later calls with that key fail at once,
#: so a stuck process costs one bound, not one per read, and no new thread is left behind it.
_abandoned: Dict[Hashable, Any] = {}


def stuck(key: Hashable) -> bool:
    """Whether an earlier call made with *key* was abandoned and has still not returned."""
    lock = _abandoned.get(key)
    if lock is None:
        return False
    if lock.locked():
        return True
    _abandoned.pop(key, None)  # it returned after all: the next call is tried
    return False


def call_within(fn: Callable[[], T], seconds: float, key: Optional[Hashable] = None) -> T:
    """*fn()*'s result, or TimeoutError when it has not returned after *seconds* (or when an abandoned
    call with the same *key* is still running). Exceptions of *fn* are raised here."""
    if key is not None and stuck(key):
        raise TimeoutError(f"an earlier read of {key} is still blocked in the kernel")
    done = _thread.allocate_lock()
    done.acquire()
    box: List[Any] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed to the caller, whatever it is
            box.append((False, exc))
        finally:
            done.release()

    _thread.start_new_thread(run, ())
    if not done.acquire(timeout=seconds):
        if key is not None:
            _abandoned[key] = done
        raise TimeoutError(f"no answer within {seconds:g} s (blocked in the kernel)")
    ok, value = box[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
