"""The one dump pipeline: resolve, choose output, plan, write, verify, finalize."""
from __future__ import annotations

import os
import time
from typing import Optional, Union

from ._backend import ProgressCallback, get_backend
from ._version import __version__
from .kinds import DumpKind
from .output import PathLike, finalize, plan_destination, remove_quietly
from .results import DumpResult
from .targets import Target, resolve_target

__all__ = ["create_dump"]


def create_dump(
    target: Target,
    path: Optional[PathLike] = None,
    kind: Union[DumpKind, str] = DumpKind.MINI,
    *,
    flags: Optional[int] = None,
    overwrite: bool = False,
    comment: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
) -> DumpResult:
    """Write a dump of *target* and return what was written.

    *target* is a pid or a process name; *path* a file, an existing directory or None (the current
    directory), optionally with name tokens; *kind* one of ``mini``, ``miniplus``, ``full``,
    ``triage``; *flags* a raw mask overriding the kind (MINIDUMP_TYPE on Windows, coredump_filter
    bits on Linux). The dump is written to a temporary file beside the destination, verified, then
    renamed into place; on any failure (KeyboardInterrupt included) nothing is left behind and an
    existing file is never touched unless *overwrite*. *progress* is called with (bytes written,
    seconds elapsed) while a long dump is written.
    """
    started = time.monotonic()
    backend = get_backend()
    kind = DumpKind.parse(kind)
    mask = backend.normalise_flags(kind, flags)
    proc = resolve_target(target, backend)
    backend.check_target(proc)
    dest = plan_destination(path, proc, kind, overwrite=overwrite, extension=backend.extension)
    plan = backend.plan(proc, kind, mask)
    try:
        report = backend.write(plan, dest.temp, comment=_comment_text(kind, plan.flags, comment), progress=progress)
        backend.verify(dest.temp, plan)
        finalize(dest.temp, dest.final, overwrite=overwrite)
    except BaseException:
        remove_quietly(dest.temp)
        raise
    st = os.stat(dest.final)
    blocks = getattr(st, "st_blocks", None)
    return DumpResult(
        path=dest.final,
        pid=proc.pid,
        process_name=proc.name,
        kind=kind.value,
        flags=plan.flags,
        size=st.st_size,
        seconds=time.monotonic() - started,
        backend=backend.name,
        warnings=tuple(plan.warnings + report.warnings),
        stopped_seconds=report.stopped_seconds,
        disk_bytes=blocks * 512 if blocks is not None else None,
    )


def _comment_text(kind: DumpKind, flags: Optional[int], comment: Optional[str]) -> str:
    """The comment stored in the dump: the user's text, then what wrote it and how."""
    mask = "kind rules" if flags is None else f"0x{flags:X}"
    signature = f"dumplib {__version__}; kind={kind.value}; flags={mask}"
    return f"{comment}\n{signature}" if comment else signature
