"""The one ask/serve loop of the ptrace layer: other threads ask, the thread that owns an attachment serves.

ptrace answers only the thread that attached (seized) a tracee, so every ptrace call on a stopped
target is made by that one thread: the stopper's tracer thread (ptrace/stopper.py, which the
snapshot's helper process runs too: snapshot/remote.py) and the signal watcher's thread
(signalwatch.py). Any other thread that needs such a call (take a snapshot, let the target go, run a
hand-over) puts it in the owner's Mailbox and waits for the answer; the owner runs what was asked
between its own bounded waits. The asker's wait is bounded by the owner: it gives up at once when
the owner thread has ended, and every wait of the owner has a timeout of its own.
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import threading
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Generic, List, Optional, TypeVar
else:
    from ..._typing import Generic, TypeVar

T = TypeVar("T")


class OwnerGone(Exception):
    """The owner thread ended before it answered: the request was not run, or its answer was lost."""


class _Letter(Generic[T]):
    """One request and, once served, its answer or error."""

    def __init__(self, request: Callable[[], T]) -> None:
        self.request = request
        self.done = threading.Event()
        self.answer: Optional[T] = None
        self.error: Optional[BaseException] = None


class Mailbox:
    """Requests from any thread, run by the one thread that owns a ptrace attachment.

    *wake* tells the owner a request waits (the default does nothing: the owner polls `waiting`).
    *nap* bounds how long the asker sleeps between looks at the answer: it is polled, not waited for
    on an Event, since a Ctrl-C landing inside a lock wait can leave the lock in a state the way out
    trips over ("release unlocked lock"); short where the target is stopped while the asker waits."""

    def __init__(self, wake: Callable[[], None] = lambda: None, *, nap: float = 0.0002) -> None:
        self._wake = wake
        self._nap = nap
        self._lock = threading.Lock()
        self._letters: List[_Letter[object]] = []

    def ask(self, owner: threading.Thread, request: Callable[[], T]) -> T:
        """Have *owner* run *request*; its answer, or the exception it raised. OwnerGone if the owner
        thread ended first. Called from the owner itself, *request* runs at once."""
        if threading.current_thread() is owner:
            return request()
        letter: _Letter[T] = _Letter(request)
        with self._lock:
            self._letters.append(letter)  # type: ignore[arg-type]
        self._wake()
        nap = 0.0001
        while not letter.done.is_set():
            if not owner.is_alive():
                raise OwnerGone()
            time.sleep(nap)
            nap = min(nap * 2, self._nap)
        if letter.error is not None:
            raise letter.error
        return letter.answer  # type: ignore[return-value]

    @property
    def waiting(self) -> bool:
        """Whether a request waits to be served."""
        return bool(self._letters)

    def serve(self) -> bool:
        """Run, in the calling (owner) thread, every request waiting; True if there was one."""
        with self._lock:
            letters, self._letters = self._letters, []
        for letter in letters:
            try:
                letter.answer = letter.request()
            except BaseException as exc:  # handed to the asker, which raises it
                letter.error = exc
            letter.done.set()
        return bool(letters)
