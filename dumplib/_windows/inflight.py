"""Every dump being written in this process, on any thread, and what stops them all before the process
ends: a console close, logoff or shutdown (SetConsoleCtrlHandler), Python's exit (atexit), and the
stop signals a write holds off until MiniDumpWriteDump has returned.

Only MiniDumpWriteDump's return resumes the target's threads: a process that ends mid-call leaves
them suspended for good, so nothing here lets this process go while a write runs.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import atexit
import contextlib
import ctypes
import signal
import threading
import time
from ctypes import wintypes
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Union

from ..errors import DumpFailed
from . import kernel32
from ._common import Win32Error


class Cancellable(Protocol):
    """A running write, as the registry sees it (writer.WriteMonitor): asked to stop at its next CancelCallback."""

    def cancel(self, why: BaseException) -> None: ...


#: Signals that stop a dump: Ctrl-C, SIGTERM, and Ctrl-Break on Windows.
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n))

#: What signal.signal() returns: a Python handler, SIG_DFL / SIG_IGN, or None (installed from C).
_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


@contextlib.contextmanager
def holding_stop_signals(keep: Callable[[BaseException], None]) -> Iterator[None]:
    """In the main thread, Ctrl-C, SIGTERM and Ctrl-Break run their handlers as usual, but what
    those raise goes to *keep* instead of unwinding the body; elsewhere signals never arrive."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Dict[int, _Handler] = {}

    def record(signum: int, frame: Optional[FrameType]) -> None:
        handler = previous.get(signum)
        try:
            if callable(handler):
                handler(signum, frame)
            elif handler != signal.SIG_IGN:
                raise KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
        except BaseException as exc:  # noqa: B036 - held for the caller, raised once the body is over
            keep(exc)

    for signum in _STOP_SIGNALS:
        previous[signum] = signal.signal(signum, record)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class InFlightWrites:
    """Every dump being written in this process, on any thread: a stop anywhere cancels each one
    through its CancelCallback and waits until MiniDumpWriteDump has returned. Only its return
    resumes the target's threads; a process that ends mid-call leaves them suspended for good."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Each write's monitor -> the thread writing it.
        self._writes: Dict[Cancellable, int] = {}
        #: Set once this process is being ended (console closed, logoff, shutdown): no write may start.
        self._ending: Optional[BaseException] = None

    @contextlib.contextmanager
    def writing(self, monitor: Cancellable) -> Iterator[None]:
        _install_console_handler()
        with self._cond:
            if self._ending is not None:
                raise self._ending
            self._writes[monitor] = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                del self._writes[monitor]
                self._cond.notify_all()

    def _busy(self, thread: Optional[int]) -> bool:
        return any(thread is None or t == thread for t in self._writes.values())

    def busy(self, thread: Optional[int] = None) -> bool:
        """Whether a write is running (on *thread*, or on any thread)."""
        with self._cond:
            return self._busy(thread)

    def cancel(self, why: BaseException, thread: Optional[int] = None) -> int:
        """Cancel every running write (only *thread*'s, if given); how many there were."""
        with self._cond:
            chosen = [m for m, t in self._writes.items() if thread is None or t == thread]
        for monitor in chosen:
            monitor.cancel(why)
        return len(chosen)

    def end(self, why: BaseException) -> List[threading.Thread]:
        """This process is being ended: cancel every running write and refuse any later one (checked
        under the same lock as registering, so none slips in between); the threads that were writing."""
        with self._cond:
            self._ending = why
            writers = {t for t in self._writes.values()}
        self.cancel(why)
        return [t for t in threading.enumerate() if t.ident in writers]

    def end_and_wait(self, why: BaseException, patience: float) -> None:
        """end(), then wait up to *patience* seconds for each cancelled write to return and for its
        thread to finish the dump's own cleanup (its temporary file removed), which follows the write."""
        writers = self.end(why)
        if not writers:
            return
        deadline = time.monotonic() + patience
        self.wait(patience)
        for thread in writers:
            if thread is not threading.current_thread():
                thread.join(max(0.0, min(CLEANUP_PATIENCE, deadline - time.monotonic())))

    def wait(self, timeout: float, thread: Optional[int] = None) -> bool:
        """Wait up to *timeout* seconds until no write runs (on *thread*); whether none does."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy(thread), timeout)


WRITES = InFlightWrites()


class OpenTemporaries:
    """dumplib's temporary files this process created and has not placed yet (wrappers.create_new_file
    adds them, WindowsHost.place_new takes them off; one removed is gone from the disk, and so from
    here), with the thread that created each: a console closed while no write runs (the read-back, the
    compression, the sidecar) waits for those threads to remove them, not only for MiniDumpWriteDump."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: Dict[str, int] = {}

    def add(self, path: str) -> None:
        with self._lock:
            self._paths[path] = threading.get_ident()

    def discard(self, path: str) -> None:
        with self._lock:
            self._paths.pop(path, None)

    def left(self) -> Dict[str, int]:
        """{path: creating thread} of those still on disk (the rest are forgotten)."""
        import os

        with self._lock:
            for path in [p for p in self._paths if not os.path.lexists(p)]:
                del self._paths[path]
            return dict(self._paths)


TEMPORARIES = OpenTemporaries()


def is_temporary(path: str) -> bool:
    """Whether *path* names one of dumplib's temporaries (``.dumplib-....tmp``, placement.is_temp_name's)."""
    import os

    name = os.path.basename(path)
    return name.startswith(".dumplib-") and name.endswith(".tmp")

#: Seconds the console handler waits for cancelled writes to return: Windows ends a console process
#: about 5 s after CTRL_CLOSE_EVENT (and CTRL_LOGOFF / CTRL_SHUTDOWN), whatever the handler does.
CONSOLE_GRACE = 4.0
_ENDING_EVENTS = {2: "its console was closed", 5: "the user logged off", 6: "the system is shutting down"}
_console_lock = threading.Lock()
#: The PHANDLER_ROUTINE given to SetConsoleCtrlHandler, kept alive for as long as Windows may call it.
_console_routine: Optional[object] = None
_exit_hook = False
#: Seconds Python's exit waits for cancelled writes (Windows returns at the next CancelCallback; Wine's
#: dbghelp never asks, so its write runs to the end).
EXIT_PATIENCE = 600.0
#: Seconds a cancelled write's thread is given, once the write returned, to remove its temporary file (it
#: may go on with other work after that, which nothing waits for).
CLEANUP_PATIENCE = 10.0


def _install_console_handler() -> None:
    """Once per process, before the first write: a console close, logoff or shutdown cancels every
    write and waits for it (Python's SIGBREAK handling would only raise in the main thread, and too late)."""
    global _console_routine, _exit_hook
    with _console_lock:
        if not _exit_hook:
            atexit.register(_cancel_at_exit)
            _exit_hook = True
        if _console_routine is not None:
            return
        routine = kernel32.PHANDLER_ROUTINE(_on_console_event)
        try:
            kernel32.SetConsoleCtrlHandler(routine, True)
        except Win32Error:
            return  # tried again at the next write
        _console_routine = routine  # kept alive for as long as Windows may call it


def _on_console_event(event: int) -> bool:
    """On Windows' handler thread: cancel and wait; FALSE passes the event on (Ctrl-C goes to Python)."""
    try:
        why = _ENDING_EVENTS.get(event)
        if why is None or (event == kernel32.CTRL_LOGOFF_EVENT and _in_services_session()):
            return False  # a service outlives every user's logoff: its dumps go on
        console_cleanup(WRITES, TEMPORARIES, DumpFailed(f"the dump was cancelled because {why}; nothing was kept",
                                                        reason="cancelled"), CONSOLE_GRACE)
    except BaseException:  # noqa: B036 - nothing may unwind into Windows' handler thread
        pass
    return False


#: Seconds between looks at whether the temporaries are gone.
_TEMPORARIES_POLL = 0.05


def console_cleanup(writes: InFlightWrites, temporaries: OpenTemporaries, why: BaseException, patience: float,
                    interrupt: Optional[Callable[[], None]] = None) -> None:
    """This process is about to be ended (Windows ends it about 5 s after the event): cancel every write
    and wait for it (writes.end_and_wait); then, if temporaries are still on disk, interrupt the main
    thread when it made one (KeyboardInterrupt: its dump's cleanup removes the file) and wait, all
    within *patience* seconds, until none is left. A temporary another thread made is waited for only."""
    import _thread

    deadline = time.monotonic() + patience
    writes.end_and_wait(why, patience)
    left = temporaries.left()
    if not left:
        return
    main = threading.main_thread()
    if main.ident in left.values() and main.is_alive():
        (interrupt or _thread.interrupt_main)()
    while temporaries.left() and time.monotonic() < deadline:
        time.sleep(_TEMPORARIES_POLL)


def _cancel_at_exit() -> None:
    """At Python's exit (atexit runs after non-daemon threads are joined, while daemon threads still
    run): cancel a write still running on a daemon thread and wait for it. Frozen at finalization
    inside MiniDumpWriteDump's callback, it would never return and the target would stay suspended."""
    WRITES.end_and_wait(DumpFailed("the dump was cancelled because Python is exiting; nothing was kept",
                                   reason="cancelled"), EXIT_PATIENCE)


def _in_services_session() -> bool:
    session = wintypes.DWORD()
    try:
        kernel32.ProcessIdToSessionId(kernel32.GetCurrentProcessId(), ctypes.byref(session))
    except Win32Error:
        return False
    return session.value == 0
