"""The Windows platform: the thin classes that wire the jobs of a dump together.

One target from open to close: WindowsPlatform.open opens the process once and its session keeps the
handle, so its pid cannot be reused until the session closes it; every later step works on that
process. The jobs live apart: estimate.py (what a dump will weigh), access.py (what each operation
asks of the target), capture.py (the PSS snapshot), writer.py (MiniDumpWriteDump and its
CancelCallback), inflight.py (every write in flight, cancelled and waited for before the process
ends), verify.py (the file read back); the Win32 bindings are kernel32.py, dbghelp.py, advapi32.py,
ntdll.py and debugapi.py, wrapped in wrappers.py.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from ctypes import wintypes
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .._platform import (MemoryInfo, Plan, Platform, Session, SnapshotMode, TargetEvent, WatchSupport, WriteOptions,
                         WriteReport, without_snapshot)
from ..errors import AccessDenied, BitnessMismatch, DumpError, DumpFailed, ProcessNotFound, TargetRefused
from ..kinds import DumpKind
from .masks import windows_mask
from ..results import ProcessInfo, SizeEstimate
from . import kernel32, wrappers
from . import snapshot as snapshot_rules
from .access import DUMP_ACCESS, WALK_ACCESS, open_for_dump
from .capture import NO_PSS, CaptureFailed, captured, commit_shortfall
from .estimate import estimate_parts
from .handover import target_runs
from .host import WindowsHost
from .inflight import WRITES
from .policy import DUMPER_MACHINE, BitnessVerdict, bitness_verdict
from .verify import check_dump
from .writer import WriteMonitor, signals_cancel, write_dump

if TYPE_CHECKING:
    import psutil

#: psutil's create_time() and GetProcessTimes agree to the 100-ns tick; a reused pid's start is seconds away.
SAME_START_SECONDS = 0.05


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

    def open(self, target: ProcessInfo, *, for_dump: bool = False, listing: bool = False) -> "WindowsSession":
        """Open *target* once, prove it is the process that was resolved, and judge its machine.

        The handle carries no more than the memory walk needs (never VM_READ or DUP_HANDLE: the
        guard runs before the target is opened for dumping); write() takes the dump's access
        later, from the same process the kept handle pins. With *for_dump* this open is made with
        SeDebugPrivilege held (a service's process answers no one else); `ps` and `estimate` never.
        """
        pid = target.pid
        if pid == kernel32.GetCurrentProcessId() and not listing:
            raise TargetRefused(
                f"process {pid} is this Python process: dumping yourself deadlocks on the loader"
                " lock. Dump it from another process, e.g. subprocess.run(['dumplib', 'dump', str(os.getpid())])",
                pid=pid,
                reason="self",
            )
        handle = open_for_dump(pid, WALK_ACCESS) if for_dump else wrappers.open_process(pid, WALK_ACCESS)
        try:
            started = wrappers.creation_time(handle)
            if target.started is not None and abs(started - target.started) > SAME_START_SECONDS:
                raise ProcessNotFound(
                    pid,
                    f"pid {pid} now belongs to another process (started {started:.3f}, not {target.started:.3f}:"
                    " the one that was found has exited); nothing was dumped",
                )
            process_machine, native = wrappers.machines(handle)
            verdict = bitness_verdict(DUMPER_MACHINE, process_machine, native)
            if verdict.refusal is not None and not listing:
                raise _bitness_refusal(pid, verdict.refusal, process_machine)
        except BaseException:
            wrappers.close_handle(handle)
            raise
        return WindowsSession(target, handle, WALK_ACCESS, started, verdict, listing)

    def host(self) -> WindowsHost:
        return _HOST

    def open_handles(self, proc: "psutil.Process") -> int:
        return int(proc.num_handles())

    def private_bytes(self, mem: MemoryInfo) -> Optional[int]:
        # The commit charge, PagefileUsage: equal to PrivateUsage on real Windows, and the one Wine fills.
        return int(mem.pagefile)

    def watched_memory(self, mem: MemoryInfo) -> int:
        # Private commit bytes (Wine fills only pagefile).
        return int(getattr(mem, "private", 0) or mem.pagefile or mem.rss)

    def watch_events(self) -> WatchSupport:
        from .debugloop import WindowsEvents  # only a watcher needs it

        return WindowsEvents()


#: Windows' HandlerRoutine documentation: CTRL_LOGOFF_EVENT and CTRL_SHUTDOWN_EVENT reach services only;
#: an interactive application is ended before they go out, so its console handler never runs.
SERVICE_WITHOUT_SNAPSHOT = (
    "process {pid} runs in session 0 (a service) and this dumplib in session {own}: a logoff or shutdown"
    " now ends this dumplib without notice, and MiniDumpWriteDump would leave the service's threads"
    " suspended until it is restarted or resumed (pssuspend -r); --snapshot suspends it only for the capture")


def _session_of(pid: int) -> Optional[int]:
    session = wintypes.DWORD()
    try:
        kernel32.ProcessIdToSessionId(pid, ctypes.byref(session))
    except (DumpError, OSError):
        return None  # not known: nothing to warn of
    return int(session.value)


def unsnapshotted_service_warning(pid: int) -> List[str]:
    """The warning for a dump of *pid* written from the process itself (no snapshot): said when the
    target is a service (session 0) and this process is interactive (another session), which Windows
    ends at logoff or shutdown with no console event (SERVICE_WITHOUT_SNAPSHOT)."""
    own, target = _session_of(kernel32.GetCurrentProcessId()), _session_of(pid)
    if own is None or target is None or target != 0 or own == 0:
        return []
    return [SERVICE_WITHOUT_SNAPSHOT.format(pid=pid, own=own)]


class WindowsSession(Session):
    """One target held by a process handle (walk access; the dump's access is taken by write()),
    from Platform.open to close."""

    def __init__(self, target: ProcessInfo, handle: int, access: int, started: float,
                 verdict: BitnessVerdict, listing: bool = False) -> None:
        super().__init__(target, listing)
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
        self._writable()
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
                warnings.extend(unsnapshotted_service_warning(pid))
            source = at_exit or self.handle
            file = wrappers.create_new_file(temp_path)
            with wrappers.handle_closing(file), WriteMonitor(file, options.tick, pid, options.max_pause) as monitor, \
                    WRITES.writing(monitor), signals_cancel(monitor):
                if snapshot:
                    try:
                        # Stop signals are recorded, not raised, in here: nothing comes between the
                        # capture and the finally that frees it.
                        with captured(self.handle, mask, warnings) as taken:
                            snapshot_bytes = taken.cost
                            # The target is suspended only while the snapshot is taken; it runs during the write,
                            # and a debug loop holding it at an event lets it go now (handover.py).
                            stopped = taken.seconds
                            target_runs(pid)
                            used, _ = write_dump(self.handle, pid, file, mask, comment, signature, warnings,
                                                  monitor, event, snapshot=taken.handle)
                    except CaptureFailed as exc:  # nothing was written yet
                        warnings.extend(without_snapshot(pid, options.snapshot, str(exc)))
                        snapshot = False
                if not snapshot:
                    # MiniDumpWriteDump suspends the target's threads for the whole call and resumes them on return.
                    used, stopped = write_dump(source, pid, file, mask, comment, signature, warnings, monitor, event)
                    # All of it is in the file: a debug loop holding the target at an event lets it go now,
                    # before the flush, the read-back, the compression and the sidecar (handover.py).
                    target_runs(pid)
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
        handle = open_for_dump(pid, access)
        try:
            if abs(wrappers.creation_time(handle) - self._started) > SAME_START_SECONDS:  # cannot happen: pinned
                raise ProcessNotFound(pid, f"pid {pid} now belongs to another process; nothing was dumped")
        except BaseException:  # GetProcessTimes failing too: the new handle is not kept, so it is closed
            wrappers.close_handle(handle)
            raise
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
        access = snapshot_rules.snapshot_access(mask) | (DUMP_ACCESS if mode == "auto" else 0)
        try:
            self._take_dump_access(access)
        except AccessDenied as exc:
            warnings.extend(without_snapshot(
                pid, mode, f"the snapshot needs PROCESS_CREATE_PROCESS on the target, which was denied ({exc.message})"))
            return False
        why = commit_shortfall(self.handle)
        if why is not None:
            warnings.extend(without_snapshot(pid, mode, why))
            return False
        return True

    def verify(self, path: str, plan: Plan, report: WriteReport) -> Tuple[str, ...]:
        mask = report.flags if report.flags is not None else plan.flags or 0
        return check_dump(path, plan.target.pid, mask)


_HOST = WindowsHost()


def _exit_handle(event: Optional[TargetEvent]) -> Optional[int]:
    """At a watched exit, the debugger's own handle on the process (debugloop hands it over), else None."""
    if event is None or event.kind != "exit" or event.held is None:
        return None
    assert isinstance(event.held, int), "a held process from another platform's watcher"
    return event.held


def _bitness_refusal(pid: int, why: str, target_machine: int) -> BitnessMismatch:
    from .policy import MACHINE_BITS

    return BitnessMismatch(pid=pid, target_bits=MACHINE_BITS.get(target_machine, 0),
                           dumper_bits=8 * ctypes.sizeof(ctypes.c_void_p), why=why)
