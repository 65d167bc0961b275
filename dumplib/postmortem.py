"""Postmortem dumps: crash dumps of processes nobody was watching, taken by a handler the OS starts.

Linux: a kernel.core_pattern pipe handler (see _linux/coredump_handler.py); Windows: the AeDebug
debugger (see _windows/aedebug.py). Both write through dumplib's one pipeline: the free-space guard
(reserve, ``fit``), naming, compression, sidecar and retention every dump gets, plus a rate limit.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol

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
    ``install("/var/crash/dumplib", max_per="10:3", max_exes_per_user=8)``), ``env_file`` (for a URL).

    Linux: *directory* may be a URL (``s3://BUCKET/prefix/``, ``az://CONTAINER/prefix/``; docs/egress.md):
    each crash streams to the store. The kernel gives the handler no credentials: they come from the
    instance's identity, or from *env_file*, a root-only file of ``AWS_*``/``AZURE_*`` lines; install
    probes the store with exactly that environment before it registers anything."""
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
    from .remote import is_remote

    if is_remote(directory):
        return _list_stored(directory, **platform_options)
    for entry in reversed(dumps_in(directory, current().host())):
        data = read_sidecar(entry.sidecar) or {}
        out.append(_row(data, entry.dump, entry.finished_at, entry.dump_stat.st_size, entry.sidecar))
    return out


def _row(data: Dict[str, Any], path: str, finished_at: str, size: int, sidecar: str) -> Dict[str, Any]:
    facts = data.get("postmortem") or {}
    return {
        "path": path,
        "finished_at": finished_at,
        "pid": data.get("pid"),
        "process_name": data.get("process_name"),
        # Linux: the signal; Windows: the exception code the AeDebug handler put in the comment.
        "signal": facts.get("signal_name") or _from_comment(data.get("comment")),
        "exe": facts.get("exe"),
        "kind": data.get("kind"),
        "size": size,
        "sidecar": sidecar,
        "postmortem": bool(facts),
    }


def _list_stored(url: str, **platform_options: Any) -> List[Dict[str, Any]]:
    """The handler's dumps under a store prefix: those whose sidecar carries the handler's key (its
    state directory's, docs/egress.md) or, when that cannot be read, this user's."""
    from ._egress import open_store
    from ._egress.retention import stored_dumps
    from ._egress.signing import load_key, make_key
    from ._switch import current
    from .remote import parse_url

    target = parse_url(url if url.endswith("/") else url + "/")
    config = status(**platform_options).get("config") or {}
    host = current().host()
    handler_key = config.get("egress_key")
    key = make_key(handler_key, host) if handler_key and os.path.exists(handler_key) else load_key(host, create=False)
    with _handler_credentials(config if config.get("dir") == target.display() else {}):
        store = open_store(target)
        entries = stored_dumps(store, target.prefix, key)
    rows = [_row(e.data, target.display(e.dump.key), e.finished_at, e.dump.size, target.display(e.sidecar.key))
            for e in entries]
    return rows[::-1]


@contextlib.contextmanager
def _handler_credentials(config: Dict[str, Any]) -> Iterator[None]:
    """The installed handler's store variables (its root-only --env-file) for the listing of its own prefix,
    over this process's, put back afterwards; without one, this process's own credentials."""
    if sys.platform.startswith("linux") and config.get("env_file"):  # a URL handler exists on Linux only
        from ._linux.core_pattern import PostmortemRefused
        from ._linux.coredump_handler import Refused, read_env_file, swap_store_variables

        try:
            variables = read_env_file(str(config["env_file"]))
        except Refused as exc:
            raise PostmortemRefused(exc.why, argument="env_file", value=config["env_file"]) from None
        saved = swap_store_variables(variables)
        try:
            yield
        finally:
            swap_store_variables(saved)
    else:
        yield


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
