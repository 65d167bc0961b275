"""The write itself: MiniDumpWriteDump into an open file, from the process or from its snapshot,
watched by a WriteMonitor whose CancelCallback is the one way any dump is stopped (the watchdog,
max_pause, a cancel from another thread, Ctrl-C / SIGTERM).

dbghelp is single-threaded, so every call into it takes DBGHELP_LOCK. Registering the write with
the in-flight registry (inflight.WRITES) and holding SeDebugPrivilege are the caller's (backend.py).
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import contextlib
import ctypes
import json
import threading
import time
from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

from .._bounded import start_thread
from .._platform import TargetEvent, Tick
from ..errors import AccessDenied, DumpFailed
from .masks import MINIDUMP_NEWER_FLAGS, describe_mask
from . import dbghelp, wrappers
from . import snapshot as snapshot_rules
from ._common import DISK_FULL_ERRORS, ERROR_ACCESS_DENIED, ERROR_INVALID_PARAMETER, ERROR_PARTIAL_COPY, Win32Error
from .exception_info import exception_param
from .inflight import holding_stop_signals

if TYPE_CHECKING:
    from ctypes import _CFunctionType, _Pointer

    #: What dbghelp passes a MINIDUMP_CALLBACK_ROUTINE: pointers to its (layout-built) input and output structures.
    CallbackArg = _Pointer[ctypes.Structure]

#: dbghelp is single-threaded: every call into it goes through this lock.
DBGHELP_LOCK = threading.Lock()
#: MiniDumpWriteDump attempts when the target changes its memory map mid-read (ERROR_PARTIAL_COPY).
PARTIAL_COPY_ATTEMPTS = 3
#: Seconds between the monitor's looks at the growing file.
MONITOR_INTERVAL = 0.1


def signature_with_mask(signature: str, mask: int) -> str:
    """dumplib's signature record, saying the mask actually used."""
    try:
        record = json.loads(signature)
    except ValueError:
        return signature
    if isinstance(record, dict):
        record["flags"] = mask
        return json.dumps(record, separators=(",", ":"))
    return signature


def comment_stream(comment: Optional[str], signature: str) -> str:
    """CommentStreamW: the user's text, then dumplib's signature record on its own last line."""
    return f"{comment}\n{signature}" if comment else signature


def write_dump(
    process: int, pid: int, file: int, mask: int, comment: Optional[str], signature: str, warnings: List[str],
    monitor: "WriteMonitor", event: Optional[TargetEvent] = None, *, snapshot: Optional[int] = None,
) -> Tuple[int, float]:
    """Call MiniDumpWriteDump, retrying a partial copy and dropping flags this dbghelp lacks.

    With *snapshot* (an HPSS of *process*), the dump is read from it and the callback says so.
    Returns the mask used and the seconds spent inside MiniDumpWriteDump (without a snapshot the
    target's threads are suspended for exactly that long)."""
    routine = snapshot_callback(monitor) if snapshot else monitor.callback  # kept alive through the calls
    callback = dbghelp.MINIDUMP_CALLBACK_INFORMATION(ctypes.cast(routine, ctypes.c_void_p).value or 0, 0)
    source = snapshot or process
    attempt, suspended = 0, 0.0
    while True:
        attempt += 1
        # NUL-terminated UTF-16, as CommentStreamW expects; rebuilt so a retry records its own mask.
        text = ctypes.create_unicode_buffer(comment_stream(comment, signature_with_mask(signature, mask)))
        stream = dbghelp.MINIDUMP_USER_STREAM(dbghelp.CommentStreamW, ctypes.sizeof(text), ctypes.addressof(text))
        streams = dbghelp.MINIDUMP_USER_STREAM_INFORMATION(1, ctypes.addressof(stream))
        began = time.monotonic()
        try:
            with DBGHELP_LOCK, monitor.suspending(not snapshot):
                monitor.raise_if_interrupted()  # cancelled while it waited for dbghelp: never start
                try:
                    dbghelp.MiniDumpWriteDump(source, pid, file, mask, exception_param(event), ctypes.byref(streams),
                                              ctypes.byref(callback))
                finally:
                    suspended += time.monotonic() - began
            monitor.raise_if_interrupted()  # Wine never asks CancelCallback: the write ran on, now drop it
            return mask, suspended
        except Win32Error as exc:
            monitor.raise_if_interrupted()
            monitor.raise_if_abandoned()
            # A snapshot outlives its target; a dump at the exit knew it was ending: say what failed.
            exiting = event is not None and event.kind == "exit"
            if not snapshot and not exiting and wrappers.exit_code(process) is not None:
                raise DumpFailed.target_exited(pid) from None
            if exc.winerror in DISK_FULL_ERRORS:
                raise DumpFailed(
                    f"the volume filled up while process {pid} was being dumped ({exc.message}); nothing was kept."
                    " Free space or choose another directory",
                    pid=pid, winerror=exc.winerror, hresult=exc.hresult, reason="disk-full",
                ) from None
            if exc.winerror == ERROR_PARTIAL_COPY and attempt < PARTIAL_COPY_ATTEMPTS:
                # The target changed its memory map mid-read; a fresh pass usually succeeds.
                wrappers.truncate(file)
                time.sleep(0.05 * attempt)
                continue
            if exc.winerror == ERROR_INVALID_PARAMETER and mask & MINIDUMP_NEWER_FLAGS:
                dropped = mask & MINIDUMP_NEWER_FLAGS
                warnings.append(f"this dbghelp.dll rejects flags 0x{dropped:X}; they were dropped")
                mask &= ~MINIDUMP_NEWER_FLAGS
                wrappers.truncate(file)
                continue
            if exc.winerror == ERROR_ACCESS_DENIED:
                raise AccessDenied(
                    f"MiniDumpWriteDump could not read process {pid}: {exc.message}", pid=pid, code=exc.winerror
                ) from None
            raise DumpFailed(
                f"MiniDumpWriteDump failed for process {pid} with mask {describe_mask(mask)}: {exc.message}",
                pid=pid,
                winerror=exc.winerror,
                hresult=exc.hresult,
            ) from None


def snapshot_callback(monitor: "WriteMonitor") -> "_CFunctionType":
    """The callback routine for a dump read from a snapshot: IsProcessSnapshotCallback is answered
    with Status = S_FALSE (the handle is a snapshot); everything else (cancel) is the monitor's."""

    def on_callback(param: object, callback_input: "CallbackArg", callback_output: "CallbackArg") -> bool:
        try:
            address = ctypes.cast(callback_output, ctypes.c_void_p).value or 0
            if snapshot_rules.answer_callback(callback_input.contents.CallbackType, address):
                return True
        except BaseException as exc:  # noqa: B036 - as in WriteMonitor: never unwind through dbghelp's C frames
            monitor.interrupt = monitor.interrupt or exc
        return monitor.on_callback(param, callback_input, callback_output)

    return dbghelp.MINIDUMP_CALLBACK_ROUTINE(on_callback)


def signals_cancel(monitor: "WriteMonitor") -> "contextlib.AbstractContextManager[None]":
    """During the write, a stop signal is recorded for CancelCallback instead of raised.

    Python runs signal handlers in the main thread whenever Python code runs there, which during
    MiniDumpWriteDump means inside a dbghelp callback: an exception raised there would be lost
    ("Exception ignored on calling ctypes callback function") and the dump would run on. The
    handler in force is still called, so what it raises (KeyboardInterrupt, the CLI's SIGTERM
    exception) is exactly what the caller sees once the write has stopped.
    """
    def keep(exc: BaseException) -> None:
        monitor.interrupt = monitor.interrupt or exc

    return holding_stop_signals(keep)


class WriteMonitor:
    """Watches the growing file from a side thread while dbghelp writes, calling *tick* with its size.

    Every way to stop a dump goes through MiniDumpWriteDump's CancelCallback (Cancel=TRUE, so it
    fails with ERROR_CANCELLED and resumes the target's threads as it returns): the watchdog's
    verdict (*tick* raised), *max_pause* running out while the target is suspended, a cancel()
    from another thread (a watcher stopping, the console closing), and Ctrl-C / SIGTERM, whose
    exception Python raises inside a dbghelp callback and which must never unwind through
    dbghelp's C frames. Where dbghelp never asks (Wine), the write runs to its end and the stored
    exception is raised afterwards, so the file is still removed.
    """

    def __init__(self, file: int, tick: Optional[Tick], pid: int = 0, max_pause: Optional[float] = None) -> None:
        self._file, self._tick = file, tick
        self._pid, self._max_pause = pid, max_pause
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self.interrupt: Optional[BaseException] = None
        self.cancelled: Optional[BaseException] = None
        #: When max_pause runs out for the MiniDumpWriteDump running now (None: no bound, or not suspending).
        self._pause_ends: Optional[float] = None
        self.callback = dbghelp.MINIDUMP_CALLBACK_ROUTINE(self.on_callback)

    def cancel(self, why: BaseException) -> None:
        """Ask the running write to stop at its next CancelCallback; *why* is what it raises."""
        self.cancelled = self.cancelled or why

    @contextlib.contextmanager
    def suspending(self, suspends: bool) -> Iterator[None]:
        """Around one MiniDumpWriteDump: with *suspends* (read from the live target, whose threads it
        keeps suspended), max_pause counts from here."""
        self._pause_ends = time.monotonic() + self._max_pause if suspends and self._max_pause else None
        try:
            yield
        finally:
            self._pause_ends = None

    def _should_cancel(self) -> bool:
        if self._pause_ends is not None and self.error is None and time.monotonic() > self._pause_ends:
            self.error = max_pause_error(self._pid, self._max_pause)
        return self.error is not None or self.interrupt is not None or self.cancelled is not None

    def on_callback(self, param: object, callback_input: "CallbackArg", callback_output: "CallbackArg") -> bool:
        """dbghelp's MINIDUMP_CALLBACK_ROUTINE: answers CancelCallback (and keeps being asked); never raises into C."""
        try:
            if callback_input.contents.CallbackType == dbghelp.CancelCallback:
                out = callback_output.contents
                out.CheckCancel = True  # keep asking
                out.Cancel = self._should_cancel()
        except BaseException as exc:  # noqa: B036 - KeyboardInterrupt lands here; it must not unwind through C
            self.interrupt = self.interrupt or exc
            with contextlib.suppress(BaseException):
                if callback_input.contents.CallbackType == dbghelp.CancelCallback:
                    callback_output.contents.Cancel = True
        return True

    def __enter__(self) -> "WriteMonitor":
        if self._tick is not None:
            thread = threading.Thread(target=self._run, name="dumplib-monitor", daemon=True)
            start_thread(thread, "the thread that watches the write")
            self._thread = thread  # joined on the way out: kept once started
        return self

    def _run(self) -> None:
        assert self._tick is not None
        while not self._stop.wait(MONITOR_INTERVAL):
            try:
                self._tick(wrappers.file_size(self._file))
            except Win32Error:
                return
            except BaseException as exc:  # the watchdog's verdict: cancel the dump
                self.error = exc
                return

    def raise_if_interrupted(self) -> None:
        """Ctrl-C, SIGTERM or a cancel() arrived during the write: raise it now, as if it had come between calls."""
        if self.interrupt is not None:
            raise self.interrupt
        if self.cancelled is not None:
            raise self.cancelled

    def raise_if_abandoned(self) -> None:
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def max_pause_error(pid: int, max_pause: Optional[float]) -> DumpFailed:
    """The write was cancelled at max_pause, so the target's threads were resumed (as on Linux)."""
    return DumpFailed.max_pause_exceeded(
        pid, max_pause, "suspended", "Take a smaller kind, use --snapshot (the target runs during the write) or"
        " write to a local file")
