"""The one dump pipeline: resolve, choose output, plan, guard, write, verify, finalize."""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import List, Optional, Union

from ._backend import Backend, Plan, ProgressCallback, get_backend
from ._version import __version__
from .kinds import DumpKind
from .output import PathLike, finalize, plan_destination, remove_quietly, remove_stale_temps
from .results import DumpResult, ProcessInfo, SizeEstimate
from .retention import apply_retention
from .sidecar import write_sidecar
from .space import SpaceGuard, combine, throttled_progress
from .targets import Target, resolve_target

__all__ = ["create_dump", "estimate"]

#: --fit tries these, from the kind asked for downwards.
FIT_ORDER = (DumpKind.FULL, DumpKind.MINIPLUS, DumpKind.MINI, DumpKind.TRIAGE)


def estimate(target: Target, kind: Union[DumpKind, str] = DumpKind.MINI, *, flags: Optional[int] = None) -> SizeEstimate:
    """How many bytes a dump of *target* would take, by the writer's own rules; reads no memory, stops nothing."""
    backend = get_backend()
    kind = DumpKind.parse(kind)
    mask = backend.normalise_flags(kind, flags)
    proc = resolve_target(target, backend)
    backend.check_target(proc)
    plan = backend.plan(proc, kind, mask)
    assert plan.estimate is not None
    return plan.estimate


def create_dump(
    target: Target,
    path: Optional[PathLike] = None,
    kind: Union[DumpKind, str] = DumpKind.MINI,
    *,
    flags: Optional[int] = None,
    overwrite: bool = False,
    comment: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    min_free: Optional[int] = None,
    space_check: bool = True,
    fit: bool = False,
    sidecar: bool = True,
    keep: Optional[int] = None,
    max_total: Optional[int] = None,
) -> DumpResult:
    """Write a dump of *target* and return what was written.

    *target* is a pid or a process name; *path* a file, an existing directory or None (the current
    directory), optionally with name tokens; *kind* one of ``mini``, ``miniplus``, ``full``,
    ``triage``; *flags* a raw mask overriding the kind (MINIDUMP_TYPE on Windows, coredump_filter
    bits on Linux). The dump is written to a temporary file beside the destination, verified, then
    renamed into place; on any failure (KeyboardInterrupt included) nothing is left behind and an
    existing file is never touched unless *overwrite*. *progress* is called with (bytes written,
    seconds elapsed) while a long dump is written.

    Disk safety, on by default: before the target is touched, the estimate plus a reserve
    (*min_free* bytes; default max(1 GiB, 5% of the volume)) must fit in the volume's free space,
    else InsufficientDiskSpace (*fit* takes the largest smaller kind that fits instead); during the
    write a watchdog abandons the dump if free space falls below the reserve. *space_check=False*
    turns both off. *sidecar* writes ``<dump>.json`` (metadata and sha256); *keep* / *max_total*
    then delete the oldest dumplib dumps in that directory beyond those limits.
    """
    started = time.monotonic()
    started_at = datetime.datetime.now()
    backend = get_backend()
    kind = DumpKind.parse(kind)
    mask = backend.normalise_flags(kind, flags)
    proc = resolve_target(target, backend)
    backend.check_target(proc)
    dest = plan_destination(path, proc, kind, overwrite=overwrite, extension=backend.extension, when=started_at)
    warnings: List[str] = []
    warnings += [f"removed a stale temporary file of a killed dumplib: {n}" for n in remove_stale_temps(dest.directory)]
    plan = backend.plan(proc, kind, mask)
    guard = SpaceGuard(dest.directory, min_free)
    if space_check:
        plan = _guarded_plan(backend, proc, plan, guard, fit, flags is not None, warnings)
        if plan.kind is not kind:
            dest = plan_destination(path, proc, plan.kind, overwrite=overwrite, extension=backend.extension,
                                    when=started_at)
    else:
        warnings.append("the free-space check is off: this dump may fill the disk")
    tick = combine(throttled_progress(progress) if progress else None,
                   guard.watchdog(dest.final) if space_check else None)
    try:
        report = backend.write(plan, dest.temp, comment=_comment_text(plan.kind, plan.flags, comment), tick=tick)
        backend.verify(dest.temp, plan)
        finalize(dest.temp, dest.final, overwrite=overwrite)
    except BaseException:
        remove_quietly(dest.temp)
        raise
    st = os.stat(dest.final)
    blocks = getattr(st, "st_blocks", None)
    result = DumpResult(
        path=dest.final,
        pid=proc.pid,
        process_name=proc.name,
        kind=plan.kind.value,
        flags=plan.flags,
        size=st.st_size,
        seconds=time.monotonic() - started,
        backend=backend.name,
        warnings=tuple(warnings + plan.warnings + report.warnings),
        stopped_seconds=report.stopped_seconds,
        disk_bytes=blocks * 512 if blocks is not None else None,
        estimated_bytes=plan.estimate.bytes if plan.estimate else None,
        sidecar=write_sidecar(dest.final, proc, plan, started_at, report, comment) if sidecar else None,
    )
    if keep is not None or max_total is not None:
        removed = apply_retention(dest.directory, keep=keep, max_total=max_total, protect=dest.final)
        if removed:
            result = _with_warnings(result, [f"retention removed {os.path.basename(r)}" for r in removed])
    return result


def _guarded_plan(backend: Backend, proc: ProcessInfo, plan: Plan, guard: SpaceGuard, fit: bool,
                  raw_flags: bool, warnings: List[str]) -> Plan:
    """The plan that fits the free space (the same one, or with *fit* a smaller kind), else refuse.

    The refusal names the smaller kinds that would fit, so those are planned either way.
    """
    assert plan.estimate is not None
    if guard.fits(plan.estimate):
        return plan
    # Smaller kinds are offered (and taken with fit) only when the user did not give a raw mask.
    smaller = () if raw_flags else FIT_ORDER[FIT_ORDER.index(plan.kind) + 1 :]
    candidates = [backend.plan(proc, k, backend.normalise_flags(k, None)) for k in smaller]
    if fit:
        for candidate in candidates:
            assert candidate.estimate is not None
            if guard.fits(candidate.estimate):
                warnings.append(
                    f"--fit: a {plan.kind.value} dump (~{plan.estimate.bytes} bytes) does not fit; took"
                    f" {candidate.kind.value} (~{candidate.estimate.bytes} bytes) instead"
                )
                return candidate
    raise guard.refuse(plan.estimate, [c.estimate for c in candidates if c.estimate is not None])


def _with_warnings(result: DumpResult, extra: List[str]) -> DumpResult:
    return dataclasses.replace(result, warnings=result.warnings + tuple(extra))


def _comment_text(kind: DumpKind, flags: Optional[int], comment: Optional[str]) -> str:
    """The comment stored in the dump: the user's text, then what wrote it and how."""
    mask = "kind rules" if flags is None else f"0x{flags:X}"
    signature = f"dumplib {__version__}; kind={kind.value}; flags={mask}"
    return f"{comment}\n{signature}" if comment else signature
