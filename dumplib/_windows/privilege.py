"""A process-wide privilege (SeDebugPrivilege) held on while any dump, capture or attach needs it.

Pure logic, no DLL: the unit tests drive it on every OS with a recording fake of the token.

A token's privileges belong to the whole process, so two dumps on two threads (a watcher of
every process of a name, a sampled dump beside an exception dump, a library's own threads) share
one switch: the first holder turns it on, the last one out puts back what was there before. A
plain enable/restore pair per dump would switch it off under a dump still writing.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Generic, Iterator, Optional, Tuple, TypeVar

#: What enable() changed, as restore() needs it to put it back (the token's previous state).
State = TypeVar("State")


class PrivilegeHold(Generic[State]):
    """A counted hold on one privilege: enabled by the first ``held()``, restored by the last."""

    def __init__(self, enable: Callable[[], Tuple[bool, Optional[State]]],
                 restore: Callable[[Optional[State]], None]) -> None:
        """*enable* -> (whether the token holds the privilege, what *restore* needs to put it back)."""
        self._enable, self._restore = enable, restore
        self._lock = threading.Lock()
        self._count = 0
        self._held = False
        self._previous: Optional[State] = None

    @property
    def holders(self) -> int:
        """How many bodies hold it now (0: it is as the process had it)."""
        return self._count

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Enabled for the body (if the token holds it); yields whether it does.

        What enable() raises propagates before the body runs, with nothing changed. Whatever the
        body raises, the last holder out restores what the token had before the first came in.
        """
        with self._lock:
            if self._count == 0:
                self._held, self._previous = self._enable()
            self._count += 1
            held = self._held
        try:
            yield held
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0:
                    previous, self._previous = self._previous, None
                    if self._held:
                        self._restore(previous)

