"""The one dump pipeline: resolve, choose output, plan, guard, write, verify, finalize."""
from __future__ import annotations

import contextlib
import os
import threading
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Callable, Iterator, List, Optional, Set, Tuple, Union

from ._accel import datetime  # _datetime: the same classes, without the datetime module's start-up
from ._jsontext import dumps
from ._platform import Plan, Platform, ProgressCallback, Session, SnapshotMode, TargetEvent, WriteOptions
from .outputs import (THE_DUMP, CompressedFile, Output, PlainFile, RawThenCompress, RemoteObject, Stdout, Stored,
                      scratch_directory)
from ._version import __version__
from ._record import record, replace
from .compression import SUFFIXES, parse_codec
from .kinds import DumpKind
from .limits import check_limits
from .errors import DumpExists, DumpFailed, InvalidArgument
from .placement import DEFAULT_TEMPLATE, SIDECAR_SUFFIX, PathLike, plan_destination, writing_in
from .results import DumpResult, ProcessInfo, SizeEstimate
from .sidecar import sidecar_maker, sidecar_path
from .space import SpaceGuard, combine, human, shortfall, throttled_progress
from .targets import Target, resolve_target

if TYPE_CHECKING:
    from ._egress import Store
    from .remote import RemoteTarget

__all__ = ["create_dump", "estimate"]

#: --fit tries these, from the kind asked for downwards.
FIT_ORDER = (DumpKind.FULL, DumpKind.MINIPLUS, DumpKind.MINI, DumpKind.TRIAGE)
#: The longest the target may stay stopped by default: minutes of dumping at disk speed (tens of GiB),
#: yet short enough that a stalled reader or a suspended dumplib cannot hold a service for long.
DEFAULT_MAX_PAUSE = 60.0


def estimate(target: Target, kind: Union[DumpKind, str] = DumpKind.MINI, *, flags: Optional[int] = None) -> SizeEstimate:
    """How many bytes a dump of *target* would take, by the writer's own rules.

    Stops nothing; reads no memory but, on Linux for kinds other than full, the dynamic linker's
    link_map pages."""
    from ._switch import current

    platform = current()
    kind = DumpKind.parse(kind)
    mask = platform.normalise_flags(kind, flags)
    proc = resolve_target(target, platform)
    with platform.open(proc) as session:
        plan = session.plan(kind, mask)
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
    compress: Optional[str] = None,
    compress_level: Optional[int] = None,
    max_pause: Optional[float] = DEFAULT_MAX_PAUSE,
    snapshot: SnapshotMode = False,
    keep_local_on_failure: bool = False,
    _event: Optional[TargetEvent] = None,
) -> DumpResult:
    """Write a dump of *target* and return what was written.

    *target* is a pid or a process name; *path* a file, an existing directory, None (the current
    directory), optionally with name tokens, or ``"-"`` for stdout; *kind* one of ``mini``,
    ``miniplus``, ``full``, ``triage``; *flags* a raw mask overriding the kind (MINIDUMP_TYPE on
    Windows, coredump_filter bits on Linux). The dump is written to a temporary file beside the
    destination, verified, then renamed into place; on any failure (KeyboardInterrupt included)
    nothing is left behind and an existing file is never touched unless *overwrite*. *progress* is
    called with (bytes written, seconds elapsed) while a long dump is written; for a URL destination,
    if it has an ``uploaded(bytes, seconds)`` method, that is called first with the bytes the store has
    acknowledged (the CLI shows them and the rate).

    Disk safety, on by default: before the target is touched, the estimate plus a reserve
    (*min_free* bytes; default max(1 GiB, 5% of the volume)) must fit in the volume's free space,
    else InsufficientDiskSpace (*fit* takes the largest smaller kind that fits instead); during the
    write a watchdog abandons the dump if free space falls below the reserve. *space_check=False*
    turns both off. *sidecar* writes ``<dump>.json`` (metadata and sha256); *keep* / *max_total*
    then delete the oldest dumplib dumps in that directory beyond those limits.

    *compress* (``"zstd"`` or ``"gzip"``, level *compress_level*) compresses the dump: on Linux it
    streams through the compressor, so the raw size never touches the disk; on Windows the raw dump
    goes to the local volume with the most room first and is deleted once compressed and checked.

    *max_pause* bounds how long the target stays stopped (seconds, None for no bound; on Windows how
    long MiniDumpWriteDump keeps it suspended): past it the target is let go and the dump abandoned,
    DumpFailed reason ``max-pause``.

    *snapshot* (``True`` or ``"auto"``) writes from a copy-on-write snapshot of the target, so it is
    stopped only while the snapshot is taken, not while the dump is written, compressed and hashed.
    Where no snapshot can be taken, ``True`` raises TargetRefused reason ``snapshot-unavailable``
    before anything is written and ``"auto"`` writes a normal dump with a warning saying why.

    *keep_local_on_failure*: for a URL where the writer needs a seekable file (Windows), keep the
    verified raw dump if its upload fails (DumpFailed's ``kept`` and message say where); otherwise it
    is deleted. Where the dump streams (Linux) there is no local copy and it changes nothing.
    """
    _check_snapshot(snapshot)
    if max_pause is not None and not max_pause > 0:
        raise InvalidArgument(f"max_pause must be a positive number of seconds or None, not {max_pause!r}",
                              argument="max_pause", value=max_pause)
    started = time.monotonic()
    started_at = datetime.datetime.now()
    check_limits(keep=keep, max_total=max_total, min_free=min_free)
    codec = parse_codec(compress, compress_level)
    from ._switch import current

    platform = current()
    kind = DumpKind.parse(kind)
    mask = platform.normalise_flags(kind, flags)
    opts = _Options(path, kind, flags, overwrite, comment, progress, min_free, space_check, fit, sidecar, keep,
                    max_total, codec, started, started_at, max_pause, snapshot, _event, bool(keep_local_on_failure))
    proc = resolve_target(target, platform)
    with platform.open(proc, for_dump=True) as session:
        return create_in_session(platform, session, mask, opts)


@record(frozen=True)
class _Options:
    """create_dump's arguments, checked, as the pipeline's steps need them."""

    path: Optional[PathLike]
    kind: DumpKind
    flags: Optional[int]
    overwrite: bool
    comment: Optional[str]
    progress: Optional[ProgressCallback]
    min_free: Optional[int]
    space_check: bool
    fit: bool
    sidecar: bool
    keep: Optional[int]
    max_total: Optional[int]
    codec: Optional[Tuple[str, int]]
    started: float
    started_at: datetime.datetime
    max_pause: Optional[float]
    snapshot: SnapshotMode = False
    #: The signal, exception or exit a watcher dumps at (private: dumplib.watch only).
    event: Optional[TargetEvent] = None
    #: A URL on a writer that needs a seekable file (Windows): keep the verified raw dump if the upload fails.
    keep_local_on_failure: bool = False

    @property
    def to_stdout(self) -> bool:
        return _is_stdout(self.path)

    @property
    def retention(self) -> bool:
        return self.keep is not None or self.max_total is not None


def _check_snapshot(snapshot: object) -> None:
    if snapshot is not True and snapshot is not False and snapshot != "auto":
        raise InvalidArgument(f"snapshot must be True, False or \"auto\", not {snapshot!r}",
                              argument="snapshot", value=snapshot)


def create_in_session(platform: Platform, session: Session, mask: Optional[int], opts: "_Options") -> DumpResult:
    """The pipeline from plan to result, on a target already opened (create_dump, the postmortem handler)."""
    warnings: List[str] = []
    kind = opts.kind
    proc = session.target
    host = platform.host()
    output, told = _output(platform, proc, kind, opts)
    warnings += told
    with contextlib.ExitStack() as held:
        # Our temporaries' directories are held from here to the end; dead dumplibs' leftovers go first.
        warnings += held.enter_context(writing_in(output.temp_directories(), host))
        plan = session.plan(kind, mask)
        if opts.space_check:
            plan, told = _guarded_plan(platform, session, plan, output, opts.min_free, opts.fit,
                                       opts.flags is not None)
            warnings += told
            if plan.kind is not kind and not opts.to_stdout:
                output, _ = _output(platform, proc, plan.kind, opts)  # said once already, of the kind asked for
                held.enter_context(writing_in(output.temp_directories(), host))
        else:
            warnings.append("the free-space check is off: this dump may fill the disk")
        watchdogs = ([SpaceGuard(d, host, opts.min_free).watchdog(output.where) for d in output.watched()]
                     if opts.space_check else [])
        cancelled = held.enter_context(_cancellable(proc.pid))
        progress_tick = _progress_tick(opts.progress, output) if opts.progress else None
        tick = combine(progress_tick, cancelled, *watchdogs)
        maker = (sidecar_maker(proc, plan, opts.started_at, opts.comment, opts.codec, platform)
                 if opts.sidecar and not opts.to_stdout else None)
        options = WriteOptions(comment=opts.comment, signature=signature_text(plan.kind, plan.flags), tick=tick,
                               max_pause=opts.max_pause, snapshot=opts.snapshot, event=opts.event)
        report, stored = output.write(session, plan, options, maker)
        result = DumpResult(
            path=stored.path,
            pid=proc.pid,
            process_name=proc.name,
            kind=plan.kind.value,
            flags=report.flags if report.flags is not None else plan.flags,
            size=stored.size,
            seconds=time.monotonic() - opts.started,
            backend=platform.name,
            warnings=(*warnings, *output.warnings, *plan.warnings, *report.warnings, *_sparse_warning(stored)),
            stopped_seconds=report.stopped_seconds,
            disk_bytes=stored.disk_bytes,
            estimated_bytes=plan.estimate.bytes if plan.estimate else None,
            compression=stored.codec,
            raw_size=stored.raw_size,
            sha256=stored.sha256,
            sidecar=sidecar_path(stored.path) if maker is not None else None,
            snapshot=report.snapshot,
            snapshot_bytes=report.snapshot_bytes,
            upload_seconds=stored.upload_seconds,
        )
        if opts.to_stdout and opts.retention:
            result = _with_warnings(result, ["keep/max_total do not apply to a dump sent to stdout"])
        elif opts.retention and not opts.sidecar:
            result = _with_warnings(result, ["keep/max_total count only dumps with a sidecar, and this one has"
                                             " none (sidecar=False): it is not counted and will never be removed"])
        if opts.retention and not opts.to_stdout:
            from .retention import told_not_raised  # only when asked: not on every dump's start-up

            # Retention hears the cancel and the caller's progress (a watch's abandon check) while it hashes
            # the dumps it would remove, but not the disk's watchdog: removing dumps is what frees space.
            # The progress hears 0 bytes: its figure stays the dump's own (it keeps the highest), where an
            # older 10 GiB dump's hash count would have shown "10.0 GiB written".
            heard = combine((lambda _n: progress_tick(0)) if progress_tick is not None else None, cancelled)
            pruned = told_not_raised(lambda: output.retain(stored, opts.keep, opts.max_total, heard),
                                     os.path.dirname(stored.path))
            if pruned:
                result = _with_warnings(result, pruned)
    return replace(result, seconds=time.monotonic() - opts.started)


#: One flag per dump being written in this process, set by cancel_dumps().
_running: Set[threading.Event] = set()
_running_changed = threading.Condition()


@contextlib.contextmanager
def _cancellable(pid: int) -> Iterator[Callable[[int], None]]:
    """A tick for the write that raises once cancel_dumps() asked: the writer's own error path then
    lets the target go (resumes its threads on Windows, through CancelCallback) and removes the file."""
    asked = threading.Event()
    with _running_changed:
        _running.add(asked)

    def tick(_written: int) -> None:
        if asked.is_set():
            raise DumpFailed(f"the dump of process {pid} was cancelled by the program (cancel_dumps);"
                             " nothing was kept and the process runs on", pid=pid, reason="cancelled")

    try:
        yield tick
    finally:
        with _running_changed:
            _running.discard(asked)
            _running_changed.notify_all()


def cancel_dumps(*, wait: float = 30.0) -> int:
    """Cancel every dump this process is writing, on any thread, and wait up to *wait* seconds for
    them to end; returns how many were running.

    For a program that hosts dumplib and must stop cleanly (a Windows service asked to stop, a
    server shutting down): each cancelled ``create_dump`` raises ``DumpFailed`` (reason
    ``"cancelled"``) in its own thread, with its target let go (on Windows its threads resumed) and
    its partial file removed. Where dbghelp never asks whether to cancel (Wine), the write runs to
    its end first and is then discarded.
    """
    with _running_changed:
        asked = list(_running)
        for flag in asked:
            flag.set()
        _running_changed.wait_for(lambda: _running.isdisjoint(asked), timeout=max(0.0, wait))
    return len(asked)


#: A stored file whose apparent size is this many times its bytes on disk is worth a word: copying
#: it with tools that do not keep holes (scp, most uploads) costs the apparent size.
SPARSE_WARNING_RATIO = 8


def _sparse_warning(stored: Stored) -> List[str]:
    if stored.disk_bytes is None or stored.size < SPARSE_WARNING_RATIO * max(stored.disk_bytes, 1 << 20):
        return []
    return [f"{os.path.basename(stored.path)} is sparse: {human(stored.size)} apparent, {human(stored.disk_bytes)}"
            " on disk; copy it with tools that keep holes (cp --sparse, rsync -S, tar -S) or compress it"]


def _is_stdout(path: Optional[PathLike]) -> bool:
    return isinstance(path, str) and path == "-"


def _output(platform: Platform, proc: ProcessInfo, kind: DumpKind, opts: _Options) -> Tuple[Output, Tuple[str, ...]]:
    """How this dump reaches its destination, and what to say of it; bad paths are refused here,
    before the target is touched."""
    name, level = opts.codec if opts.codec else (None, 0)
    host = platform.host()
    if _is_url(opts.path):
        return _remote_output(platform, proc, kind, opts)
    if opts.to_stdout:
        out = Stdout(name, level, host)
        if platform.streams:
            return out, out.warnings
        import tempfile  # here, not at the top: with shutil and random, start-up every dump would pay

        return RawThenCompress(out, scratch_directory(tempfile.gettempdir(), opts.min_free, host), host), out.warnings
    extension = platform.extension + (SUFFIXES[name] if name else "")
    dest = plan_destination(opts.path, proc, kind, overwrite=opts.overwrite, extension=extension,
                            when=opts.started_at, sidecar=opts.sidecar, host=host)
    if name is None:
        return PlainFile(dest, opts.overwrite, host, want_sha256=opts.sidecar, hash_while_writing=platform.streams), ()
    told: Tuple[str, ...] = ()
    if not dest.final.endswith(SUFFIXES[name]):
        told = (f"{os.path.basename(dest.final)} will hold {name}-compressed data but its name does not end"
                f" in {SUFFIXES[name]}; debuggers will not open it before it is decompressed",)
    if platform.streams:
        return CompressedFile(dest, opts.overwrite, host, name, level), told
    return RawThenCompress(CompressedFile(dest, opts.overwrite, host, name, level),
                           scratch_directory(dest.directory, opts.min_free, host), host), told


def _progress_tick(progress: ProgressCallback, output: Output) -> Callable[[int], None]:
    """*progress* as a tick; for an upload, a callback with an ``uploaded(sent, elapsed)`` method (the
    CLI's terminal line) also hears the bytes the store has acknowledged, at the same pace."""
    uploaded = getattr(progress, "uploaded", None)
    if not callable(uploaded) or output.uploaded() is None:
        return throttled_progress(progress)

    def both(written: int, elapsed: float) -> None:
        uploaded(output.uploaded() or 0, elapsed)
        progress(written, elapsed)

    return throttled_progress(both)


def _is_url(path: Optional[PathLike]) -> bool:
    """remote.is_remote(*path*), remote.py imported only for a text that may be a URL: its import (a
    record class built) is start-up every dump to a local path would pay (docs/benchmarks.md)."""
    if not isinstance(path, str) or "://" not in path:  # is_remote's own first test
        return False
    from .remote import is_remote

    return is_remote(path)


def _remote_output(platform: Platform, proc: ProcessInfo, kind: DumpKind,
                   opts: _Options) -> Tuple[Output, Tuple[str, ...]]:
    """A URL destination (docs/egress.md): parsed, its SDK imported, probed for write permission and its
    name checked, all before the target is touched."""
    from .remote import object_name, parse_url

    assert isinstance(opts.path, str)
    target = parse_url(opts.path)  # InvalidDumpPath: a bad URL, a query string
    from ._egress import open_store, probe_once  # the SDK: only now, only for a URL
    from ._egress.signing import load_key

    # The key that signs this dump's sidecar, so that retention (this dump's or a later one's) may count
    # and delete it (_egress/signing.py). Made on first need; a key file that is unsafe is refused
    # when retention is asked (before the target is touched), and otherwise leaves the sidecar unsigned.
    key: Optional[bytes] = None
    unsigned: Tuple[str, ...] = ()
    try:
        key = load_key(platform.host())
    except InvalidArgument as exc:
        if opts.retention:
            raise
        unsigned = (f"{exc.message}: this dump's sidecar is not signed, and store retention will never remove it",)

    store = open_store(target)  # RemoteDestinationError reason no-extra, naming the pip line
    name, level = opts.codec if opts.codec else (None, 0)
    extension = platform.extension + (SUFFIXES[name] if name else "")
    named = object_name(target, proc, kind, opts.started_at, extension, DEFAULT_TEMPLATE)
    # RemoteDestinationError: credentials, container or bucket, write permission, reachability; at the
    # expanded name's prefix (a policy may grant only prod/web/, not the template's prod/).
    probe_once(store, named.prefix)
    named = _free_name(store, target, named, extension, opts)
    told: Tuple[str, ...] = ()
    if opts.snapshot is False and platform.streams:  # a raw-then-upload writer lets the target go before the upload
        told = (f"without --snapshot the target stays stopped while its memory goes to {named.display()} at the"
                " network's pace (--max-pause bounds it); --snapshot=auto lets it run on",)
    return _for_platform(platform, RemoteObject(named, store, opts.overwrite, name, level, key), opts), told + unsigned


def _for_platform(platform: Platform, obj: RemoteObject, opts: _Options) -> Output:
    """A streaming writer sends the object as it writes; one that needs a seekable file (dbghelp) writes
    the raw dump to the local volume with the most room first, which is then compressed, checked and
    uploaded in one pass, and deleted."""
    if platform.streams:
        return obj
    import tempfile  # only where a raw dump waits for compression (see _output)

    return RawThenCompress(obj, scratch_directory(tempfile.gettempdir(), opts.min_free, platform.host()),
                           platform.host(), keep_on_failure=getattr(opts, "keep_local_on_failure", False))


def _free_name(store: "Store", target: "RemoteTarget", named: "RemoteTarget", extension: str,
               opts: _Options) -> "RemoteTarget":
    """The object's name: a caller's name that is taken is DumpExists (unless overwriting); a name dumplib
    chose gives way to the next free ``-N``. Unknown (no read permission): the commit's only-if-absent decides."""
    if opts.overwrite:
        return named
    stem = named.key[: len(named.key) - len(extension)] if named.key.endswith(extension) else named.key
    candidate = named
    for n in range(1, 100):
        taken = [k for k in (candidate.key, candidate.key + SIDECAR_SUFFIX) if store.exists(k)]
        if not taken:
            return candidate
        if not target.is_prefix:
            raise DumpExists(candidate.display(taken[0]))
        candidate = named.with_key(f"{stem}-{n}{extension}")
    raise DumpExists(candidate.display())


def _guarded_plan(platform: Platform, session: Session, plan: Plan, output: Output, min_free: Optional[int],
                  fit: bool, raw_flags: bool) -> Tuple[Plan, Tuple[str, ...]]:
    """The plan whose output fits the free space (the same one, or with *fit* a smaller kind), else refuse.

    The refusal names the smaller kinds that would fit, so those are planned either way.
    """
    assert plan.estimate is not None
    host = platform.host()
    short = shortfall(output.needs(plan.estimate.bytes), min_free, host)
    if short is None:
        return plan, ()
    # Smaller kinds are offered (and taken with fit) only when the user did not give a raw mask.
    smaller = () if raw_flags else FIT_ORDER[FIT_ORDER.index(plan.kind) + 1 :]
    candidates = [session.plan(k, platform.normalise_flags(k, None)) for k in smaller]
    fitting = [c for c in candidates
               if c.estimate is not None and shortfall(output.needs(c.estimate.bytes), min_free, host) is None]
    if fit and fitting:
        chosen = fitting[0]
        assert chosen.estimate is not None
        return chosen, (f"--fit: a {plan.kind.value} dump (~{plan.estimate.bytes} bytes) does not fit; took"
                        f" {chosen.kind.value} (~{chosen.estimate.bytes} bytes) instead",)
    guard, needed, what = short
    why = "" if what == THE_DUMP else f" for {what} (raw estimate {human(plan.estimate.bytes)})"
    raise guard.refuse(plan.estimate, [c.estimate for c in fitting if c.estimate is not None], needed, why)


def _with_warnings(result: DumpResult, extra: List[str]) -> DumpResult:
    return replace(result, warnings=result.warnings + tuple(extra))


def signature_text(kind: DumpKind, flags: Optional[int]) -> str:
    """dumplib's own record stored in the dump, apart from the user's comment: what wrote it and how."""
    return dumps({"tool": "dumplib", "version": __version__, "kind": kind.value, "flags": flags},
                      separators=(",", ":"))
