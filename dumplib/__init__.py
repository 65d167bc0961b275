"""dumplib: take process dump files safely (Windows minidumps, Linux ELF cores).

    >>> import dumplib
    >>> result = dumplib.create_dump("MyProcess", r"D:\\dumps", kind="full")   # doctest: +SKIP

Only the public names live here, and each is imported on first use (PEP 562): a command that only
needs `dumplib.info`, or a program that imports dumplib and never dumps, does not pay for the
backends, psutil, the compressors or the readers. `from dumplib import create_dump` works as usual.
"""
from ._version import __version__

# Not `from typing import TYPE_CHECKING`: typing (with re, enum, functools) is most of `import dumplib`'s
# start-up (docs/benchmarks.md, "`import dumplib`");
# mypy and pyright treat a module-level TYPE_CHECKING = False as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ below imports these on use
    from typing import Any, Dict, List

    from .api import cancel_dumps, create_dump, estimate
    from .errors import (
        AccessDenied,
        AmbiguousProcess,
        BitnessMismatch,
        DumpError,
        DumpExists,
        DumpFailed,
        InsufficientDiskSpace,
        InvalidArgument,
        InvalidCompression,
        InvalidDumpFile,
        InvalidDumpPath,
        InvalidKind,
        ProcessNotFound,
        Reason,
        RemoteDestinationError,
        TargetRefused,
        UnsupportedPlatform,
    )
    from .dumpinfo import DumpInfo, info
    from .kinds import DumpKind
    from .results import DumpResult, ProcessInfo, SizeEstimate
    from .targets import processes, resolve_target
    from .triggers import (CpuAbove, CpuBelow, ExceptionRaised, HandlesAbove, MemoryAbove, MemoryBelow,
                           ProcessExit, SignalReceived, ThreadsAbove, Trigger)
    from .watching import WatchEvent, dump_all, watch

#: public name -> the submodule that defines it (kept in step with the TYPE_CHECKING block above;
#: tests/unit/test_import_cost.py checks that the two agree and that every name resolves).
_WHERE: "Dict[str, str]" = {
    "create_dump": "api",
    "cancel_dumps": "api",
    "estimate": "api",
    "info": "dumpinfo",
    "DumpInfo": "dumpinfo",
    "DumpKind": "kinds",
    "DumpResult": "results",
    "ProcessInfo": "results",
    "SizeEstimate": "results",
    "processes": "targets",
    "resolve_target": "targets",
    **{name: "watching" for name in ("watch", "dump_all", "WatchEvent")},
    **{name: "triggers" for name in (
        "Trigger", "CpuAbove", "CpuBelow", "MemoryAbove", "MemoryBelow", "ThreadsAbove", "HandlesAbove",
        "SignalReceived", "ProcessExit", "ExceptionRaised",
    )},
    **{name: "errors" for name in (
        "DumpError", "ProcessNotFound", "AmbiguousProcess", "AccessDenied", "BitnessMismatch", "TargetRefused",
        "DumpExists", "InvalidDumpPath", "InvalidDumpFile", "InvalidKind", "InvalidCompression", "DumpFailed",
        "InsufficientDiskSpace", "UnsupportedPlatform", "InvalidArgument", "Reason", "RemoteDestinationError",
    )},
}

__all__ = [
    "__version__",
    "create_dump",
    "cancel_dumps",
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
    "Reason",
    "InsufficientDiskSpace",
    "UnsupportedPlatform",
    "RemoteDestinationError",
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


def __getattr__(name: str) -> "Any":
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dumplib' has no attribute {name!r}")
    # __import__ with a fromlist returns the submodule itself; importlib would be one more import.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> "List[str]":
    return sorted(set(globals()) | set(__all__))
