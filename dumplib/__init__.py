"""dumplib: take process dump files safely (Windows minidumps, Linux ELF cores).

    >>> import dumplib
    >>> result = dumplib.create_dump("MyProcess", r"D:\\dumps", kind="full")   # doctest: +SKIP

Only the public names live here; backends are imported lazily on first use.
"""
from ._version import __version__
from .api import create_dump, estimate
from .errors import (
    AccessDenied,
    AmbiguousProcess,
    BitnessMismatch,
    DumpError,
    DumpExists,
    DumpFailed,
    InsufficientDiskSpace,
    InvalidDumpFile,
    InvalidDumpPath,
    InvalidKind,
    InvalidArgument,
    InvalidCompression,
    ProcessNotFound,
    TargetRefused,
    UnsupportedPlatform,
)
from .kinds import DumpKind
from .inspect import DumpInfo, info
from .results import DumpResult, ProcessInfo, SizeEstimate
from .targets import processes, resolve_target
from .watching import (CpuAbove, CpuBelow, ExceptionRaised, HandlesAbove, MemoryAbove, MemoryBelow, ProcessExit,
                       SignalReceived, ThreadsAbove, Trigger, WatchEvent, dump_all, watch)

__all__ = [
    "__version__",
    "create_dump",
    "estimate",
    "info",
    "DumpInfo",
    "SizeEstimate",
    "processes",
    "resolve_target",
    "DumpKind",
    "DumpResult",
    "ProcessInfo",
    "DumpError",
    "ProcessNotFound",
    "AmbiguousProcess",
    "AccessDenied",
    "BitnessMismatch",
    "TargetRefused",
    "DumpExists",
    "InvalidDumpPath",
    "InvalidDumpFile",
    "InvalidKind",
    "InvalidCompression",
    "InvalidArgument",
    "DumpFailed",
    "InsufficientDiskSpace",
    "UnsupportedPlatform",
    "watch",
    "dump_all",
    "WatchEvent",
    "Trigger",
    "CpuAbove",
    "CpuBelow",
    "MemoryAbove",
    "MemoryBelow",
    "ThreadsAbove",
    "HandlesAbove",
    "SignalReceived",
    "ProcessExit",
    "ExceptionRaised",
]
