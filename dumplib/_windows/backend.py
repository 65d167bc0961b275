"""The Windows backend: MiniDumpWriteDump into an owner-only temporary file, then read it back."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Dict, Iterable, List, Optional

from ..errors import AccessDenied, BitnessMismatch, DumpFailed, InvalidDumpFile, TargetRefused
from ..formats import minidump
from ..kinds import MINIDUMP_NEWER_FLAGS, DumpKind, MiniDumpType, describe_mask, mask_has_full_memory, windows_mask
from ..results import ProcessInfo, SizeEstimate
from .._backend import Backend, Plan, Tick, WriteReport
from . import dbghelp, kernel32, wrappers
from ._common import ERROR_ACCESS_DENIED, ERROR_INVALID_PARAMETER, ERROR_PARTIAL_COPY, Win32Error
from .debugloop import exception_param
from .policy import mismatched_target_bits

#: dbghelp is single-threaded: every call into it goes through this lock.
DBGHELP_LOCK = threading.Lock()
PARTIAL_COPY_ATTEMPTS = 3
MONITOR_INTERVAL = 0.1
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
        process = _open_with_debug_privilege(target.pid, kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ)
        with wrappers.handle_closing(process):
            parts = estimate_parts(wrappers.committed_regions(process), mask)
        estimate = SizeEstimate(pid=target.pid, kind=kind.value, flags=mask, bytes=sum(parts.values()), breakdown=parts)
        return Plan(target=target, kind=kind, flags=mask, estimate=estimate)

    def write(
        self, plan: Plan, temp_path: str, *, comment: Optional[str], signature: str, tick: Optional[Tick]
    ) -> WriteReport:
        pid, mask = plan.target.pid, plan.flags or 0
        access = kernel32.PROCESS_QUERY_INFORMATION | kernel32.PROCESS_VM_READ
        if mask & MiniDumpType.WithHandleData:
            access |= kernel32.PROCESS_DUP_HANDLE
        report = WriteReport()
        process = _open_with_debug_privilege(pid, access)
        with wrappers.handle_closing(process):
            file = wrappers.create_new_file(temp_path)
            with wrappers.handle_closing(file), _Monitor(file, tick) as monitor:
                used = _write_dump(process, pid, file, mask, _comment_stream(comment, signature), report.warnings, monitor)
                monitor.raise_if_abandoned()
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

    def open_private(self, path: str) -> int:
        import msvcrt

        handle = wrappers.create_new_file(path)
        try:
            return msvcrt.open_osfhandle(handle, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            wrappers.close_handle(handle)
            raise

    def verify(self, path: str, plan: Plan) -> None:
        verify_minidump(path, plan.target.pid, plan.flags or 0)


#: Streams besides memory: thread and module lists, memory map, handles, unwind data. Measured
#: under Wine at 0.8 MB for an idle python.exe mini dump; real Windows is of the same order.
METADATA_BYTES = 1 << 20
#: What a mini dump takes of each thread stack and module (referenced pages, headers), roughly.
PER_REGION_MINI = 64 << 10


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


def _comment_stream(comment: Optional[str], signature: str) -> str:
    """CommentStreamW: the user's text, then dumplib's signature record on its own last line."""
    return f"{comment}\n{signature}" if comment else signature


def _write_dump(
    process: int, pid: int, file: int, mask: int, comment: str, warnings: List[str], monitor: "_Monitor"
) -> int:
    """Call MiniDumpWriteDump, retrying a partial copy and dropping flags this dbghelp lacks. Returns the mask used."""
    text = ctypes.create_unicode_buffer(comment)  # NUL-terminated UTF-16, as CommentStreamW expects
    stream = dbghelp.MINIDUMP_USER_STREAM(dbghelp.CommentStreamW, ctypes.sizeof(text), ctypes.addressof(text))
    streams = dbghelp.MINIDUMP_USER_STREAM_INFORMATION(1, ctypes.pointer(stream))
    callback = dbghelp.MINIDUMP_CALLBACK_INFORMATION(monitor.callback, None)
    attempt = 0
    while True:
        attempt += 1
        try:
            with DBGHELP_LOCK:
                dbghelp.MiniDumpWriteDump(process, pid, file, mask, exception_param(), ctypes.byref(streams),
                                          ctypes.byref(callback))
            return mask
        except Win32Error as exc:
            monitor.raise_if_abandoned()
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


class _Monitor:
    """Watches the growing file from a side thread while dbghelp writes, calling *tick* with its size.

    If *tick* raises (the free-space watchdog), the dump is cancelled through MiniDumpWriteDump's
    CancelCallback on Windows; where dbghelp never asks (Wine), the write runs to its end and the
    stored error is raised afterwards, so the file is still removed.
    """

    def __init__(self, file: int, tick: Optional[Tick]) -> None:
        self._file, self._tick = file, tick
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self.callback = dbghelp.MINIDUMP_CALLBACK_ROUTINE(self._on_callback)

    def _on_callback(self, param: object, callback_input: object, callback_output: object) -> bool:
        try:
            if callback_input.contents.CallbackType == dbghelp.CancelCallback:  # type: ignore[attr-defined]
                out = callback_output.contents  # type: ignore[attr-defined]
                out.CheckCancel = True  # keep asking
                out.Cancel = self.error is not None
        except Exception:
            pass  # an exception must never unwind through dbghelp's C frames
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

    def raise_if_abandoned(self) -> None:
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
