"""The Windows platform: MiniDumpWriteDump into an owner-only temporary file, then read it back.

One target from open to close: WindowsPlatform.open opens the process once and its session keeps the
handle, so its pid cannot be reused until the session closes it; every later step works on that process.
"""
from __future__ import annotations

import sys

# Windows only (ctypes.WinDLL); also tells type checkers on other platforms to skip this module.
assert sys.platform == "win32"

import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import signal
import threading
import time
from ctypes import wintypes
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..errors import AccessDenied, BitnessMismatch, DumpError, DumpFailed, InvalidDumpFile, ProcessNotFound, TargetRefused
from ..formats import minidump
from ..kinds import (
    MINIDUMP_NEWER_FLAGS,
    DumpKind,
    MiniDumpType,
    describe_mask,
    mask_has_full_memory,
    streams_for_mask,
    windows_mask,
)
from ..results import ProcessInfo, SizeEstimate
from .._platform import (Plan, Platform, Session, SnapshotMode, TargetEvent, Tick, WatchSupport, WriteOptions,
                         WriteReport, without_snapshot)
from . import dbghelp, kernel32, wrappers
from . import snapshot as snapshot_rules
from ._common import (
    DISK_FULL_ERRORS,
    ERROR_ACCESS_DENIED,
    ERROR_DISK_FULL,
    ERROR_INVALID_PARAMETER,
    ERROR_PARTIAL_COPY,
    Win32Error,
)
from .debugloop import exception_param
from .host import WindowsHost
from .ntdll import UNDER_WINE
from .policy import BitnessVerdict, bitness_verdict, interpreter_machine

#: dbghelp is single-threaded: every call into it goes through this lock.
DBGHELP_LOCK = threading.Lock()
PARTIAL_COPY_ATTEMPTS = 3
MONITOR_INTERVAL = 0.1
# What each operation asks of the target, and nothing more (EDR products flag VM_READ on lsass).
#: The VirtualQueryEx walk behind estimates, --fit and `dumplib ps`'s full-dump column.
WALK_ACCESS = kernel32.PROCESS_QUERY_INFORMATION
#: MiniDumpWriteDump: reading memory, and duplicating handles for the handle-data stream.
DUMP_ACCESS = kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ | kernel32.PROCESS_DUP_HANDLE
#: psutil's create_time() and GetProcessTimes agree to the 100-ns tick; a reused pid's start is seconds away.
SAME_START_SECONDS = 0.05
#: Below this many free bytes, a failed or truncated write is blamed on the full volume.
DISK_FULL_SLACK = 1 << 20
_DUMPER_MACHINE = interpreter_machine(sys.version, 8 * ctypes.sizeof(ctypes.c_void_p))


class WindowsPlatform(Platform):
    name = "windows-dbghelp"
    extension = ".dmp"
    names_fold_case = True
    #: A watcher's dumps default to a snapshot where Windows has PSS: a watcher killed mid-write then
    #: leaves no thread suspended (only the capture suspends the target), and "auto" falls back with a warning.
    watch_snapshot: SnapshotMode = "auto" if kernel32.PssCaptureSnapshot is not None else False

    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        return windows_mask(kind, flags)

    def process_table(self) -> Dict[int, str]:
        return wrappers.process_table()

    def service_pid(self, name: str) -> int:
        """The running service *name*'s process id (the SCM's answer; ``svc:NAME`` targets)."""
        return wrappers.service_pid(name)

    # psutil's answers, imported only when asked (a one-shot dump by pid never needs them).

    def pid_exists(self, pid: int) -> bool:
        from .._psutil import psutil

        return bool(psutil.pid_exists(pid))

    def started(self, pid: int) -> Optional[float]:
        from .._psutil import psutil

        try:
            return float(psutil.Process(pid).create_time())
        except (psutil.Error, OSError):
            return None

    def command_line(self, pid: int) -> Optional[List[str]]:
        from .._psutil import psutil

        try:
            return list(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return None

    def open(self, target: ProcessInfo, *, for_dump: bool = False) -> "WindowsSession":
        """Open *target* once, prove it is the process that was resolved, and judge its machine.

        The handle carries no more than the memory walk needs (never VM_READ or DUP_HANDLE: the
        guard runs before the target is opened for dumping); write() takes the dump's access
        later, from the same process the kept handle pins. With *for_dump* this open is made with
        SeDebugPrivilege held (a service's process answers no one else); `ps` and `estimate` never.
        """
        pid = target.pid
        if pid == kernel32.GetCurrentProcessId():
            raise TargetRefused(
                f"process {pid} is this Python process: dumping yourself deadlocks on the loader"
                " lock. Dump it from another process, e.g. subprocess.run(['dumplib', 'dump', str(os.getpid())])",
                pid=pid,
                reason="self",
            )
        handle = _open_for_dump(pid, WALK_ACCESS) if for_dump else wrappers.open_process(pid, WALK_ACCESS)
        try:
            started = wrappers.creation_time(handle)
            if target.started is not None and abs(started - target.started) > SAME_START_SECONDS:
                raise ProcessNotFound(
                    pid,
                    f"pid {pid} now belongs to another process (started {started:.3f}, not {target.started:.3f}:"
                    " the one that was found has exited); nothing was dumped",
                )
            process_machine, native = wrappers.machines(handle)
            verdict = bitness_verdict(_DUMPER_MACHINE, process_machine, native)
            if verdict.refusal is not None:
                raise _bitness_refusal(pid, verdict.refusal, process_machine)
        except BaseException:
            wrappers.close_handle(handle)
            raise
        return WindowsSession(target, handle, WALK_ACCESS, started, verdict)

    def host(self) -> WindowsHost:
        return _HOST

    def open_handles(self, proc: Any) -> int:
        return int(proc.num_handles())

    def private_bytes(self, mem: Any) -> Optional[int]:
        # The commit charge, PagefileUsage: equal to PrivateUsage on real Windows, and the one Wine fills.
        return int(mem.pagefile)

    def watched_memory(self, mem: Any) -> int:
        # Private commit bytes (Wine fills only pagefile).
        return int(getattr(mem, "private", 0) or mem.pagefile or mem.rss)

    def watch_events(self) -> WatchSupport:
        from .debugloop import WindowsEvents  # only a watcher needs it

        return WindowsEvents()


class WindowsSession(Session):
    """One target held by a process handle (walk access; the dump's access is taken by write()),
    from Platform.open to close."""

    def __init__(self, target: ProcessInfo, handle: int, access: int, started: float,
                 verdict: BitnessVerdict) -> None:
        super().__init__(target)
        self._handle: Optional[int] = handle
        self._access = access
        self._started = started
        self._verdict = verdict

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            wrappers.close_handle(handle)

    @property
    def handle(self) -> int:
        if self._handle is None:
            pid = self.target.pid
            raise DumpFailed(f"the session on process {pid} was used after it was closed (a dumplib bug)", pid=pid)
        return self._handle

    def plan(self, kind: DumpKind, flags: Optional[int]) -> Plan:
        mask = windows_mask(kind, flags)
        target = self.target
        parts = estimate_parts(wrappers.committed_regions(self.handle), mask)
        estimate = SizeEstimate(pid=target.pid, kind=kind.value, flags=mask, bytes=sum(parts.values()), breakdown=parts)
        warning = self._verdict.warning
        return Plan(target=target, kind=kind, flags=mask, estimate=estimate, warnings=(warning,) if warning else ())

    def write(self, plan: Plan, temp_path: str, options: WriteOptions) -> WriteReport:
        pid, mask = plan.target.pid, plan.flags or 0
        comment, signature, event = options.comment, options.signature, options.event
        warnings: List[str] = []
        snapshot_bytes: Optional[int] = None
        # SeDebugPrivilege stays on from the dump's open to the end of the write: MiniDumpWriteDump
        # opens every thread of the target (THREAD_ALL_ACCESS), PssCaptureSnapshot opens them too.
        with wrappers.DEBUG_PRIVILEGE.held():
            # At its exit the process is read through the debugger's own handle (from its
            # CREATE_PROCESS_DEBUG_EVENT), not found again by pid; a snapshot would protect nothing.
            at_exit = _exit_handle(event)
            snapshot = False if at_exit else self._snapshot_decision(options.snapshot, mask, warnings)
            if not snapshot and not at_exit:
                self._take_dump_access()
            source = at_exit or self.handle
            file = wrappers.create_new_file(temp_path)
            with wrappers.handle_closing(file), _Monitor(file, options.tick, pid, options.max_pause) as monitor, \
                    WRITES.writing(monitor), _signals_cancel(monitor):
                if snapshot:
                    try:
                        # Stop signals are recorded, not raised, in here: nothing comes between the
                        # capture and the finally that frees it.
                        with _captured(self.handle, mask, warnings) as taken:
                            snapshot_bytes = taken.cost
                            # The target is suspended only while the snapshot is taken; it runs during the write.
                            stopped = taken.seconds
                            used, _ = _write_dump(self.handle, pid, file, mask, comment, signature, warnings,
                                                  monitor, event, snapshot=taken.handle)
                    except _CaptureFailed as exc:  # nothing was written yet
                        warnings.extend(without_snapshot(pid, options.snapshot, str(exc)))
                        snapshot = False
                if not snapshot:
                    # MiniDumpWriteDump suspends the target's threads for the whole call and resumes them on return.
                    used, stopped = _write_dump(source, pid, file, mask, comment, signature, warnings, monitor, event)
                monitor.raise_if_abandoned()
                kernel32.FlushFileBuffers(file)
            code = None if at_exit else wrappers.exit_code(self.handle)
            if code is not None:
                # The write had finished: the dump is whole. Verification still reads it back.
                when = "while its snapshot was written" if snapshot else "right after its dump was written"
                warnings.append(f"process {pid} exited (code {code}) {when}; the dump is complete and was kept")
        return WriteReport(stopped_seconds=stopped, warnings=tuple(warnings), flags=used, snapshot=bool(snapshot),
                           snapshot_bytes=snapshot_bytes if snapshot else None)

    def _take_dump_access(self, access: int = DUMP_ACCESS) -> None:
        """Give the kept handle *access*: reopen by pid while the old handle pins the pid."""
        if self._access & access == access:
            return
        pid = self.target.pid
        handle = _open_for_dump(pid, access)
        if abs(wrappers.creation_time(handle) - self._started) > SAME_START_SECONDS:  # cannot happen: pinned
            wrappers.close_handle(handle)
            raise ProcessNotFound(pid, f"pid {pid} now belongs to another process; nothing was dumped")
        wrappers.close_handle(self.handle)
        self._handle, self._access = handle, access

    def _snapshot_decision(self, mode: SnapshotMode, mask: int, warnings: List[str]) -> bool:
        """Whether this dump is written from a snapshot, with the kept handle holding what that needs.

        Every way a snapshot cannot be taken goes through without_snapshot before anything is
        written: snapshot=True refuses (TargetRefused, reason snapshot-unavailable), "auto" says why
        in a warning and the dump is written the usual way."""
        if not mode:
            return False
        pid = self.target.pid
        if kernel32.PssCaptureSnapshot is None:
            warnings.extend(without_snapshot(pid, mode, NO_PSS))
            return False
        # "auto" may still fall back to a normal dump, whose MiniDumpWriteDump reads the target itself.
        access = SNAPSHOT_ACCESS(mask) | (DUMP_ACCESS if mode == "auto" else 0)
        try:
            self._take_dump_access(access)
        except AccessDenied as exc:
            warnings.extend(without_snapshot(
                pid, mode, f"the snapshot needs PROCESS_CREATE_PROCESS on the target, which was denied ({exc.message})"))
            return False
        why = _commit_shortfall(self.handle)
        if why is not None:
            warnings.extend(without_snapshot(pid, mode, why))
            return False
        return True

    def verify(self, path: str, plan: Plan, report: WriteReport) -> Tuple[str, ...]:
        mask = report.flags if report.flags is not None else plan.flags or 0
        try:
            dump = verify_minidump(path, plan.target.pid, mask)
        except DumpFailed as exc:
            raise _blame_full_volume(path, plan.target.pid) or exc from None
        missing = missing_streams(dump, mask)
        if not missing:
            return ()
        names = ", ".join(f"{flag} (stream {stream})" for stream, flag in sorted(missing.items()))
        if UNDER_WINE:
            warning = (f"Wine's dbghelp ignores every MINIDUMP_TYPE flag but WithFullMemory: this dump lacks what"
                       f" {names} asks for; real Windows writes it")
            return (warning,)
        raise DumpFailed(
            f"the dump of process {plan.target.pid} lacks what its mask {describe_mask(mask)} asks for: {names};"
            " it was removed",
            pid=plan.target.pid,
            reason="unverified",
        )


_HOST = WindowsHost()


#: Streams besides memory: thread and module lists, memory map, handles, unwind data. Measured
#: under Wine at 0.8 MB for an idle python.exe mini dump; real Windows is of the same order.
METADATA_BYTES = 1 << 20
#: What a mini dump takes of each thread stack and module (referenced pages, headers), roughly.
PER_REGION_MINI = 64 << 10


def _exit_handle(event: Optional[TargetEvent]) -> Optional[int]:
    """At a watched exit, the debugger's own handle on the process (debugloop hands it over), else None."""
    if event is None or event.kind != "exit" or event.held is None:
        return None
    assert isinstance(event.held, int), "a held process from another platform's watcher"
    return event.held


def estimate_parts(regions: Iterable[kernel32.MEMORY_BASIC_INFORMATION], mask: int) -> Dict[str, int]:
    """Bytes per category MiniDumpWriteDump will write for *mask*, from the committed regions alone."""
    parts = {"stacks": 0, "heap": 0, "images": 0, "shared": 0, "metadata": METADATA_BYTES}
    for r in regions:
        if r.Protect & kernel32.PAGE_GUARD or r.Protect & 0xFF == kernel32.PAGE_NOACCESS or r.Protect == 0:
            continue
        private_rw = r.Type == kernel32.MEM_PRIVATE and r.Protect & kernel32.PAGE_WRITABLE
        category = "images" if r.Type == kernel32.MEM_IMAGE else "heap" if r.Type == kernel32.MEM_PRIVATE else "shared"
        if mask & MiniDumpType.WithFullMemory:
            parts[category] += r.RegionSize
        elif mask & MiniDumpType.WithPrivateReadWriteMemory and private_rw:
            parts["heap"] += r.RegionSize
        elif r.Type == kernel32.MEM_IMAGE and r.AllocationBase == r.BaseAddress:
            parts["images"] += PER_REGION_MINI // 16  # module headers
    return parts


def _open_for_dump(pid: int, access: int = DUMP_ACCESS) -> int:
    """OpenProcess for a dump, with SeDebugPrivilege held on (the caller's hold goes on past it, to
    the end of the write); AccessDenied saying whether the privilege was there to help."""
    with wrappers.DEBUG_PRIVILEGE.held() as held:
        try:
            return wrappers.open_process(pid, access)
        except AccessDenied:
            pass
    if held:
        advice = (
            "SeDebugPrivilege is held and was enabled, so the target is protected (a PPL process such as"
            " lsass, or anti-malware) and cannot be dumped; dumplib never bypasses that"
        )
    else:
        advice = (
            "this user does not hold SeDebugPrivilege (not elevated, or filtered by UAC): run dumplib"
            " as the process's owner or from an elevated (Run as administrator) prompt"
        )
    raise AccessDenied(
        f"access to process {pid} was denied; {advice}", pid=pid, code=ERROR_ACCESS_DENIED, debug_privilege=held
    )


#: Why a snapshot cannot be taken where kernel32 lacks the PSS functions.
NO_PSS = ("this Windows has no PssCaptureSnapshot (Windows 8.1 / Server 2012 R2 and later have it;"
          " Wine does not)")
SNAPSHOT_ACCESS = snapshot_rules.snapshot_access


def _commit_shortfall(process: int) -> Optional[str]:
    """Why the system's commit cannot hold a clone of *process* now (None: it can)."""
    try:
        available, limit = wrappers.commit_room()
        private = wrappers.private_bytes(process)
    except Win32Error as exc:  # unmeasured is not room: never risk the system's commit
        return f"the system's commit could not be checked ({exc.message})"
    return snapshot_rules.commit_shortfall(private, available, limit)


class _CaptureFailed(Exception):
    """PssCaptureSnapshot failed: no snapshot exists and nothing was written."""


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    handle: int
    #: How long PssCaptureSnapshot took: the only time the target is suspended.
    seconds: float
    #: The clone's private commit, where Windows says.
    cost: Optional[int]


@contextlib.contextmanager
def _captured(process: int, mask: int, warnings: List[str]) -> Iterator[_Snapshot]:
    """A snapshot of *process* holding what a dump with *mask* needs, freed on every way out.

    A clone left behind would live on, holding its commit, until this process exits."""
    handle = wintypes.HANDLE()
    began = time.monotonic()
    try:
        try:
            kernel32.PssCaptureSnapshot(process, snapshot_rules.capture_flags(mask),
                                        snapshot_rules.context_flags(_DUMPER_MACHINE), ctypes.byref(handle))
        except Win32Error as exc:
            raise _CaptureFailed(f"PssCaptureSnapshot failed: {exc.message}") from None
        seconds = time.monotonic() - began
        yield _Snapshot(handle.value or 0, seconds, wrappers.snapshot_clone_cost(handle.value or 0))
    finally:
        if handle.value:
            _free_snapshot(handle.value, warnings)


def _free_snapshot(handle: int, warnings: List[str]) -> None:
    """PssFreeSnapshot in this process, where the snapshot handle lives; a failure is said, not raised
    (it must not hide why the dump failed)."""
    try:
        kernel32.PssFreeSnapshot(kernel32.GetCurrentProcess(), handle)
    except Win32Error as exc:
        warnings.append(f"the snapshot could not be freed ({exc.message}): its clone process keeps its"
                        " memory until this Python process exits")


def _bitness_refusal(pid: int, why: str, target_machine: int) -> BitnessMismatch:
    from .policy import MACHINE_BITS

    return BitnessMismatch(pid=pid, target_bits=MACHINE_BITS.get(target_machine, 0),
                           dumper_bits=8 * ctypes.sizeof(ctypes.c_void_p), why=why)


def _blame_full_volume(path: str, pid: int) -> Optional[DumpFailed]:
    """A DumpFailed saying the volume filled up, when it has (Wine's dbghelp ignores failed writes)."""
    try:
        free = wrappers.disk_space(os.path.dirname(os.path.abspath(path)))[1]
    except (OSError, Win32Error):
        return None
    if free >= DISK_FULL_SLACK:
        return None
    return DumpFailed(
        f"the volume holding {path} filled up while process {pid} was being dumped ({free} bytes free);"
        " nothing was kept. Free space or choose another directory",
        pid=pid,
        winerror=ERROR_DISK_FULL,
        reason="disk-full",
    )


def missing_streams(dump: minidump.Minidump, mask: int) -> Dict[int, str]:
    """Stream type -> flag, for every stream *mask* asks for that *dump* does not hold."""
    return {stream: flag for stream, flag in streams_for_mask(mask).items() if not dump.has_stream(stream)}


def _signature_with_mask(signature: str, mask: int) -> str:
    """dumplib's signature record, saying the mask actually used."""
    try:
        record = json.loads(signature)
    except ValueError:
        return signature
    if isinstance(record, dict):
        record["flags"] = mask
        return json.dumps(record, separators=(",", ":"))
    return signature


def _comment_stream(comment: Optional[str], signature: str) -> str:
    """CommentStreamW: the user's text, then dumplib's signature record on its own last line."""
    return f"{comment}\n{signature}" if comment else signature


def _write_dump(
    process: int, pid: int, file: int, mask: int, comment: Optional[str], signature: str, warnings: List[str],
    monitor: "_Monitor", event: Optional[TargetEvent] = None, *, snapshot: Optional[int] = None,
) -> Tuple[int, float]:
    """Call MiniDumpWriteDump, retrying a partial copy and dropping flags this dbghelp lacks.

    With *snapshot* (an HPSS of *process*), the dump is read from it and the callback says so.
    Returns the mask used and the seconds spent inside MiniDumpWriteDump (without a snapshot the
    target's threads are suspended for exactly that long)."""
    routine = _snapshot_callback(monitor) if snapshot else monitor.callback  # kept alive through the calls
    callback = dbghelp.MINIDUMP_CALLBACK_INFORMATION(ctypes.cast(routine, ctypes.c_void_p).value or 0, 0)
    source = snapshot or process
    attempt, suspended = 0, 0.0
    while True:
        attempt += 1
        # NUL-terminated UTF-16, as CommentStreamW expects; rebuilt so a retry records its own mask.
        text = ctypes.create_unicode_buffer(_comment_stream(comment, _signature_with_mask(signature, mask)))
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


def _snapshot_callback(monitor: "_Monitor") -> Any:
    """The callback routine for a dump read from a snapshot: IsProcessSnapshotCallback is answered
    with Status = S_FALSE (the handle is a snapshot); everything else (cancel) is the monitor's."""

    def on_callback(param: object, callback_input: Any, callback_output: Any) -> bool:
        try:
            address = ctypes.cast(callback_output, ctypes.c_void_p).value or 0
            if snapshot_rules.answer_callback(callback_input.contents.CallbackType, address):
                return True
        except BaseException as exc:  # noqa: B036 - as in _Monitor: never unwind through dbghelp's C frames
            monitor.interrupt = monitor.interrupt or exc
        return monitor._on_callback(param, callback_input, callback_output)

    return dbghelp.MINIDUMP_CALLBACK_ROUTINE(on_callback)


def verify_minidump(path: str, pid: int, mask: int) -> minidump.Minidump:
    """Read the file back and insist it holds what a dump of *pid* with *mask* must hold.

    MiniDumpWriteDump can return TRUE and leave a useless file (Wine does for bad handles or too
    little access), so success is decided here, never by the return code.
    """
    try:
        dump = minidump.read_minidump(path)
    except InvalidDumpFile as exc:
        raise DumpFailed(f"the written dump is unusable and was removed: {exc.message}", pid=pid) from None
    problems = list(dump.problems)
    if not dump.threads:
        problems.append("no thread list")
    if not dump.modules:
        problems.append("no module list")
    if mask_has_full_memory(mask):
        if not dump.has_stream(minidump.MEMORY64_LIST) or not dump.memory:
            problems.append("no memory in the Memory64List stream although the kind asks for all memory")
        else:
            missing = [t.tid for t in dump.threads if t.stack_size and not dump.holds(t.stack_start)]
            if missing:
                problems.append(f"the stacks of threads {missing} are missing from a full-memory dump")
    if dump.pid is not None and dump.pid != pid:
        problems.append(f"it describes process {dump.pid}, not {pid}")
    if problems:
        raise DumpFailed(
            f"MiniDumpWriteDump reported success for process {pid} but the file is not a usable dump"
            f" ({'; '.join(problems)}); it was removed. The process may have denied access or exited",
            pid=pid,
            reason="unverified",
        )
    return dump


#: Signals that stop a dump: Ctrl-C, SIGTERM, and Ctrl-Break on Windows.
_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, n))


def _signals_cancel(monitor: "_Monitor") -> "contextlib.AbstractContextManager[None]":
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


@contextlib.contextmanager
def holding_stop_signals(keep: Callable[[BaseException], None]) -> Iterator[None]:
    """In the main thread, Ctrl-C, SIGTERM and Ctrl-Break run their handlers as usual, but what
    those raise goes to *keep* instead of unwinding the body; elsewhere signals never arrive."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Dict[int, Any] = {}

    def record(signum: int, frame: Any) -> None:
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


class _Monitor:
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
        self.callback = dbghelp.MINIDUMP_CALLBACK_ROUTINE(self._on_callback)

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

    def _on_callback(self, param: object, callback_input: object, callback_output: object) -> bool:
        try:
            if callback_input.contents.CallbackType == dbghelp.CancelCallback:  # type: ignore[attr-defined]
                out = callback_output.contents  # type: ignore[attr-defined]
                out.CheckCancel = True  # keep asking
                out.Cancel = self._should_cancel()
        except BaseException as exc:  # noqa: B036 - KeyboardInterrupt lands here; it must not unwind through C
            self.interrupt = self.interrupt or exc
            with contextlib.suppress(BaseException):
                if callback_input.contents.CallbackType == dbghelp.CancelCallback:  # type: ignore[attr-defined]
                    callback_output.contents.Cancel = True  # type: ignore[attr-defined]
        return True

    def __enter__(self) -> "_Monitor":
        if self._tick is not None:
            self._thread = threading.Thread(target=self._run, name="dumplib-monitor", daemon=True)
            self._thread.start()
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
    return DumpFailed(
        f"process {pid} was let go after {max_pause or 0:g} s suspended (max_pause) before its dump was complete,"
        " and the dump was cancelled; nothing was kept. Take a smaller kind, use --snapshot (the target runs"
        " during the write), write to a local file, or allow a longer pause (--max-pause)",
        pid=pid, reason="max-pause", max_pause=max_pause)


class _InFlight:
    """Every dump being written in this process, on any thread: a stop anywhere cancels each one
    through its CancelCallback and waits until MiniDumpWriteDump has returned. Only its return
    resumes the target's threads; a process that ends mid-call leaves them suspended for good."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Each write's monitor -> the thread writing it.
        self._writes: Dict[_Monitor, int] = {}
        #: Set once this process is being ended (console closed, logoff, shutdown): no write may start.
        self._ending: Optional[BaseException] = None

    @contextlib.contextmanager
    def writing(self, monitor: _Monitor) -> Iterator[None]:
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


WRITES = _InFlight()

#: Seconds the console handler waits for cancelled writes to return: Windows ends a console process
#: about 5 s after CTRL_CLOSE_EVENT (and CTRL_LOGOFF / CTRL_SHUTDOWN), whatever the handler does.
CONSOLE_GRACE = 4.0
_ENDING_EVENTS = {2: "its console was closed", 5: "the user logged off", 6: "the system is shutting down"}
_console_lock = threading.Lock()
_console_routine: Any = None
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
        WRITES.end_and_wait(DumpFailed(f"the dump was cancelled because {why}; nothing was kept", reason="cancelled"),
                            CONSOLE_GRACE)
    except BaseException:  # noqa: B036 - nothing may unwind into Windows' handler thread
        pass
    return False


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
