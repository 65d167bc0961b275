"""The small interface every platform backend implements, and the one place a backend is chosen."""
from __future__ import annotations

import abc
import dataclasses
import os
import sys
import types
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple, Union

from .errors import TargetRefused, UnsupportedPlatform
from .kinds import DumpKind
from .results import ProcessInfo, SizeEstimate

#: progress(bytes_written_so_far, seconds_elapsed); called from the writing thread or a monitor thread.
ProgressCallback = Callable[[int, float], None]
#: tick(bytes_written_so_far), called often during the write; it may raise to abandon the dump
#: (the free-space watchdog does).
Tick = Callable[[int], None]
#: A sequential output: called with each piece of the dump in file order (a compressor, a pipe).
StreamWrite = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class TargetEvent:
    """What a watcher caught the target doing when it asked for a dump: a signal about to be
    delivered, an exception, or the process's exit. Neutral facts, plus the backend's own record."""

    #: ``signal``, ``exception`` or ``exit``.
    kind: str
    #: The thread it happened on.
    tid: Optional[int] = None
    #: The signal number, the exception code, or (``exit``) the exit code; None for a death by signal.
    code: Optional[int] = None
    #: The faulting address, or where the exception was raised.
    address: Optional[int] = None
    #: Windows: whether the exception was first chance.
    first_chance: Optional[bool] = None
    #: ``exit`` by a signal: that signal's number.
    signal: Optional[int] = None
    #: The backend's record of it: Linux, the 128-byte siginfo_t; Windows, the exception information.
    raw: Any = None
    #: Linux: the process as the watcher's own tracer thread holds it, every thread stopped (at its
    #: exit); the writer reads it in place instead of stopping it (see _linux/signalwatch.py).
    held: Any = None

    @property
    def label(self) -> str:
        """The dump name's EXCEPTIONCODE: ``C0000005``, ``SIGSEGV``, ``EXIT3`` (a death by signal: its name)."""
        if self.kind == "exception":
            return f"{(self.code or 0) & 0xFFFFFFFF:08X}"
        if self.kind == "signal":
            return _signal_name(self.code)
        if self.signal:
            return _signal_name(self.signal)
        code = self.code or 0
        # Windows exit codes may be NTSTATUS values (a crash's C0000005): those read best in hex.
        return f"EXIT{code}" if 0 <= code < 1 << 16 else f"EXIT{code & 0xFFFFFFFF:08X}"


def _signal_name(number: Optional[int]) -> str:
    import signal as _signal

    try:
        return _signal.Signals(number or 0).name
    except ValueError:
        return f"SIG{number}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the writer will write, decided before anything is written or the target is touched.

    Never changed afterwards: what the write learns (the mask that really applied, what the
    writer produced) comes back in its WriteReport."""

    target: ProcessInfo
    kind: DumpKind
    #: The raw mask in force (MINIDUMP_TYPE, or coredump_filter bits on Linux; None: kind rules).
    flags: Optional[int]
    #: Backend-specific detail of the plan (e.g. the selected segments on Linux).
    detail: Any = None
    #: What the writer will write, by the same rules: what the free-space guard compares.
    estimate: Optional[SizeEstimate] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    #: Seconds the writer may keep the target stopped before it lets it go and abandons the dump.
    max_pause: Optional[float] = None
    #: Write from a copy-on-write snapshot so the target runs on during the write: False, True
    #: (refuse with TargetRefused reason ``snapshot-unavailable`` where none can be taken) or
    #: ``"auto"`` (fall back to a normal dump, with a warning saying why).
    snapshot: Union[bool, str] = False
    #: The signal, exception or exit a watcher took this dump at (None: an ordinary dump).
    event: Optional[TargetEvent] = None


@dataclasses.dataclass
class WriteReport:
    """What a write learned, for verification, the result and the sidecar."""

    stopped_seconds: Optional[float] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    #: The raw mask the dump was really written with (a retry may drop flags the OS lacks).
    flags: Optional[int] = None
    #: Backend-specific facts verification needs (e.g. the core's head and thread count on Linux).
    learned: Any = None
    #: Whether the memory was read from a snapshot (the target ran on during the write).
    snapshot: bool = False
    #: Memory the snapshot cost the system while it lived (copy-on-write pages or reserved commit),
    #: in bytes, where the backend can tell.
    snapshot_bytes: Optional[int] = None


class Backend(abc.ABC):
    #: Name reported in DumpResult.backend.
    name: str = ""
    #: Default dump-file extension, with the dot.
    extension: str = ""
    #: Whether process names compare case-insensitively (and without ``.exe``).
    windows_names: bool = False
    #: Whether the writer can produce the dump strictly in file order (write_stream): then it can go
    #: straight through a compressor or to a pipe. Otherwise it needs a seekable file on disk.
    streams: bool = False

    @abc.abstractmethod
    def normalise_flags(self, kind: DumpKind, flags: Optional[int]) -> Optional[int]:
        """Validate a raw *flags* mask (InvalidKind) and return the mask in force for *kind*."""

    @abc.abstractmethod
    def process_table(self) -> Dict[int, str]:
        """Every visible process as pid -> name, from one snapshot."""

    def name_of(self, pid: int) -> Optional[str]:
        """The name of process *pid* as process_table would give it (None: no such process)."""
        return self.process_table().get(pid)

    # The facts below default to psutil, imported only when asked: a backend that can read them
    # more cheaply (Linux: /proc) overrides them, so the one-shot command never imports psutil.

    def pid_exists(self, pid: int) -> bool:
        """Whether *pid* is a process now (a thread's id is not)."""
        from ._psutil import psutil

        return bool(psutil.pid_exists(pid))

    def started(self, pid: int) -> Optional[float]:
        """When process *pid* started, seconds since the epoch (None: gone or hidden)."""
        from ._psutil import psutil

        try:
            return float(psutil.Process(pid).create_time())
        except (psutil.Error, OSError):
            return None

    def command_line(self, pid: int) -> Optional[List[str]]:
        """Process *pid*'s command line, as OS text (None: gone or hidden)."""
        from ._psutil import psutil

        try:
            return list(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return None

    def host_name(self) -> str:
        """This machine's name, for the sidecar."""
        import socket

        return socket.gethostname()

    def sidecar_facts(self, pid: int) -> Dict[str, Any]:
        """More facts for the sidecar of a dump of *pid* (a postmortem handler's signal and executable)."""
        return {}

    @abc.abstractmethod
    def check_target(self, target: ProcessInfo, *, for_dump: bool = False) -> None:
        """Refuse targets that cannot be dumped safely (self, bitness, zombies...) with a typed error.

        The backend may keep the target open from here to release() (one target from start to
        end); *for_dump* says the write will follow, so it may open with the access a dump needs."""

    @abc.abstractmethod
    def plan(self, target: ProcessInfo, kind: DumpKind, flags: Optional[int]) -> Plan:
        """Decide what will be written. Read-only: never stops or suspends the target."""

    @abc.abstractmethod
    def write(
        self,
        plan: Plan,
        temp_path: str,
        *,
        comment: Optional[str],
        signature: str,
        tick: Optional[Tick],
    ) -> WriteReport:
        """Create *temp_path* exclusively (owner-only) and write the dump into it, calling *tick* as it grows.

        *comment* is the user's text (or None); *signature* is dumplib's own record (JSON: tool,
        version, kind, flags), stored apart from the comment so no comment can pass for it."""

    @abc.abstractmethod
    def open_private(self, path: str) -> int:
        """Create *path* exclusively, readable by its owner only, and return an OS file descriptor for writing."""

    def write_stream(self, plan: Plan, write: StreamWrite, *, comment: Optional[str], signature: str,
                     tick: Optional[Tick]) -> WriteReport:
        """Write the dump in file order through *write* (only where ``streams`` is true)."""
        raise NotImplementedError(f"the {self.name} backend needs a seekable file")

    @abc.abstractmethod
    def verify(self, path: str, plan: Plan, report: WriteReport) -> None:
        """Read the written file back; raise DumpFailed unless it holds what the plan promised."""

    def verify_stream(self, plan: Plan, report: WriteReport, size: int) -> None:
        """Check a dump sent through write_stream (which cannot be read back) from what the writer kept."""
        raise NotImplementedError(f"the {self.name} backend does not stream")

    def scratch_usable(self, directory: str) -> bool:
        """Whether *directory* may hold a raw scratch copy of a dump (private, and able to hold it)."""
        return True

    def release(self, target: ProcessInfo) -> None:
        """Let go of whatever the backend holds on *target* (a process handle, a pidfd) since check_target.

        The pipeline calls it exactly once per check_target, in a finally, whatever happened."""

    # -- what dumplib's own files and threads need from this OS (see Files) ---------------------

    @abc.abstractmethod
    def files(self) -> Files:
        """This platform's way with dumplib's own files, directories and helper threads."""

    def watch_events(self) -> Any:
        """What watching needs from this platform (a watching.WatchSupport): the debugger answering
        event triggers (signals, exceptions, exit), held launches, CPU figures; imported only when
        asked. None where the platform has none."""
        return None


def without_snapshot(plan: Plan, why: str) -> List[str]:
    """A backend that cannot snapshot *plan*'s target: refuse (snapshot=True) or say why in a warning ("auto").

    Called before anything is written, so a refusal leaves nothing behind and never stops the target."""
    if plan.snapshot is True:
        raise TargetRefused(f"no snapshot of process {plan.target.pid} can be taken: {why}; nothing was written."
                            " Dump it without a snapshot (the target is then stopped for the whole write), or"
                            ' pass snapshot="auto" (--snapshot=auto) to fall back to that by itself',
                            pid=plan.target.pid, reason="snapshot-unavailable")
    if plan.snapshot == "auto":
        return [f"no snapshot was taken ({why}): the target was stopped for the whole write"]
    return []


_cached: Optional[Backend] = None


def get_backend() -> Backend:
    """The backend for this platform, imported lazily so `import dumplib` stays cheap everywhere."""
    global _cached
    if _cached is None:
        _cached = _load_backend()
    return _cached


def _load_backend() -> Backend:
    if sys.platform == "win32":
        from ._windows.backend import WindowsBackend

        return WindowsBackend()
    if sys.platform.startswith("linux"):
        from ._linux.backend import LinuxBackend, supported_machine

        if supported_machine():
            return LinuxBackend()
        import platform

        raise UnsupportedPlatform(f"linux-{platform.machine()}")
    raise UnsupportedPlatform(sys.platform)


class Files(abc.ABC):
    """What dumplib's own files, directories and helper threads need from the OS it runs on.

    Not the target's business: where the platform differs in how a file is placed, a directory
    held or a volume measured, the neutral modules (placement, outputs, space, _follow) ask this,
    and each platform answers in its own room (_linux/files.py, _windows/files.py)."""

    @abc.abstractmethod
    def uid(self) -> Optional[int]:
        """This user's id as stat reports file owners; None where stat names no owner (Windows: the DACL
        dumplib sets is what makes a file its own)."""

    def mine(self, st: os.stat_result) -> bool:
        """Whether the file *st* describes belongs to this user, as far as stat can say."""
        uid = self.uid()
        return uid is None or st.st_uid == uid

    @abc.abstractmethod
    def read_only(self, directory: str) -> bool:
        """Whether *directory*'s file system is mounted read-only (False where that cannot be told)."""

    @abc.abstractmethod
    def check_trusted(self, directory: str, template: str, fixed: Optional[str], final: str) -> None:
        """Raise InvalidDumpPath if another user could have steered the dump into *directory* or could
        tamper with it there; *fixed* is the directory the path *template* names before its first token,
        which the dump must not leave."""

    @abc.abstractmethod
    def place_new(self, temp: str, final: str) -> None:
        """Give the file *temp* the name *final*, never replacing what is there (FileExistsError)."""

    @abc.abstractmethod
    def hold(self, directory: str, clean: Callable[[bool], List[str]]) -> ContextManager[List[str]]:
        """Hold *directory* while dumplib's temporaries live there, so no other dumplib takes them for dead.

        *clean(locked)* removes stale temporaries and says what it removed; it is called with True
        when no live dumplib holds the directory, or with False where directories cannot be held
        (then only temporaries too old to be alive may go). Yields what the caller should be told."""

    @abc.abstractmethod
    def appending(self, fd: int) -> bool:
        """Whether writes to *fd* go to the end of the file whatever its position (O_APPEND)."""

    @abc.abstractmethod
    def make_owner_only(self, fd: int) -> bool:
        """Make the open file *fd* readable by its owner only; False where a mode cannot do that."""

    @abc.abstractmethod
    def binary(self, fd: int) -> None:
        """Make *fd* pass bytes through unchanged (no newline translation)."""

    @abc.abstractmethod
    def disk_bytes(self, st: os.stat_result) -> Optional[int]:
        """Bytes the file *st* describes takes on disk (None where stat does not say)."""

    @abc.abstractmethod
    def usage(self, volume: Union[str, int]) -> Tuple[int, int]:
        """(size, free bytes for an unprivileged writer) of the volume holding a directory or an open file."""

    def idle_thread(self, tid: int) -> bool:
        """Run thread *tid* (0: the caller) only on a CPU nothing else wants; False where there is no such policy."""
        return False

    def normal_thread(self, tid: int) -> bool:
        """Put thread *tid* back at normal priority; False where that is not allowed (or not possible)."""
        return False

    def import_psutil(self) -> types.ModuleType:
        """psutil, imported without changing this process's privileges."""
        import psutil

        return psutil
