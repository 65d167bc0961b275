"""The Windows backend: MiniDumpWriteDump into an owner-only temporary file, then read it back."""
from __future__ import annotations

import ctypes
import threading
import time
from typing import Dict, List, Optional

from ..errors import AccessDenied, BitnessMismatch, DumpFailed, InvalidDumpFile, TargetRefused
from ..formats import minidump
from ..kinds import MINIDUMP_NEWER_FLAGS, DumpKind, MiniDumpType, describe_mask, mask_has_full_memory, windows_mask
from ..results import ProcessInfo
from .._backend import Backend, Plan, ProgressCallback, WriteReport
from . import dbghelp, kernel32, wrappers
from ._common import ERROR_ACCESS_DENIED, ERROR_INVALID_PARAMETER, ERROR_PARTIAL_COPY, Win32Error
from .policy import mismatched_target_bits

#: dbghelp is single-threaded: every call into it goes through this lock.
DBGHELP_LOCK = threading.Lock()
PARTIAL_COPY_ATTEMPTS = 3
PROGRESS_INTERVAL = 0.25
_POINTER_BITS = 8 * ctypes.sizeof(ctypes.c_void_p)


class WindowsBackend(Backend):
    name = "windows-dbghelp"
    extension = ".dmp"
    windows_names = True

    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        return windows_mask(kind, flags)

    def process_table(self) -> Dict[int, str]:
        return wrappers.process_table()

    def check_target(self, target: ProcessInfo) -> None:
        if target.pid == kernel32.GetCurrentProcessId():
            raise TargetRefused(
                f"process {target.pid} is this Python process: dumping yourself deadlocks on the loader"
                " lock. Dump it from another process, e.g. subprocess.run(['dumplib', 'dump', str(os.getpid())])",
                pid=target.pid,
                reason="self",
            )
        process = _open_with_debug_privilege(target.pid, kernel32.PROCESS_QUERY_LIMITED_INFORMATION)
        with wrappers.handle_closing(process):
            target_wow64 = wrappers.is_wow64(process)
        dumper_wow64 = wrappers.is_wow64(kernel32.GetCurrentProcess())
        target_bits = mismatched_target_bits(_POINTER_BITS, dumper_wow64, target_wow64)
        if target_bits is not None:
            raise BitnessMismatch(pid=target.pid, target_bits=target_bits, dumper_bits=_POINTER_BITS)

    def plan(self, target: ProcessInfo, kind: DumpKind, flags: Optional[int]) -> Plan:
        mask = windows_mask(kind, flags)
        return Plan(target=target, kind=kind, flags=mask)

    def write(
        self, plan: Plan, temp_path: str, *, comment: str, progress: Optional[ProgressCallback]
    ) -> WriteReport:
        pid, mask = plan.target.pid, plan.flags or 0
        access = kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ
        if mask & MiniDumpType.WithHandleData:
            access |= kernel32.PROCESS_DUP_HANDLE
        report = WriteReport()
        process = _open_with_debug_privilege(pid, access)
        with wrappers.handle_closing(process):
            file = wrappers.create_new_file(temp_path)
            with wrappers.handle_closing(file), _ProgressMonitor(file, progress):
                used = _write_dump(process, pid, file, mask, comment, report.warnings)
                kernel32.FlushFileBuffers(file)
            if used != mask:
                plan.flags = used
            code = wrappers.exit_code(process)
            if code is not None:
                raise DumpFailed(
                    f"process {pid} exited (code {code}) while it was being dumped; nothing was kept."
                    " Dump it again while it runs",
                    pid=pid,
                    reason="exited",
                )
        return report

    def verify(self, path: str, plan: Plan) -> None:
        verify_minidump(path, plan.target.pid, plan.flags or 0)


def _open_with_debug_privilege(pid: int, access: int) -> int:
    """Open *pid*; on ERROR_ACCESS_DENIED enable SeDebugPrivilege once and retry, saying what was held."""
    try:
        return wrappers.open_process(pid, access)
    except AccessDenied:
        pass
    try:
        held = wrappers.enable_privilege("SeDebugPrivilege")
    except Win32Error:
        held = False
    try:
        return wrappers.open_process(pid, access)
    except AccessDenied:
        if held:
            advice = (
                "SeDebugPrivilege is held and enabled, so the target is protected (a PPL process such as"
                " lsass, or anti-malware) and cannot be dumped; dumplib never bypasses that"
            )
        else:
            advice = (
                "this user does not hold SeDebugPrivilege (not elevated, or filtered by UAC): run dumplib"
                " as the process's owner or from an elevated (Run as administrator) prompt"
            )
        raise AccessDenied(
            f"access to process {pid} was denied; {advice}",
            pid=pid,
            code=ERROR_ACCESS_DENIED,
            debug_privilege=held,
        ) from None


def _write_dump(process: int, pid: int, file: int, mask: int, comment: str, warnings: List[str]) -> int:
    """Call MiniDumpWriteDump, retrying a partial copy and dropping flags this dbghelp lacks. Returns the mask used."""
    text = ctypes.create_unicode_buffer(comment)  # NUL-terminated UTF-16, as CommentStreamW expects
    stream = dbghelp.MINIDUMP_USER_STREAM(dbghelp.CommentStreamW, ctypes.sizeof(text), ctypes.addressof(text))
    streams = dbghelp.MINIDUMP_USER_STREAM_INFORMATION(1, ctypes.pointer(stream))
    attempt = 0
    while True:
        attempt += 1
        try:
            with DBGHELP_LOCK:
                dbghelp.MiniDumpWriteDump(process, pid, file, mask, None, ctypes.byref(streams), None)
            return mask
        except Win32Error as exc:
            if wrappers.exit_code(process) is not None:
                raise DumpFailed(
                    f"process {pid} exited while it was being dumped; nothing was kept", pid=pid, reason="exited"
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


class _ProgressMonitor:
    """Reports the growing file size to *callback* from a side thread while dbghelp writes."""

    def __init__(self, file: int, callback: Optional[ProgressCallback]) -> None:
        self._file, self._callback = file, callback
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._start = time.monotonic()

    def __enter__(self) -> "_ProgressMonitor":
        if self._callback is not None:
            self._thread = threading.Thread(target=self._run, name="dumplib-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        assert self._callback is not None
        while not self._stop.wait(PROGRESS_INTERVAL):
            try:
                size = wrappers.file_size(self._file)
            except Win32Error:
                return
            self._callback(size, time.monotonic() - self._start)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
