"""A debugger loop for `dumplib.watch` on Windows: exceptions and process exit, then detach.

The loop's thread attaches (DebugActiveProcess), tells Windows not to kill the target when the
watcher ends (DebugSetProcessKillOnExit(FALSE)), and waits for debug events in short slices so it
can be stopped. While an event is held the whole target is frozen, so a dump taken then shows the
exception as it happened; every exception is then passed back (DBG_EXCEPTION_NOT_HANDLED), so the
program's own handlers run. What a debugger still changes (as ProcDump -e does): an unhandled
exception skips the program's unhandled-exception filter and WER (docs/watch.md).
DebugActiveProcessStop leaves it running.

A dump at an event runs on a thread of its own (the hand-over), while this thread keeps the event:
the writer says when it has read all it needs (handover.target_runs: MiniDumpWriteDump returned, or
the snapshot taken), and this thread continues the event there and then, so the target runs while
the dump is flushed, read back, compressed and given its sidecar. Meanwhile this thread answers the
target's debug events as usual; one that would start another dump (a matching exception, the exit)
is kept, the target waiting in it, until the dump under way is done, and then judged as if it had
just arrived (as the Linux signal hand-over does).
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._bounded import start_thread
from .._platform import TargetEvent
from ..errors import AccessDenied, DumpError, DumpFailed, InvalidArgument, ProcessNotFound
from ..triggers import ExceptionRaised, ProcessExit, SignalReceived, Trigger
from . import debugapi as dbg
from . import wrappers
from ._common import Win32Error
from .exception_info import ExceptionParam
from .handover import handed_over
from .inflight import WRITES, holding_stop_signals

#: CreateProcess: this thread debugs the new process (and not the processes it starts).
DEBUG_ONLY_THIS_PROCESS = 0x00000002
#: Milliseconds of each wait for a debug event (the loop checks for a stop request between them).
WAIT_SLICE_MS = 100
#: Seconds start() waits for the attach, and stop() for the loop to detach.
PATIENCE = 10.0
#: Seconds stop() waits for a cancelled dump to return (Windows returns at its next CancelCallback;
#: Wine's dbghelp never asks, so its write runs to the end).
WRITE_PATIENCE = 600.0


def _describe(code: int, first_chance: bool, address: Optional[int], tid: int) -> str:
    chance = "first chance" if first_chance else "second chance"
    where = f" at 0x{address:x}" if address else ""
    return f"exception 0x{code:08X} ({chance}){where} on thread {tid}"


class DebugLoop:
    """One debugger thread per watched process (the thread that attaches must be the one that waits)."""

    def __init__(self, pid: int, triggers: Sequence[Trigger], fire: Callable) -> None:  # type: ignore[type-arg]
        self.pid = pid
        self.exceptions = [t for t in triggers if isinstance(t, ExceptionRaised)]
        self.on_exit = [t for t in triggers if isinstance(t, ProcessExit)]
        self.fire = fire
        self._stop = threading.Event()
        self._attached = threading.Event()
        self._error: Optional[BaseException] = None
        self._ended = False
        self._seen_attach_breakpoint = False
        #: A launched WOW64 program's second loader breakpoint (WOW64's own), passed over once.
        self._wow64_loader_breakpoint = False
        #: The process handle and image base from CREATE_PROCESS_DEBUG_EVENT (Windows closes the handle itself).
        self._process: Optional[int] = None
        self._image_base: Optional[int] = None
        #: The event this thread holds the target at, not yet continued: (process id, thread id, event code).
        self._held: Optional[Tuple[int, int, int]] = None
        #: An event that came while a dump was being finished and would start another: judged after it.
        self._pending: Optional[dbg.DEBUG_EVENT] = None
        #: The thread finishing a hand-over's dump (stop() cancels a write there too).
        self._worker: Optional[threading.Thread] = None
        self._thread = threading.Thread(target=self._run, name=f"dumplib-debug-{pid}", daemon=True)
        #: A launched command's Popen, and the events launching() and configure() set.
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self._created = threading.Event()
        self._configured = threading.Event()

    # -- the watcher's side --------------------------------------------------------------------
    def start(self) -> None:
        if not self._thread.is_alive() and not self._created.is_set():
            start_thread(self._thread, f"the debugger thread for process {self.pid}")
        if not self._attached.wait(PATIENCE):
            raise DumpFailed(f"could not attach to process {self.pid} in time", pid=self.pid)
        if self._error is not None:
            raise self._error

    @property
    def ended(self) -> bool:
        return self._ended

    def dump_now(self, take: Callable):  # type: ignore[no-untyped-def,type-arg]
        # MiniDumpWriteDump needs no debugger rights: a sampled dump runs beside the loop.
        return take()

    def stop(self) -> None:
        """Detach; first cancel a dump the debugger thread is writing and wait until it has returned.

        Returning earlier would let this process end mid-write, leaving the target's threads
        suspended for good. The wait is bounded by WRITE_PATIENCE; a second Ctrl-C meanwhile is
        held until it ends (then raised), never allowed to cut it short."""
        self._stop.set()
        if not self._thread.is_alive():
            return
        ident = self._thread.ident
        why = DumpFailed(f"the dump of process {self.pid} was cancelled: the watch stopped; nothing was kept",
                         pid=self.pid, reason="cancelled")
        held: List[BaseException] = []
        with holding_stop_signals(held.append):
            began = write_ended = time.monotonic()
            while self._thread.is_alive():
                now = time.monotonic()
                # Asked again each slice: a write the thread (or its hand-over's worker) begins after this
                # stop is cancelled too.
                writer = next((t for t in (ident, self._worker_ident()) if t is not None and WRITES.cancel(why, thread=t)),
                              None)
                if writer is not None:
                    if now - began > WRITE_PATIENCE:
                        break
                    WRITES.wait(WAIT_SLICE_MS / 1000, thread=writer)
                    write_ended = time.monotonic()  # the detach's patience counts from the write's end
                    continue
                if now - write_ended > PATIENCE:
                    break
                self._thread.join(WAIT_SLICE_MS / 1000)
        if held:
            raise held[0]

    def _worker_ident(self) -> Optional[int]:
        worker = self._worker
        return worker.ident if worker is not None and worker.is_alive() else None

    # -- the debugger thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._attach()
        except Win32Error as exc:
            self._error = (AccessDenied(f"cannot debug process {self.pid}: {exc}", pid=self.pid, code=exc.winerror)
                           if exc.winerror == 5 else
                           DumpFailed(f"cannot debug process {self.pid}: {exc}", pid=self.pid, winerror=exc.winerror))
            self._ended = True
            self._attached.set()
            return
        self._attached.set()
        self._events()

    def _events(self) -> None:
        """Wait for debug events in slices until stopped or the process has ended; then detach."""
        event = dbg.DEBUG_EVENT()
        try:
            while True:
                pending, self._pending = self._pending, None
                if pending is not None:
                    # Kept while a dump was finished; when stopping it is passed on without a dump.
                    self._hold(pending)
                    self._let_go(self._on_event(pending) if not self._stop.is_set() else _passed_on(pending))
                    continue
                if self._stop.is_set() or self._ended:
                    break
                if not dbg.WaitForDebugEvent(ctypes.byref(event), WAIT_SLICE_MS):
                    continue  # ERROR_SEM_TIMEOUT: nothing happened in this slice
                self._hold(event)
                self._let_go(self._on_event(event))
        finally:
            if not self._ended:
                try:
                    dbg.DebugActiveProcessStop(self.pid)
                except Win32Error:
                    pass
            self._ended = True

    def _hold(self, event: dbg.DEBUG_EVENT) -> None:
        self._held = (event.dwProcessId, event.dwThreadId, event.dwDebugEventCode)

    def _let_go(self, status: int) -> None:
        """ContinueDebugEvent for the event held, once (a hand-over may have let it go already).

        Continuing EXIT_PROCESS_DEBUG_EVENT ends the debugging session and closes the process handle
        CREATE_PROCESS_DEBUG_EVENT gave (ContinueDebugEvent's documentation): nothing more comes."""
        held, self._held = self._held, None
        if held is None:
            return
        pid, tid, code = held
        dbg.ContinueDebugEvent(pid, tid, status)
        if code == dbg.EXIT_PROCESS_DEBUG_EVENT:
            self._ended = True

    # -- a command started under the debugger (ProcDump -x) ------------------------------------------
    @classmethod
    def launching(cls, argv: List[str]) -> "DebugLoop":
        """Start *argv* from this loop's own thread as a debuggee (DEBUG_ONLY_THIS_PROCESS), so the
        debugger sees it from its first instruction; its events wait until configure()."""
        loop = cls(0, [], lambda *a: None)
        loop._thread = threading.Thread(target=loop._run_launched, args=(argv,), name="dumplib-debug-launch",
                                        daemon=True)
        start_thread(loop._thread, f"the debugger thread that starts {argv[0]!r}")
        if not loop._created.wait(PATIENCE):
            raise DumpFailed(f"could not start {argv[0]!r} under the debugger in time")
        if loop._error is not None:
            raise loop._error
        return loop

    def configure(self, triggers: Sequence[Trigger], fire: Callable) -> None:  # type: ignore[type-arg]
        """The triggers and the watcher's callback for a launched process: its events flow from here."""
        self.exceptions = [t for t in triggers if isinstance(t, ExceptionRaised)]
        self.on_exit = [t for t in triggers if isinstance(t, ProcessExit)]
        self.fire = fire
        self._configured.set()

    def _run_launched(self, argv: List[str]) -> None:
        try:
            # The thread that creates a debuggee is its debugger: WaitForDebugEvent must run here.
            self.proc = subprocess.Popen(argv, creationflags=DEBUG_ONLY_THIS_PROCESS)
        except OSError as exc:
            self._error = InvalidArgument(f"cannot start {argv[0]!r}: {exc.strerror}", argument="launch",
                                          value=list(argv))
            self._ended = True
            self._created.set()
            return
        self.pid = self.proc.pid
        # A 64-bit debugger that creates a 32-bit process is also shown WOW64's loader breakpoint.
        self._wow64_loader_breakpoint = True
        try:
            dbg.DebugSetProcessKillOnExit(False)
        except Win32Error:
            pass  # then a killed watcher takes the program it started with it: it started it
        self._created.set()
        # Held at its first debug event (nothing of it has run) until the watcher says what to watch.
        began = time.monotonic()
        while not self._configured.wait(WAIT_SLICE_MS / 1000):
            if self._stop.is_set() or time.monotonic() - began > PATIENCE:
                break  # the watcher never came: let it go
        self._attached.set()
        self._events()

    def _attach(self) -> None:
        """DebugActiveProcess with SeDebugPrivilege held (without it a debugger needs PROCESS_ALL_ACCESS,
        which a service's process grants no one), then kill-on-exit off; if that fails, detach at
        once: the target is never left at the attach breakpoint with kill-on-exit on."""
        with wrappers.DEBUG_PRIVILEGE.held():
            dbg.DebugActiveProcess(self.pid)
        try:
            dbg.DebugSetProcessKillOnExit(False)
        except Win32Error:
            try:
                dbg.DebugActiveProcessStop(self.pid)
            except Win32Error:
                pass  # the first failure is the one to report
            raise

    def _on_event(self, event: dbg.DEBUG_EVENT) -> int:
        code = event.dwDebugEventCode
        if code == dbg.CREATE_PROCESS_DEBUG_EVENT:
            wrappers.close_handle(event.u.CreateProcessInfo.hFile)
            self._process = event.u.CreateProcessInfo.hProcess
            self._image_base = event.u.CreateProcessInfo.lpBaseOfImage
        elif code == dbg.LOAD_DLL_DEBUG_EVENT:
            wrappers.close_handle(event.u.LoadDll.hFile)
        elif code == dbg.EXIT_PROCESS_DEBUG_EVENT:
            self._on_exit(event)  # _let_go ends the session when it continues this event
        elif code == dbg.EXCEPTION_DEBUG_EVENT:
            return self._on_exception(event)
        return dbg.DBG_CONTINUE

    def _on_exit(self, event: dbg.DEBUG_EVENT) -> None:
        """EXIT_PROCESS_DEBUG_EVENT: the last moment a debugger sees the process. Windows reports it
        before it cleans the address space (the process is frozen until this event is continued),
        so the dump is taken here, as ProcDump -t does. Wine unmaps the memory first: then there is
        nothing to dump, and the watcher is told so instead of a dump that would fail half-way."""
        if not self.on_exit:
            return
        exit_code = event.u.ExitProcess.dwExitCode
        # The dump reads the process through this debugger's own handle (valid until the event is continued).
        seen = TargetEvent("exit", tid=event.dwThreadId, code=exit_code, held=self._process)
        readable = self._memory_readable()
        detail = f"exit code {exit_code}" + ("" if readable else "; its address space is already gone")
        for trigger in self.on_exit:
            self._fire(trigger, float(exit_code), detail, dbg.DBG_CONTINUE, seen, gone=None if readable else (
                f"process {self.pid} ended (exit code {exit_code}) and its memory was already released when the"
                " exit was reported to the debugger, so there is nothing to dump (Wine releases it before"
                " EXIT_PROCESS_DEBUG_EVENT; Windows keeps it until the debugger continues)"))

    def _memory_readable(self) -> bool:
        """Whether the image's first page still reads through the debugger's own process handle."""
        if not self._process or not self._image_base:
            return True  # nothing to probe with: let the dump try
        buf = ctypes.create_string_buffer(2)
        got = ctypes.c_size_t()
        return bool(dbg.ReadProcessMemory(self._process, self._image_base, buf, 2, ctypes.byref(got))) and \
            got.value == 2

    def _on_exception(self, event: dbg.DEBUG_EVENT) -> int:
        info = event.u.Exception
        record = info.ExceptionRecord
        exc_code = record.ExceptionCode & 0xFFFFFFFF
        first = bool(info.dwFirstChance)
        if not self._seen_attach_breakpoint and exc_code in (dbg.EXCEPTION_BREAKPOINT, dbg.STATUS_WX86_BREAKPOINT):
            self._seen_attach_breakpoint = True  # the breakpoint Windows raises in its attach thread
            return dbg.DBG_CONTINUE
        if self._wow64_loader_breakpoint and exc_code == dbg.STATUS_WX86_BREAKPOINT:
            self._wow64_loader_breakpoint = False  # the 32-bit ntdll's start-up breakpoint, not the program's
            return dbg.DBG_CONTINUE
        trigger = self._trigger_for(exc_code, first)
        if trigger is not None:
            try:
                param: Optional[ExceptionParam] = ExceptionParam(record, event.dwThreadId)
            except Win32Error:
                param = None  # the dump is still worth taking, without its exception stream
            seen = TargetEvent("exception", tid=event.dwThreadId, code=exc_code, address=record.ExceptionAddress,
                               first_chance=first, raw=param)
            self._fire(trigger, float(exc_code), _describe(exc_code, first, record.ExceptionAddress, event.dwThreadId),
                       dbg.DBG_EXCEPTION_NOT_HANDLED, seen)
        return dbg.DBG_EXCEPTION_NOT_HANDLED  # the program's own handlers decide, as without us

    def _trigger_for(self, code: int, first_chance: bool) -> Optional[Trigger]:
        return next((t for t in self.exceptions if t.matches(code, first_chance)), None)

    def _starts_a_dump(self, event: dbg.DEBUG_EVENT) -> bool:
        """Whether *event* would fire a trigger (and so start a dump): a matching exception past the
        loader's breakpoints, or the exit when it is watched."""
        code = event.dwDebugEventCode
        if code == dbg.EXIT_PROCESS_DEBUG_EVENT:
            return bool(self.on_exit)
        if code != dbg.EXCEPTION_DEBUG_EVENT:
            return False
        info = event.u.Exception
        exc_code = info.ExceptionRecord.ExceptionCode & 0xFFFFFFFF
        breakpoints = (dbg.EXCEPTION_BREAKPOINT, dbg.STATUS_WX86_BREAKPOINT)
        if (not self._seen_attach_breakpoint and exc_code in breakpoints) or (
                self._wow64_loader_breakpoint and exc_code == dbg.STATUS_WX86_BREAKPOINT):
            return False  # the loader's, passed over by _on_exception
        return self._trigger_for(exc_code, bool(info.dwFirstChance)) is not None

    def _fire(self, trigger: Trigger, value: float, detail: str, status: int, event: Optional[TargetEvent] = None,
              gone: Optional[str] = None) -> None:
        """Tell the watcher; a dump it takes runs through hand_over, which lets the event go with
        *status* as soon as the writer has read all it needs."""
        from .._platform import Firing

        def hand_over(take: Callable):  # type: ignore[no-untyped-def,type-arg]
            if gone is not None:
                raise ProcessNotFound(self.pid, gone)  # reported as a failed dump; watching goes on
            return self._hand_over(take, status)

        self.fire(self.pid, Firing(trigger, value, detail, event), hand_over)

    def _hand_over(self, take: Callable[[], Any], status: int) -> Any:
        """Run *take* (the dump) on a worker thread while this thread holds the event; continue the
        event with *status* as soon as the writer says it has read all it needs (handover.py), then
        answer the target's debug events until the dump is done. Its result, or its error (told
        that the process had been let go, when it had), is this call's."""
        released, done = threading.Event(), threading.Event()
        outcome: Dict[str, Any] = {}

        def work() -> None:
            try:
                with handed_over(self.pid, released.set):
                    outcome["result"] = take()
            except BaseException as exc:  # noqa: B036 - raised again on the debugger thread, below
                outcome["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=work, name=f"dumplib-handover-{self.pid}", daemon=True)
        start_thread(worker, f"the thread that dumps process {self.pid}")
        self._worker = worker
        let_go = False
        try:
            # Nothing of the target runs meanwhile, so no debug event can come: only the writer's word, or its end.
            while not done.is_set() and not released.wait(WAIT_SLICE_MS / 1000):
                pass
            if released.is_set():
                self._let_go(status)
                let_go = True
                self._serve_until(done)
        finally:
            worker.join()  # the dump's own bounds (watchdog, max_pause, stop()'s cancel) end it
            self._worker = None
        if "error" in outcome:
            error = outcome["error"]
            if let_go:
                _tell_let_go(error, self.pid, status)
            raise error
        return outcome["result"]

    def _serve_until(self, done: threading.Event) -> None:
        """While a hand-over's dump is finished, the target runs: answer its debug events as usual,
        but keep (not continue) one that would start another dump until *done*."""
        while not done.is_set():
            if self._ended or self._pending is not None:
                done.wait(WAIT_SLICE_MS / 1000)
                continue
            event = dbg.DEBUG_EVENT()
            if not dbg.WaitForDebugEvent(ctypes.byref(event), WAIT_SLICE_MS):
                continue
            if self._starts_a_dump(event):
                self._pending = event  # the target waits in it, as a second hand-over would make it wait
                continue
            self._hold(event)
            self._let_go(self._on_event(event))


def _passed_on(event: dbg.DEBUG_EVENT) -> int:
    """The status an event is continued with when nobody looks at it: exceptions go back to the program."""
    return dbg.DBG_EXCEPTION_NOT_HANDLED if event.dwDebugEventCode == dbg.EXCEPTION_DEBUG_EVENT else dbg.DBG_CONTINUE


def _tell_let_go(error: BaseException, pid: int, status: int) -> None:
    """Add to a dump's error that its process had already been let go when the error came."""
    if not isinstance(error, DumpError):
        return
    what = ("its exception passed on to its own handlers" if status == dbg.DBG_EXCEPTION_NOT_HANDLED
            else "its exit went on")
    error.message = (f"{error.message}; process {pid} was no longer held when this failed: it had been let go"
                     f" ({what}) as soon as its memory was read")
    error.args = (error.message,) + error.args[1:]


#: Debug loops of launched commands, by pid, until source() claims them.
_LAUNCHED: Dict[int, DebugLoop] = {}
_LAUNCHED_LOCK = threading.Lock()


class WindowsEvents:
    """What watching needs on Windows (Backend.watch_events, a watching.WatchSupport): a debug loop per process for
    ExceptionRaised and ProcessExit. A launched command starts under its debug loop, seen from its first instruction."""

    def source(self, pid: int, triggers: Sequence[Trigger], fire: Callable) -> DebugLoop:  # type: ignore[type-arg]
        if any(isinstance(t, SignalReceived) for t in triggers):
            raise InvalidArgument("SignalReceived is Linux only; on Windows use ExceptionRaised", argument="triggers",
                                  value="SignalReceived")
        with _LAUNCHED_LOCK:
            launched = _LAUNCHED.pop(pid, None)
        if launched is not None:
            launched.configure(triggers, fire)
            return launched
        return DebugLoop(pid, triggers, fire)

    def __init__(self) -> None:
        self._times = _CpuTable()

    def launch_held(self, argv: List[str]) -> "subprocess.Popen[bytes]":
        """Start *argv* under a debugger from its first instruction (ProcDump -x): held at its first
        debug event until source() gives its loop the triggers."""
        loop = DebugLoop.launching(argv)
        assert loop.proc is not None
        with _LAUNCHED_LOCK:
            _LAUNCHED[loop.pid] = loop
        return loop.proc

    def let_run(self, proc: "subprocess.Popen[bytes]") -> None:
        pass  # its loop runs on from configure()

    def cpu_seconds(self, pid: int) -> Optional[float]:
        """User + kernel seconds of process *pid* (None: not listed), from the system's process table."""
        return self._times.seconds(pid)


#: A table read this recently answers again: watching every process of a name samples them all at once.
CPU_TABLE_FRESH = 0.05
_CPU_BUFFER_START = 256 << 10
_CPU_BUFFER_MAX = 64 << 20


class _CpuTable:
    """NtQuerySystemInformation(SystemProcessInformation): every process's CPU times in one call."""

    def __init__(self) -> None:
        self._buffer = ctypes.create_string_buffer(_CPU_BUFFER_START)
        self._table: Dict[int, float] = {}
        self._read_at = -1.0

    def seconds(self, pid: int) -> Optional[float]:
        if time.monotonic() - self._read_at > CPU_TABLE_FRESH:
            self._table = self._read()
            self._read_at = time.monotonic()
        return self._table.get(pid)

    def _read(self) -> Dict[int, float]:
        needed = ctypes.c_ulong()
        while True:
            status = dbg.NtQuerySystemInformation(dbg.SystemProcessInformation, self._buffer, len(self._buffer),
                                                  ctypes.byref(needed)) & 0xFFFFFFFF
            if status != dbg.STATUS_INFO_LENGTH_MISMATCH:
                break
            size = max(len(self._buffer) * 2, needed.value + (64 << 10))
            if size > _CPU_BUFFER_MAX:
                return {}
            self._buffer = ctypes.create_string_buffer(size)  # processes came and went: ask again
        if status != 0:
            return {}
        table: Dict[int, float] = {}
        base, offset, end = ctypes.addressof(self._buffer), 0, len(self._buffer)
        head = ctypes.sizeof(dbg.SYSTEM_PROCESS_INFORMATION)
        while offset + head <= end:
            entry = dbg.SYSTEM_PROCESS_INFORMATION.from_address(base + offset)
            table[entry.UniqueProcessId or 0] = (entry.UserTime + entry.KernelTime) / 1e7
            if not entry.NextEntryOffset:
                break
            offset += entry.NextEntryOffset
        return table
