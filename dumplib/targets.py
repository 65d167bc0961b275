"""Finding the process to dump: by pid or by name, refusing ambiguity."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Union

import psutil

from ._backend import Backend, get_backend
from .errors import AmbiguousProcess, ProcessNotFound
from .results import ProcessInfo

__all__ = ["resolve_target", "processes"]

Target = Union[int, str]


def _name_key(name: str, windows: bool) -> str:
    if not windows:
        return name
    name = name.lower()
    return name[:-4] if name.endswith(".exe") else name


def _started(pid: int) -> Optional[float]:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _info(pid: int, name: str) -> ProcessInfo:
    return ProcessInfo(pid=pid, name=name, started=_started(pid))


def resolve_target(target: Target, backend: Optional[Backend] = None) -> ProcessInfo:
    """The one process *target* names: a pid, or a process name matching exactly one process.

    Names compare case-insensitively and without ``.exe`` on Windows. The calling process never
    matches a name (it cannot dump itself), so ``dumplib dump python`` finds the *other* Python.
    """
    backend = backend or get_backend()
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ProcessNotFound(target, f"target must be a pid (int) or a process name (str), not {target!r}")
    if isinstance(target, int):
        if target <= 0 or not psutil.pid_exists(target):
            raise ProcessNotFound(target, f"no process has pid {target}; list processes with `dumplib ps`")
        table = backend.process_table()
        name = table.get(target)
        if name is None:
            try:
                name = psutil.Process(target).name()
            except (psutil.Error, OSError):
                raise ProcessNotFound(
                    target, f"process {target} exited before it could be dumped"
                ) from None
        return _info(target, name)

    wanted = _name_key(target.strip(), backend.windows_names)
    if not wanted:
        raise ProcessNotFound(target, "an empty process name matches nothing; pass a pid or a name")
    me = os.getpid()
    matches = [
        (pid, name)
        for pid, name in backend.process_table().items()
        if pid != me and _name_key(name, backend.windows_names) == wanted
    ]
    if not matches:
        raise ProcessNotFound(target)
    if len(matches) > 1:
        raise AmbiguousProcess(target, sorted((_info(pid, name) for pid, name in matches), key=lambda p: p.pid))
    return _info(*matches[0])


def processes(filter: Optional[str] = None) -> List[ProcessInfo]:
    """Running processes with user and memory figures, for finding a target (``dumplib ps``).

    *filter* keeps processes whose name contains it (case-insensitively) or whose pid equals it.
    Figures the OS will not give (another user's process, say) are None.
    """
    backend = get_backend()
    table: Dict[int, str] = backend.process_table()
    needle = filter.lower() if filter else None
    out: List[ProcessInfo] = []
    for pid, name in sorted(table.items()):
        if needle and needle not in name.lower() and needle != str(pid):
            continue
        out.append(_describe(pid, name, backend))
    return out


def _describe(pid: int, name: str, backend: Backend) -> ProcessInfo:
    started = user = private = rss = None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            started = _try(proc.create_time)
            user = _try(proc.username)
            mem = _try(proc.memory_info)
    except (psutil.Error, OSError):
        mem = None
    if mem is not None:
        rss = mem.rss
        # Windows: the commit charge is PagefileUsage (equal to PrivateUsage on real Windows; Wine
        # fills only the former). Linux: resident minus shared pages is the cheap private figure
        # (USS needs a full smaps read per process).
        private = getattr(mem, "pagefile", None)
        if private is None and hasattr(mem, "shared"):
            private = max(0, mem.rss - mem.shared)
    return ProcessInfo(pid=pid, name=name, started=started, user=user, private_bytes=private, rss_bytes=rss,
                       full_dump_bytes=_full_estimate(backend, pid, name, started))


def _full_estimate(backend: Backend, pid: int, name: str, started: Optional[float]) -> Optional[int]:
    from .errors import DumpError
    from .kinds import DumpKind

    try:
        plan = backend.plan(ProcessInfo(pid, name, started), DumpKind.FULL, backend.normalise_flags(DumpKind.FULL, None))
    except (DumpError, OSError):
        return None  # another user's process, a kernel thread, one that just exited
    return plan.estimate.bytes if plan.estimate else None


def _try(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except (psutil.Error, OSError):
        return None
