"""The one exception hierarchy of dumplib.

Every error carries its facts as attributes (pid, path, Windows error code...) so that callers and
the CLI's ``--json`` output never have to parse a message. Messages say what happened and what the
user can do about it. Exit codes are the CLI's business, not the library's.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

    from ._reasons import Reason

__all__ = [
    "DumpError",
    "Reason",
    "ProcessNotFound",
    "AmbiguousProcess",
    "AccessDenied",
    "BitnessMismatch",
    "TargetRefused",
    "DumpExists",
    "InvalidDumpPath",
    "InvalidKind",
    "InvalidCompression",
    "DumpFailed",
    "UnsupportedPlatform",
    "InvalidDumpFile",
    "InsufficientDiskSpace",
    "InvalidArgument",
    "RemoteDestinationError",
]


def __getattr__(name: str) -> Any:
    """``Reason``, from its own module at the first use (dumplib/_reasons.py says why)."""
    if name == "Reason":
        from ._reasons import Reason

        globals()["Reason"] = Reason  # later uses are plain attribute reads
        return Reason
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    """The module's names with ``Reason`` among them before its first use (dir(), inspect, completion)."""
    return sorted(set(globals()) | {"Reason"})


def _reason(value: Union[str, Reason, None]) -> Optional[Reason]:
    """A raiser's reason as the one spelling; an unknown one is a dumplib bug (tests/unit/test_errors.py)."""
    if value is None:
        return None
    from ._reasons import Reason

    return Reason(value)


def _rebuilt(cls: "type[DumpError]", args: Tuple[Any, ...], state: Dict[str, Any]) -> "DumpError":
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class DumpError(Exception):
    """Base class of every error dumplib raises on purpose.

    Each class declares its facts (typed, always present: None when not known); ``details()``
    returns them for ``--json``. Raisers attach only declared facts (tests/unit/test_errors.py reads
    every raise in the code to hold them to it)."""

    #: The facts each class declares, in addition to its bases' (name -> default).
    fields: ClassVar[Tuple[str, ...]] = ()
    message: str

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        declared = self._declared()
        for key in declared:
            setattr(self, key, None)
        for key, value in details.items():
            setattr(self, key, value)
        self._detail_keys = tuple(declared) + tuple(k for k in details if k not in declared)

    @classmethod
    def _declared(cls) -> List[str]:
        out: List[str] = []
        for klass in reversed(cls.__mro__):
            for name in getattr(klass, "fields", ()) if "fields" in vars(klass) else ():
                if name not in out:
                    out.append(name)
        return out

    def __reduce__(self) -> Tuple[Any, ...]:
        # Subclasses take other constructor arguments; rebuild from the message and the facts alone
        # (a snapshot's tracer process hands its errors to the dumping process this way).
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))

    def details(self) -> Dict[str, Any]:
        """The error's facts as a JSON-friendly dict (used by ``dumplib ... --json``)."""
        out: Dict[str, Any] = {}
        for key in self._detail_keys:
            value = getattr(self, key)
            if isinstance(value, (list, tuple)):
                value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
            elif hasattr(value, "to_dict"):
                value = value.to_dict()
            out[key] = value
        return out

    def __str__(self) -> str:
        return self.message


class ProcessNotFound(DumpError):
    """No process matches the pid or name (or it exited before it could be dumped)."""

    fields = ("target",)
    target: Any

    @classmethod
    def exited(cls, pid: int) -> "ProcessNotFound":
        """The target was found, then exited before dumplib could dump it."""
        return cls(pid, f"process {pid} exited before it could be dumped")

    def __init__(self, target: Any, message: Optional[str] = None) -> None:
        if message is None:
            message = (
                f"no process matches {target!r}; list running processes with `dumplib ps`"
                " and pass a pid or an exact process name"
            )
        super().__init__(message, target=target)


class AmbiguousProcess(DumpError):
    """A process name matches more than one process."""

    fields = ("target", "candidates")
    target: str
    candidates: List[Any]

    def __init__(self, target: str, candidates: Sequence[Any]) -> None:
        listing = "; ".join(
            f"pid {c.pid} {c.name} started {c.started_text()}" for c in candidates
        )
        message = (
            f"{len(candidates)} processes are named {target!r} ({listing});"
            " pass the pid of the one to dump instead of the name"
        )
        super().__init__(message, target=target, candidates=list(candidates))


class AccessDenied(DumpError):
    """The operating system refused access to the target process."""

    fields = ("pid", "code", "debug_privilege")
    pid: int
    #: errno (Linux) or the Windows error code.
    code: Optional[int]
    #: Windows: whether SeDebugPrivilege is held (None elsewhere).
    debug_privilege: Optional[bool]

    def __init__(self, message: str, *, pid: int, code: Optional[int] = None, **details: Any) -> None:
        super().__init__(message, pid=pid, code=code, **details)


class BitnessMismatch(DumpError):
    """The target's machine or bitness is one this dumper cannot write a correct dump of."""

    fields = ("pid", "target_bits", "dumper_bits")
    pid: int
    target_bits: int
    dumper_bits: int

    def __init__(self, *, pid: int, target_bits: int, dumper_bits: int, why: Optional[str] = None) -> None:
        message = f"process {pid}: {why}" if why else (
            f"process {pid} is {target_bits}-bit but this Python is {dumper_bits}-bit, and a dump written"
            f" across that line would be wrong. Run dumplib with a {target_bits}-bit Python interpreter instead"
        )
        super().__init__(message, pid=pid, target_bits=target_bits, dumper_bits=dumper_bits)


class TargetRefused(DumpError):
    """The target is one dumplib will not dump: itself, a zombie, a kernel thread, a traced process."""

    fields = ("pid", "reason", "tracer_pid", "tid", "tids", "state", "wchan", "cgroup")
    pid: int
    #: self | zombie | kernel-thread | traced | thread-not-stopping | snapshot-unavailable | memory-map-locked
    reason: Reason
    #: The tracer's pid when reason is "traced".
    tracer_pid: Optional[int]
    #: The thread the refusal is about (the traced one, the one that would not stop, the first one
    #: waiting in the kernel when the memory map is locked).
    tid: Optional[int]
    #: Every thread that would not stop (thread-not-stopping), or waits in the kernel (memory-map-locked).
    tids: Optional[List[int]]
    #: That thread's state letter from /proc (D, T, ...).
    state: Optional[str]
    #: Where in the kernel that thread waits (/proc wchan).
    wchan: Optional[str]
    #: The frozen cgroup holding it, if any.
    cgroup: Optional[str]

    def __init__(self, message: str, *, pid: int, reason: Union[str, Reason], **details: Any) -> None:
        super().__init__(message, pid=pid, reason=_reason(reason), **details)


class DumpExists(DumpError):
    """The destination file exists and ``overwrite`` was not given. The file is left untouched."""

    fields = ("path",)
    path: str

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} already exists and was left untouched; pass overwrite=True (--overwrite)"
            " to replace it, or choose another path",
            path=path,
        )


class InvalidDumpPath(DumpError):
    """The destination cannot hold a dump (missing directory, not writable, not a file...)."""

    fields = ("path",)
    path: str

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)


class InvalidKind(DumpError, ValueError):
    """An unknown dump kind or an invalid raw flags mask."""

    fields = ("kind", "flags")
    kind: Any
    flags: Optional[int]

    def __init__(self, message: str, *, kind: Any = None, flags: Optional[int] = None) -> None:
        super().__init__(message, kind=kind, flags=flags)


class InvalidCompression(DumpError, ValueError):
    """An unknown compression or level, or a codec whose implementation is not installed."""

    fields = ("compress",)
    compress: Any

    def __init__(self, message: str, *, compress: Any = None) -> None:
        super().__init__(message, compress=compress)


class DumpFailed(DumpError):
    """Writing or verifying the dump failed; no file was left behind (but the raw copy ``kept`` names)."""

    fields = ("pid", "reason", "errno", "winerror", "hresult", "max_pause", "kept")
    pid: Optional[int]
    #: What went wrong, for scripts (see Reason; None: an unclassified failure, the message says what happened).
    reason: Optional[Reason]
    errno: Optional[int]
    winerror: Optional[int]
    hresult: Optional[int]
    #: The bound that was passed (reason max-pause), in seconds.
    max_pause: Optional[float]
    #: Where the verified local raw dump was kept when its upload failed and keep_local_on_failure was
    #: asked (Windows, a URL destination); None otherwise (nothing was left behind).
    kept: Optional[str]

    @classmethod
    def max_pause_exceeded(cls, pid: int, max_pause: Optional[float], held: str, advice: str) -> "DumpFailed":
        """The target was let go at *max_pause* before its dump was complete (*held*: "stopped" or
        "suspended"; *advice*: what this platform's user can do instead)."""
        return cls(f"process {pid} was let go after {max_pause or 0:g} s {held} (max_pause) before its dump was"
                   f" complete, so the dump was abandoned and nothing was kept. {advice}, or allow a longer pause"
                   " (--max-pause)", pid=pid, reason="max-pause", max_pause=max_pause)

    @classmethod
    def no_resources(cls, what: str, strerror: Optional[str] = None, errno: Optional[int] = None) -> "DumpFailed":
        """The system refused dumplib *what* (a thread, a child process): a pids limit or short memory.
        Said as such, not as the bare RuntimeError or OSError that would end a watch with a traceback.
        *strerror*, *errno*: the refused fork's (a refused thread comes with neither)."""
        said = f" ({strerror})" if strerror else ""
        # One text for both systems (this module never asks which it runs on): each names its own causes.
        return cls(f"could not start {what}{said}: the system refused it, most likely because dumplib's cgroup is at"
                   " its pids limit or its user at its process limit (Linux), or memory is short (on Windows: the commit"
                   " limit, RAM plus page file, or a job object's memory limit). Raise the pids limit (pids.max of"
                   " dumplib's cgroup; TasksMax= of a systemd unit) or the user's (ulimit -u; LimitNPROC=), or free"
                   " memory (Windows: enlarge the page file or raise the job's limit), and try again",
                   errno=errno, reason="no-resources")

    @classmethod
    def target_exited(cls, pid: int) -> "DumpFailed":
        """The one way to say the target died mid-dump (every backend and step raises this)."""
        return cls(f"process {pid} exited while it was being dumped; nothing was kept", pid=pid, reason="exited")

    def __init__(
        self,
        message: str,
        *,
        pid: Optional[int] = None,
        winerror: Optional[int] = None,
        hresult: Optional[int] = None,
        errno: Optional[int] = None,
        reason: Union[str, Reason, None] = None,
        **details: Any,
    ) -> None:
        super().__init__(message, pid=pid, winerror=winerror, hresult=hresult, errno=errno, reason=_reason(reason),
                         **details)


class UnsupportedPlatform(DumpError):
    """This operating system or architecture has no dumplib backend."""

    fields = ("platform",)
    platform: str

    def __init__(self, platform: str) -> None:
        super().__init__(
            f"dumplib cannot dump processes on {platform!r}: backends exist for Windows (minidumps)"
            " and Linux x86_64 (ELF cores). Run it on one of those",
            platform=platform,
        )


class InvalidDumpFile(DumpError):
    """A file is not a dump dumplib can read, or it is truncated or corrupt."""

    fields = ("path",)
    path: str

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)


class InsufficientDiskSpace(DumpError):
    """The dump would leave (or, during the write, did leave) less free space than the reserve.

    Raised before the target is touched when the estimate does not fit, and by the watchdog when
    another writer eats the space mid-dump; either way nothing is left behind.
    """

    fields = ("path", "needed", "free", "reserve", "alternatives")
    path: str
    needed: int
    free: int
    reserve: int
    alternatives: List[str]

    def __init__(
        self,
        message: str,
        *,
        path: str,
        needed: int,
        free: int,
        reserve: int,
        alternatives: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__(
            message, path=path, needed=needed, free=free, reserve=reserve, alternatives=list(alternatives or [])
        )


class InvalidArgument(DumpError, ValueError):
    """An argument with a value that means nothing (``keep=0``, a negative size...)."""

    fields = ("argument", "value")
    argument: str
    value: Any

    def __init__(self, message: str, *, argument: str, value: Any) -> None:
        super().__init__(message, argument=argument, value=value)


class RemoteDestinationError(DumpError):
    """A URL destination (Azure Blob Storage, S3) cannot take the dump: its SDK is missing, no or bad
    credentials, no such container or bucket, no write permission, or the store cannot be reached.

    Raised by the probe, before the target is touched. Carries no credential: the URL is shown
    without any query string, and only the store's error code and HTTP status are kept."""

    fields = ("url", "store", "reason", "service_code", "status")
    #: The destination as dumplib shows it (never a query string or a credential).
    url: str
    #: ``"azure"`` or ``"s3"``.
    store: str
    #: no-extra | no-credentials | bad-credentials | no-container | no-permission | unreachable
    reason: Reason
    #: The store's own error code (``AuthorizationPermissionMismatch``, ``NoSuchBucket``...).
    service_code: Optional[str]
    #: The HTTP status the store answered with (None: no answer).
    status: Optional[int]

    def __init__(self, message: str, *, url: str, store: str, reason: Union[str, Reason],
                 service_code: Optional[str] = None, status: Optional[int] = None) -> None:
        super().__init__(message, url=url, store=store, reason=_reason(reason), service_code=service_code,
                         status=status)
