"""Postmortem dumps: crash dumps of processes nobody was watching, taken by a handler the OS starts.

Linux: a kernel.core_pattern pipe handler (see _linux/coredump_handler.py); Windows: the AeDebug
debugger (see _windows/aedebug.py). Both write through dumplib's one pipeline: the free-space guard
(reserve, ``fit``), naming, compression, sidecar and retention every dump gets, plus a rate limit.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from .errors import UnsupportedPlatform

__all__ = ["install", "uninstall", "status", "list_dumps"]


def _platform() -> Any:
    if sys.platform.startswith("linux"):
        from ._linux import core_pattern

        return core_pattern
    raise UnsupportedPlatform(sys.platform)


def install(directory: str, *, kind: str = "mini", fit: bool = False, compress: Optional[str] = None,
            keep: Optional[int] = None, max_total: Optional[int] = None, min_free: Optional[int] = None,
            max_per: Optional[str] = "10:3", **platform_options: Any) -> Dict[str, Any]:
    """Register dumplib as this machine's crash handler, writing crash dumps to *directory*; returns status().

    *directory* must exist and be writable by root only. Each crash is dumped as *kind* (``fit``: the
    largest kind that fits the free space above the reserve *min_free*, else refused), compressed with
    *compress*, with a sidecar; *keep*/*max_total* prune older dumps there; *max_per* ``"10:3"`` allows
    at most 3 dumps per executable per 10 minutes. What was registered before is backed up for
    uninstall(). Linux options: ``state_dir``, ``sysctl_file``, ``pidfd`` (default: the kernel's %F
    where it has it), ``max_seconds`` (the longest a crashed process is held)."""
    return _platform().install(directory, kind=kind, fit=fit, compress=compress, keep=keep, max_total=max_total,
                               min_free=min_free, max_per=max_per, **platform_options)


def uninstall(**platform_options: Any) -> Dict[str, Any]:
    """Put back exactly what install() found; refuses when the registration in place is not dumplib's."""
    return _platform().uninstall(**platform_options)


def status(**platform_options: Any) -> Dict[str, Any]:
    """What is registered now (dumplib's handler, another one, or none), dumplib's settings and backup."""
    return _platform().status(**platform_options)


def list_dumps(directory: Optional[str] = None, **platform_options: Any) -> List[Dict[str, Any]]:
    """The dumps the handler wrote (newest first): path, time, pid, process, signal or exception, size, sidecar.

    *directory* defaults to the installed handler's. Only dumps with a sidecar that vouches for them count."""
    from .retention import dumps_in
    from .sidecar import read_sidecar

    if directory is None:
        config = status(**platform_options).get("config") or {}
        directory = config.get("dir")
        if directory is None:
            return []
    out: List[Dict[str, Any]] = []
    for entry in reversed(dumps_in(directory)):
        data = read_sidecar(entry.sidecar) or {}
        facts = data.get("postmortem") or {}
        out.append({
            "path": entry.dump,
            "finished_at": entry.finished_at,
            "pid": data.get("pid"),
            "process_name": data.get("process_name"),
            "signal": facts.get("signal_name") or facts.get("exception_code"),
            "exe": facts.get("exe"),
            "kind": data.get("kind"),
            "size": entry.dump_stat.st_size,
            "sidecar": entry.sidecar,
            "postmortem": bool(facts),
        })
    return out
