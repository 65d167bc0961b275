"""Postmortem dumps: crash dumps of processes nobody was watching, taken by a handler the OS starts.

Linux: a kernel.core_pattern pipe handler (see _linux/coredump_handler.py); Windows: the AeDebug
debugger (see _windows/aedebug.py). Both write through dumplib's one pipeline: the free-space guard
(reserve, ``fit``), naming, compression, sidecar and retention every dump gets, plus a rate limit.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, Protocol

from .errors import InvalidArgument, UnsupportedPlatform
from .limits import parse_max_per  # noqa: F401 - public here since the postmortem functions came

__all__ = ["install", "uninstall", "status", "list_dumps", "wer_enable", "wer_disable", "wer_status"]


class _Installer(Protocol):
    """What each platform's postmortem module offers (_linux/core_pattern.py, _windows/aedebug.py)."""

    # Each platform takes options of its own (docstrings of install/uninstall/status below).
    install: Callable[..., Dict[str, Any]]
    uninstall: Callable[..., Dict[str, Any]]
    status: Callable[..., Dict[str, Any]]


class _Wer(Protocol):
    """Windows Error Reporting's LocalDumps, as _windows/aedebug.py sets it."""

    wer_enable: Callable[..., Dict[str, Any]]
    wer_disable: Callable[..., Dict[str, Any]]
    wer_status: Callable[..., Dict[str, Any]]


def _platform() -> _Installer:
    if sys.platform.startswith("linux"):
        from ._linux import core_pattern

        return core_pattern
    if sys.platform == "win32":
        from ._windows import aedebug

        return aedebug
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
    where it has it), ``max_seconds`` (the longest a crashed process is held), ``max_exes_per_user``
    (distinct executables of one user dumped per *max_per* window, default 16; e.g.
    ``install("/var/crash/dumplib", max_per="10:3", max_exes_per_user=8)``)."""
    from .remote import is_remote

    if is_remote(directory):
        # The kernel (or AeDebug) starts the handler with an almost empty environment: the credentials
        # of the shell running `install` would not be there at crash time, and dumplib has no root-only
        # credential file of its own yet (docs/egress.md, "Not yet").
        raise InvalidArgument(
            f"postmortem dumps cannot go to a URL yet ({directory.split('?', 1)[0]}): the crash handler runs without"
            " this shell's credentials. Install it with a local --dir and ship the dumps from there",
            argument="directory", value=directory.split("?", 1)[0])
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
    from ._switch import current

    for entry in reversed(dumps_in(directory, current().host())):
        data = read_sidecar(entry.sidecar) or {}
        facts = data.get("postmortem") or {}
        out.append({
            "path": entry.dump,
            "finished_at": entry.finished_at,
            "pid": data.get("pid"),
            "process_name": data.get("process_name"),
            # Linux: the signal; Windows: the exception code the AeDebug handler put in the comment.
            "signal": facts.get("signal_name") or _from_comment(data.get("comment")),
            "exe": facts.get("exe"),
            "kind": data.get("kind"),
            "size": entry.dump_stat.st_size,
            "sidecar": entry.sidecar,
            "postmortem": bool(facts),
        })
    return out


def _from_comment(comment: Any) -> Optional[str]:
    prefix = "postmortem: "
    return comment[len(prefix):] if isinstance(comment, str) and comment.startswith(prefix) else None


def _wer() -> _Wer:
    if sys.platform != "win32":
        raise UnsupportedPlatform(sys.platform)
    from ._windows import aedebug

    return aedebug


def wer_enable(folder: str, *, count: int = 10, kind: str = "mini", exe: Optional[str] = None,
               min_free: Optional[int] = None, allow_system_drive: bool = False,
               per_dump: Optional[int] = None) -> Dict[str, Any]:
    """Windows: point WER LocalDumps (every program, or *exe* like ``app.exe``) at *folder*, keeping *count*
    dumps of *kind*. Refused when the volume cannot hold *count* dumps (estimated from the running
    processes of that name, else *per_dump* bytes each) plus the reserve *min_free*, and on the system
    drive unless *allow_system_drive*. The values found before are backed up for wer_disable()."""
    return _wer().wer_enable(folder, count=count, kind=kind, exe=exe, min_free=min_free,
                             allow_system_drive=allow_system_drive, per_dump=per_dump)


def wer_disable(exe: Optional[str] = None) -> Dict[str, Any]:
    """Windows: put back the LocalDumps values (and key) wer_enable() found."""
    return _wer().wer_disable(exe)


def wer_status(exe: Optional[str] = None) -> Dict[str, Any]:
    """Windows: the LocalDumps values now in force for every program or for *exe*, and dumplib's backup."""
    return _wer().wer_status(exe)
