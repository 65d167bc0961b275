"""Where the dump's bytes go, and what disk space each way needs.

Four ways, one interface: a plain file; a file written through a compressor (platforms that write
in file order: Linux); stdout (a pipe, or a file the shell redirected it to); and, for platforms
that need a seekable file (dbghelp), a raw file on the roomiest volume that is then compressed
into the destination or to stdout. Each says which volumes it will fill and by how much, so the
one free-space guard covers them all, and which directories it puts temporaries in, so they are
held (see placement.writing_in) for as long as those exist.

Every file is created by ``Host.open_private`` (exclusive, never through a symlink, owner-only)
under a temporary name, and the dump and its sidecar are moved into place together or not at all.
"""
from __future__ import annotations

import abc
import contextlib
import errno
import os
import stat
import sys
import time

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Iterator, List, Optional, Tuple, Union

from ._bounded import closing, stalled_output
from ._hashing import SMALL_HASH, FollowingHasher, new_sha256
from ._platform import Host, Plan, Session, Sink, Tick, WriteOptions, WriteReport
from ._record import record, replace
from .compression import SUFFIXES, CompressingWriter, DecodingHasher, open_content
from .errors import DumpError, DumpExists, DumpFailed, InvalidDumpPath, RemoteDestinationError
from .placement import SIDECAR_SUFFIX, Destination, finalize_all, remove_own, remove_quietly, temp_path
from .sidecar import SidecarMaker, sha256_of, sha256_of_stream
from .space import CHECK_NOW, Volume, roomiest_directory

if TYPE_CHECKING:  # the store layer imports SDKs: loaded only for a URL (api._output)
    from ._egress import Store, Uploader
    from .remote import RemoteTarget

#: For the pre-flight only: compressed output is assumed to take at most this share of the raw
#: estimate. Measured cores compress to 6-10% (docs/benchmarks.md); memory full of already
#: compressed or encrypted data would not, and then the watchdog stops the dump cleanly.
ASSUMED_RATIO = 0.5
#: What a plain file's need is called: the one need that is simply the estimate, needing no explanation.
THE_DUMP = "the dump"
_BLOCK = 4 << 20


@record(frozen=True)
class Stored:
    """What ended up where."""

    path: str
    size: int
    raw_size: int
    codec: Optional[str] = None
    sha256: Optional[str] = None
    #: Bytes the stored file takes on disk (None for a stream).
    disk_bytes: Optional[int] = None
    #: Seconds the upload took, for an object sent to a store.
    upload_seconds: Optional[float] = None


#: (where, bytes, what): a volume (a directory, or the descriptor of a file) and what it must hold.
if TYPE_CHECKING:
    Need = Tuple[Volume, int, str]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    Need = object


class Output(abc.ABC):
    #: Human name of the destination, for messages.
    where: str = ""

    def __init__(self) -> None:
        #: What the caller should be told about this destination.
        self.warnings: Tuple[str, ...] = ()

    @abc.abstractmethod
    def needs(self, estimate: int) -> List[Need]:
        """What this output will put on which volume for a dump estimated at *estimate* raw bytes."""

    @abc.abstractmethod
    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        """Write, verify and put the dump (and its sidecar) in place; on any exception leave nothing behind."""

    def watched(self) -> List[Volume]:
        """Volumes whose free space the watchdog checks during the write."""
        return [d for d, _, _ in self.needs(0)]

    def temp_directories(self) -> List[str]:
        """Directories this output creates temporaries in (held against stale-temporary cleanup)."""
        return []

    def uploaded(self) -> Optional[int]:
        """Bytes the store has acknowledged so far; None for an output that uploads nothing."""
        return None

    def retain(self, stored: Stored, keep: Optional[int], max_total: Optional[int],
               tick: Optional[Tick] = None) -> List[str]:
        """Apply retention beside the dump just stored (never removing it); what to tell the caller.
        *tick* (the dump's cancel and progress, not its disk watchdog: retention frees space) hears the
        long reads, and may raise to stop retention there."""
        return []


class _FileOutput(Output):
    """A dump file (and maybe its sidecar) made under temporary names beside the destination."""

    def __init__(self, dest: Destination, overwrite: bool, host: Host) -> None:
        super().__init__()
        self.dest, self.overwrite, self.where, self.host = dest, overwrite, dest.final, host

    def temp_directories(self) -> List[str]:
        return [self.dest.directory]

    def retain(self, stored: Stored, keep: Optional[int], max_total: Optional[int],
               tick: Optional[Tick] = None) -> List[str]:
        from .retention import RetentionStopped, apply_retention  # only when asked: not on every dump's start-up

        stop: List[str] = []
        try:
            removed = apply_retention(os.path.dirname(stored.path), keep=keep, max_total=max_total,
                                      protect=stored.path, host=self.host, tick=tick)
        except RetentionStopped as exc:
            removed, stop = exc.removed, [exc.message]
        return [f"retention removed {os.path.basename(r)}" for r in removed] + stop

    @contextlib.contextmanager
    def _naming_the_dump(self) -> Iterator[None]:
        """A refusal to create our temporary is a refusal to create the dump: say which."""
        try:
            yield
        except InvalidDumpPath as exc:
            if exc.path != self.dest.temp:
                raise
            raise InvalidDumpPath(f"cannot write {self.dest.final}: {exc.message}", path=self.dest.final) from None

    def _place(self, stored: Stored, sidecar: Optional[SidecarMaker], report: WriteReport,
               tick: Optional[Tick] = None) -> Stored:
        """Write the sidecar (if any) to its own temporary, then move both into place together.

        A name dumplib chose that another dump took meanwhile (two dumps of one process into one
        directory within a second) gives way to the next free ``-N`` name; a name the caller gave
        stays the caller's, and DumpExists protects what is there."""
        if tick is not None:
            tick(CHECK_NOW)  # the reserve checked once the dump is whole, on every path (space.CHECK_NOW)
        if sidecar is not None and self.dest.sidecar is not None and stored.sha256 is None:
            # The whole dump read once more (Windows, and small dumps): 5-20 s for 10 GB, which a cancel
            # or a watch's end must not wait for (a Windows watcher gave up first, the temporary left).
            with _output_errors(self.dest.final):  # of the file as stored: what a later check compares
                stored = replace(stored, sha256=sha256_of(self.dest.temp, tick))
        for _attempt in range(100):
            try:
                return self._place_as(stored, sidecar, report)
            except DumpExists:
                if self.dest.chosen is None or self.overwrite:
                    raise
                self.dest = self.dest.next_free()
                self.where = self.dest.final
        raise DumpExists(self.dest.final)

    def _place_as(self, stored: Stored, sidecar: Optional[SidecarMaker], report: WriteReport) -> Stored:
        moves = [(self.dest.temp, self.dest.final)]
        side_temp = None
        try:
            if sidecar is not None and self.dest.sidecar is not None:
                side_temp = temp_path(self.dest.directory)
                # A dump is kept only beside its sidecar: when the sidecar cannot be written, the dump
                # (complete and verified by now) is removed too (the callers' cleanup), and said so.
                with _output_errors(self.dest.sidecar, left=_NO_SIDECAR.format(final=self.dest.final)):
                    _write_all(self.host, side_temp, sidecar(self.dest.temp, self.dest.final, stored, report))
                moves.append((side_temp, self.dest.sidecar))
            finalize_all(moves, overwrite=self.overwrite, host=self.host)
        except BaseException:
            if side_temp is not None:
                remove_own(side_temp, self.host)
                self.host.forget(side_temp)
            raise
        return replace(stored, path=self.dest.final)


class PlainFile(_FileOutput):
    """The dump written as it is into the destination."""

    def __init__(self, dest: Destination, overwrite: bool, host: Host, want_sha256: bool,
                 hash_while_writing: bool) -> None:
        super().__init__(dest, overwrite, host)
        #: A writer that goes in file order can be hashed as it writes (see _hashing.py).
        self.want_sha256, self.hash_while_writing = want_sha256, hash_while_writing

    def needs(self, estimate: int) -> List[Need]:
        return [(self.dest.directory, estimate, THE_DUMP)]

    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        expected = plan.estimate.bytes if plan.estimate is not None else None
        # A dump estimated at SMALL_HASH or less is hashed once verified (_place: the interpreter's own
        # sha256), not followed: its copy ends within a millisecond or two, so a follower overlaps
        # nothing, and a thread costs a small dump's start-up (docs/benchmarks.md, eleventh session).
        follow = expected is None or expected > SMALL_HASH
        hasher = (FollowingHasher(self.dest.temp, expected=expected)
                  if self.want_sha256 and self.hash_while_writing and follow else None)
        if hasher is not None:
            # It hashes nothing while the target is stopped (_hashing.py); the writer says when it runs.
            options = replace(options, released=hasher.released)
        sha = None
        try:
            with self._naming_the_dump():
                report = session.write(plan, self.dest.temp, options)
            if hasher is not None:
                hasher.released()  # a writer that never said (Windows): the target runs again by now
            st = os.stat(self.dest.temp)
            said = session.verify(self.dest.temp, plan, report)
            report = replace(report, warnings=report.warnings + said) if said else report
            if hasher is not None:
                sha = hasher.result(st.st_size, options.tick)
                hasher = None
            stored = Stored(self.dest.temp, st.st_size, st.st_size, None, sha, self.host.disk_bytes(st))
            stored = self._place(stored, sidecar, report, options.tick)
        except BaseException as exc:
            try:
                if hasher is not None:
                    hasher.abandon()
            finally:  # a second Ctrl-C in that wait must not keep the partial file (review: 1 GiB left)
                told = _discard(self.dest.temp, self.host, exc)
            if told is not None:
                raise told from None
            raise
        return report, stored


class CompressedFile(_FileOutput):
    """The dump streams through the compressor into the destination: the raw size never touches disk."""

    def __init__(self, dest: Destination, overwrite: bool, host: Host, codec: str, level: int) -> None:
        super().__init__(dest, overwrite, host)
        self.codec, self.level = codec, level

    def needs(self, estimate: int) -> List[Need]:
        return [(self.dest.directory, int(estimate * ASSUMED_RATIO), "the compressed dump, assumed at most half the raw size")]

    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        try:
            with self._naming_the_dump():
                fd = self.host.open_private(self.dest.temp)
            with closing(fd):
                out = CompressingWriter(fd, self.codec, self.level)
                report = session.write_stream(plan, _sink(out, self.dest.final, plan.target.pid), options, local=True)
                with _output_errors(self.dest.final, plan.target.pid):
                    out.close()  # the compressor's last flush can still meet a full disk
            # The core's header, notes and size, from what the writer produced; then the file read
            # back must be exactly the compressed bytes produced. Decompressing it all again would
            # cost more than the dump did (docs/benchmarks.md has zstd's decoding speed).
            session.verify_stream(plan, report, out.raw_bytes)
            _check_stored(self.dest.temp, out.sha256, out.stored_bytes, options.tick)
            stored = self._place_compressed(out, sidecar, report, options.tick)
        except BaseException as exc:
            told = _discard(self.dest.temp, self.host, exc)
            if told is not None:
                raise told from None
            raise
        return report, stored

    def take_raw(self, raw: str, tick: Optional[Tick], sidecar: Optional[SidecarMaker],
                 report: WriteReport, pid: Optional[int] = None) -> Stored:
        """Compress an already verified raw dump (of process *pid*) into the destination, check it decodes back to it."""
        try:
            with self._naming_the_dump():
                fd = self.host.open_private(self.dest.temp)
            try:
                out, raw_sha = _pump(raw, fd, self.codec, self.level, tick, self.dest.final, pid)
            finally:
                os.close(fd)
            _check_round_trip(self.dest.temp, self.codec, raw_sha, out.raw_bytes, tick)
            stored = self._place_compressed(out, sidecar, report, tick)
        except BaseException:
            remove_own(self.dest.temp, self.host)
            raise
        return stored

    def _place_compressed(self, out: CompressingWriter, sidecar: Optional[SidecarMaker],
                          report: WriteReport, tick: Optional[Tick]) -> Stored:
        stored = Stored(self.dest.temp, out.stored_bytes, out.raw_bytes, self.codec, out.sha256,
                        self.host.disk_bytes(os.stat(self.dest.temp)))
        return self._place(stored, sidecar, report, tick)


class Stdout(Output):
    """The dump goes down stdout, compressed or not: a pipe, or a file the shell redirected stdout to.

    A redirected file is a volume like any other: it gets the guard and the watchdog, is made
    owner-only if it was empty (the dump is as secret as a dump file), and on failure is cut back
    to what it held before, so what is left is said truthfully."""

    def __init__(self, codec: Optional[str], level: int, host: Host) -> None:
        super().__init__()
        self.codec, self.level = codec, level
        self._host = host
        self.fd = _stdout_fd(host)
        st = os.fstat(self.fd)
        self.regular = stat.S_ISREG(st.st_mode)
        self.where = "the file stdout is redirected to" if self.regular else "stdout"
        self.start, self.warnings = self._start_of_dump(st) if self.regular else (0, ())
        #: The writer whose bytes went down stdout in this dump: what a reader received, if it fails.
        self._sent: Optional[CompressingWriter] = None

    def _start_of_dump(self, st: os.stat_result) -> Tuple[int, Tuple[str, ...]]:
        """Where the dump will begin in the redirected file, and what to say of that file; refuse a
        file the dump would not be safe in."""
        appending = self._host.appending(self.fd)
        start = st.st_size if appending else os.lseek(self.fd, 0, os.SEEK_CUR)
        if start < st.st_size:
            raise InvalidDumpPath(
                f"stdout is a file with {st.st_size - start} bytes after the position the dump would start at"
                " (opened with 1<> rather than > or >>); the dump would be mixed with them. Use > or >>", path="-")
        if not self._host.owners_known:  # stat names no owner and its mode is made up (Windows): nothing to judge it by
            return start, (f"{self.where} keeps the permissions it was created with; dumplib cannot tell"
                           " who can read it here. Dump to a path instead for an owner-only file",)
        others = stat.S_IMODE(st.st_mode) & 0o077
        if not self._host.mine(st) and others:
            raise InvalidDumpPath(
                f"stdout is a file of uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}: the dump (all of the"
                " process's secrets) would be readable by others. Redirect to a file of your own", path="-")
        # Ours and empty: what the shell just created for us.
        if others and not (st.st_size == 0 and self._host.make_owner_only(self.fd)):
            return start, (f"{self.where} has mode {stat.S_IMODE(st.st_mode):o}: others can read the dump",)
        return start, ()

    def needs(self, estimate: int) -> List[Need]:
        if not self.regular:
            return []
        share = ASSUMED_RATIO if self.codec else 1.0
        return [(self.fd, int(estimate * share), f"the dump sent to {self.where}")]

    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        with self._cut_back_on_failure():
            out = self._sent = CompressingWriter(self.fd, self.codec, self.level)
            report = session.write_stream(plan, _sink(out, self.where, plan.target.pid, self._left()), options,
                                          local=True)
            with _output_errors(self.where, plan.target.pid, self._left()):
                out.close()
            session.verify_stream(plan, report, out.raw_bytes)
        return report, Stored("-", out.stored_bytes, out.raw_bytes, self.codec, out.sha256)

    def take_raw(self, raw: str, tick: Optional[Tick], sidecar: Optional[SidecarMaker],
                 report: WriteReport, pid: Optional[int] = None) -> Stored:
        """Send an already verified raw dump (of process *pid*) down stdout, compressed or not."""
        with self._cut_back_on_failure():
            self._sent = CompressingWriter(self.fd, self.codec, self.level)
            out, _raw_sha = _pump(raw, self.fd, self.codec, self.level, tick, self.where, pid, self._left(),
                                  writer=self._sent)
        return Stored("-", out.stored_bytes, out.raw_bytes, self.codec, out.sha256)

    def _left(self) -> str:
        """What a failed dump leaves in this destination, as the error will say it."""
        if not self.regular:
            return "what went to stdout is incomplete (no file was written)"
        return f"the partial dump was cut from {self.where}, which holds its {self.start} bytes from before again"

    @contextlib.contextmanager
    def _cut_back_on_failure(self) -> Iterator[None]:
        """A redirected file is cut back to what it held before the dump, whatever ended the dump.

        Errors of this output's own writes already say so (_left); only when cutting back fails is
        the error told again, as a new error of its kind. A pipe cannot be cut back: once bytes went
        down it, an error that says "nothing was kept" (the target exited, max_pause, ...) is told
        again saying what the reader received."""
        try:
            yield
        except BaseException as exc:
            if not self.regular:
                sent = self._sent.stored_bytes if self._sent is not None else 0
                own = getattr(exc, "reason", None) in ("broken-pipe", "disk-full")  # these say it already
                if sent and isinstance(exc, DumpError) and not own:
                    raise _received(exc, sent, self.codec) from None
                raise
            if isinstance(exc, DumpFailed) and stalled_output(exc):  # cutting back would wait on that file system
                raise _retold(exc, f"the partial dump is left in {self.where} (its file system does not answer):"
                                   " cut it back or delete it once it does") from None
            try:
                os.ftruncate(self.fd, self.start)
            except OSError as cut:
                if isinstance(exc, DumpError):
                    raise _retold(exc, f"cutting the partial dump back failed ({cut.strerror}): it is left in"
                                       f" {self.where}; delete it") from None
            raise


class RawThenCompress(Output):
    """For writers that need a seekable file: raw dump on the roomiest volume, then compressed into
    the destination (or to stdout), then the raw file deleted."""

    def __init__(self, target: Union[CompressedFile, Stdout, "RemoteObject"], scratch: str, host: Host,
                 keep_on_failure: bool = False) -> None:
        super().__init__()
        self.host = host
        self.warnings = target.warnings  # a tuple: what the final destination says
        self.target, self.scratch = target, scratch
        self.where = target.where
        self.raw = temp_path(scratch)
        #: Keep the verified raw dump when its upload fails (--keep-local-on-failure; a URL only).
        self.keep_on_failure = keep_on_failure

    def needs(self, estimate: int) -> List[Need]:
        return [(self.scratch, estimate, "the raw dump before compression")] + self.target.needs(estimate)

    def temp_directories(self) -> List[str]:
        return [self.scratch] + self.target.temp_directories()

    def uploaded(self) -> Optional[int]:
        return self.target.uploaded()

    def retain(self, stored: Stored, keep: Optional[int], max_total: Optional[int],
               tick: Optional[Tick] = None) -> List[str]:
        return self.target.retain(stored, keep, max_total, tick)

    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        verified = False
        try:
            report = session.write(plan, self.raw, options)
            said = session.verify(self.raw, plan, report)
            report = replace(report, warnings=report.warnings + said) if said else report
            verified = True
            stored = self.target.take_raw(self.raw, options.tick, sidecar, report, pid=plan.target.pid)
        except BaseException as exc:
            if keep_raw_after(exc, verified, self.keep_on_failure, isinstance(self.target, RemoteObject)):
                assert isinstance(exc, DumpFailed) and isinstance(self.target, RemoteObject)
                kept = _keep_raw(self.raw, self.scratch, self.target.target.key, self.target.codec)
                if kept is not None:
                    exc.kept = kept
                    # A cancel's or an abandon's text says "nothing was kept": of the store, so say that.
                    base = exc.message.replace("nothing was kept", "nothing was committed")
                    exc.message = (f"{base}; the verified raw dump was kept at {kept}"
                                   " (--keep-local-on-failure): upload it, or delete it")
                    exc.args = (exc.message,) + exc.args[1:]
            raise
        finally:
            remove_own(self.raw, self.host)  # gone already when it was kept (renamed)
        return report, stored


def keep_raw_after(exc: BaseException, verified: bool, asked: bool, remote: bool) -> bool:
    """Whether a raw-then-upload dump that failed with *exc* keeps its local raw copy: only when the
    caller asked (keep_local_on_failure), the destination is a store, the raw dump was complete and
    verified, and the failure is dumplib's DumpFailed (the upload failed, was cancelled, or its
    compressed form did not check out). Never for an interrupt (KeyboardInterrupt, SystemExit): the
    caller could not be told where the copy is."""
    return asked and remote and verified and isinstance(exc, DumpFailed)


def local_name(name: str) -> str:
    """An object's name (chosen by whoever wrote the URL or the process's name) as one harmless local
    file-name component: letters, digits and ``-_.+`` kept, the rest ``_``, no leading dot or dash, at
    most 200 characters (no separator, drive, ``..``, device name or reserved character survives)."""
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_.+" else "_" for c in name[:200]).lstrip(".-")
    stem = kept.split(".", 1)[0].upper()
    if stem in ("CON", "PRN", "AUX", "NUL") or (stem[:3] in ("COM", "LPT") and stem[3:].isdigit()):
        kept = "_" + kept  # a Windows device name opens the device, not a file
    return kept if kept.strip("_") else "dump"


def _keep_raw(raw: str, directory: str, key: str, codec: Optional[str]) -> Optional[str]:
    """Give the raw temporary a name people can find beside it (the object's name without the
    compression suffix, ``-N`` when taken; never replacing a file); None if it cannot be renamed."""
    name = key.rsplit("/", 1)[-1]
    if codec and name.endswith(SUFFIXES[codec]):
        name = name[: -len(SUFFIXES[codec])]
    name = local_name(name)
    stem, dot, ext = name.partition(".")
    for n in range(100):
        dest = os.path.join(directory, f"{stem}-{n}{dot}{ext}" if n else name)
        try:
            os.link(raw, dest)  # fails if dest exists: never replaces anything
        except FileExistsError:
            continue
        except OSError:
            return None
        remove_quietly(raw)
        return dest
    return None


class RemoteObject(Output):
    """The dump streamed to an object store (docs/egress.md): through the compressor into parts held
    in a bounded buffer and sent as they fill; nothing of it on a local disk (Linux). Verified, then
    the sidecar uploaded, then the object committed (only if absent unless overwriting); on any
    failure the upload is abandoned and nothing is committed (and a sidecar already sent is deleted).

    On platforms whose writer needs a seekable file (Windows) it is RawThenCompress's destination:
    the verified raw file is compressed, checked to decode back to it in memory, and uploaded in one
    pass (``take_raw``)."""

    def __init__(self, target: "RemoteTarget", store: "Store", overwrite: bool, codec: Optional[str],
                 level: int, key: Optional[bytes] = None) -> None:
        super().__init__()
        self.target, self.store, self.overwrite = target, store, overwrite
        self.codec, self.level = codec, level
        #: This user's retention key (_egress/signing.py): the sidecar is signed with it; None: unsigned.
        self.key = key
        self.where = target.display()
        self._up: Optional["Uploader"] = None

    def retain(self, stored: Stored, keep: Optional[int], max_total: Optional[int],
               tick: Optional[Tick] = None) -> List[str]:
        # No long read here to hear *tick* in: each step is one small request, all within the
        # deadline of _egress/retention.py.
        if self.key is None:
            return []
        from ._egress.retention import apply_store_retention

        return apply_store_retention(self.store, self.target, self.key, keep=keep, max_total=max_total)

    def needs(self, estimate: int) -> List[Need]:
        return []  # nothing on a local volume; memory: (in_flight + 1) * part, whatever the dump's size

    def uploaded(self) -> Optional[int]:
        return self._up.sent if self._up is not None else 0

    def _start(self, pid: Optional[int], estimate: int, touched: bool) -> "Uploader":
        """The upload begun (S3: CreateMultipartUpload). Refused before the target was *touched*: the
        store's own error (RemoteDestinationError, exit 14, as the probe's); after: upload-failed."""
        from ._egress import buffer_plan

        # (part size, parts in flight): at most (in_flight + 1) * part bytes held (docs/egress.md).
        part, in_flight = buffer_plan(estimate, self.store.max_parts)
        try:
            self._up = self.store.uploader(self.target.key, part, in_flight, self.overwrite)
            return self._up
        except RemoteDestinationError as exc:
            if not touched:
                raise
            raise _upload_failed(exc, pid) from None

    def write(self, session: Session, plan: Plan, options: WriteOptions,
              sidecar: Optional[SidecarMaker] = None) -> Tuple[WriteReport, Stored]:
        pid = plan.target.pid
        started = time.monotonic()
        up = self._start(pid, plan.estimate.bytes if plan.estimate else 0, touched=False)
        try:
            out = CompressingWriter(up, self.codec, self.level)
            _hear_while_waiting(up, out, options.tick)
            report = session.write_stream(plan, _upload_sink(out, pid), options)
            with _store_errors(pid):
                out.close()
            session.verify_stream(plan, report, out.raw_bytes)
            stored = self._commit(up, out, sidecar, report, pid, started)
        except BaseException:
            up.abort()
            raise
        return report, stored

    def take_raw(self, raw: str, tick: Optional[Tick], sidecar: Optional[SidecarMaker],
                 report: WriteReport, pid: Optional[int] = None) -> Stored:
        """Compress an already verified raw dump (of process *pid*, which its errors name) into the store,
        checking in memory that what is sent decodes back to it."""
        started = time.monotonic()
        up = self._start(pid, os.path.getsize(raw), touched=True)
        try:
            check = DecodingHasher(self.codec) if self.codec else None

            def both(data: Any) -> None:
                up(data)
                if check is not None:
                    check(data)

            out = CompressingWriter(both, self.codec, self.level)
            _hear_while_waiting(up, out, tick)
            with _store_errors(pid):
                raw_sha = _compress_file(raw, out, tick)
            if check is not None and check.result() != (raw_sha, out.raw_bytes):
                raise DumpFailed(f"the compressed dump for {self.where} does not decompress to the dump that was"
                                 " verified; nothing was committed", pid=pid, reason="unverified")
            stored = self._commit(up, out, sidecar, report, pid, started)
        except BaseException:
            up.abort()
            raise
        return stored

    def _commit(self, up: "Uploader", out: CompressingWriter, sidecar: Optional[SidecarMaker], report: WriteReport,
                pid: Optional[int], started: float) -> Stored:
        with _store_errors(pid):
            parts = up.drain()
        if (up.sha256, up.size) != (out.sha256, out.stored_bytes):
            raise DumpFailed(f"the upload to {self.where} did not receive the bytes that were written; nothing was"
                             " committed", pid=pid, reason="unverified")
        stored = Stored(self.where, out.stored_bytes, out.raw_bytes, self.codec, out.sha256, None,
                        time.monotonic() - started)
        side_key = self.target.key + SIDECAR_SUFFIX
        data = sidecar(None, self.where, stored, report) if sidecar is not None else None
        if data is not None and self.key is not None:
            from ._egress.signing import sign

            data = sign(data, self.key, self.target.store, self.target.container, self.target.key)
        meta = {"sha256": out.sha256, "size": str(out.stored_bytes), "raw_size": str(out.raw_bytes)}
        last_call = up.waiting or (lambda: None)
        last_call()  # the last moment a cancel or an abandon leaves nothing: the steps below are single requests
        if self.overwrite:
            # Replacing: the old sidecar goes first and the new one comes after the commit, so a sidecar
            # may be missing for a while but never vouches for a dump that is not the one beside it.
            if data is not None:
                with _store_errors(pid, side_key, self):
                    self.store.delete(side_key)
            with _store_errors(pid, self.target.key, self):
                up.commit(parts, meta)
            if data is not None:
                with _store_errors(pid, side_key, self):
                    self.store.put_small(side_key, data, True)
            return replace(stored, upload_seconds=time.monotonic() - started)
        if data is not None:
            # A new name: the sidecar first. One without its dump is harmless, a dump without its
            # sidecar is never vouched for (retention, `info`). A store error here is before any commit.
            with _store_errors(pid, side_key, self):
                self.store.put_small(side_key, data, False)
        try:
            last_call()  # after the sidecar's request, before the one that makes the object
            with _store_errors(pid, self.target.key, self):
                up.commit(parts, meta)
        except BaseException:
            if data is not None:
                with contextlib.suppress(Exception):
                    self.store.delete(side_key)
            raise
        return replace(stored, upload_seconds=time.monotonic() - started)


def _hear_while_waiting(up: "Uploader", out: CompressingWriter, tick: Optional[Tick]) -> None:
    """Have *up* call the dump's *tick* (with the bytes taken so far) while it waits for the store: a
    part's slot, the last parts. A slow link otherwise held a cancel, a watch's interruption or its
    timeout for as long as those parts took (a Windows watch gave up waiting first, and its raw scratch
    copy was left)."""
    if tick is not None:
        up.waiting = lambda: tick(out.raw_bytes)


def _upload_failed(exc: RemoteDestinationError, pid: Optional[int]) -> DumpFailed:
    return DumpFailed(f"{exc.message}; the upload was abandoned and nothing was committed", pid=pid,
                      reason="upload-failed")


#: The stores' answers that mean "the name is taken" (and only those: a lease, an immutability policy or
#: a full store is a 409 or 412 too, and is an upload that failed).
_EXISTS_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "BlobAlreadyExists", "ConditionNotMet")


@contextlib.contextmanager
def _store_errors(pid: Optional[int], key: Optional[str] = None, out: Optional[RemoteObject] = None) -> Iterator[None]:
    """A store's errors once the write began: DumpFailed reason upload-failed, or DumpExists when the
    name was taken meanwhile."""
    try:
        yield
    except RemoteDestinationError as exc:
        if out is not None and key is not None and exc.service_code in _EXISTS_CODES:
            raise DumpExists(out.target.display(key)) from None
        raise _upload_failed(exc, pid) from None


def _upload_sink(out: CompressingWriter, pid: int) -> Sink:
    def write(data: Union[bytes, bytearray, memoryview]) -> None:
        with _store_errors(pid):
            out.write(data)

    return write


def _write_all(host: Host, path: str, data: bytes) -> None:
    """Create *path* as Host.open_private does (exclusive, no symlink, owner-only) holding *data*."""
    fd = host.open_private(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        remove_own(path, host)
        raise
    os.close(fd)


#: What a sidecar that could not be written leaves: nothing (its dump goes with it).
_NO_SIDECAR = ("nothing was kept: the partial sidecar was removed, and with it the dump, complete and verified, that"
               " was to be {final} (a dump is kept only beside its sidecar)")


#: How long the removal of a partial file whose file system stopped answering is waited for.
STALLED_REMOVAL_SECONDS = 2.0


def _discard(temp: str, host: Host, exc: BaseException) -> Optional[DumpError]:
    """Remove our partial *temp* after the failure *exc*. Where the output's file system has stopped
    answering, the removal is waited for STALLED_REMOVAL_SECONDS only, and goes on in the background:
    then *exc* retold, saying what is left (else None: *exc* says it as it is)."""
    if not isinstance(exc, DumpFailed) or not stalled_output(exc):
        remove_own(temp, host)
        host.forget(temp)
        return None
    from ._bounded import call_within, unanswered

    def remove() -> None:
        remove_own(temp, host)
        host.forget(temp)  # its lock's descriptor too, or FUSE keeps it as .fuse_hidden*: no look, no thread
        host.release_gone()  # and those of other temporaries whose look got no answer before

    try:
        call_within(remove, STALLED_REMOVAL_SECONDS)
        return _retold(exc, "the partial file was removed")
    except Exception as removal:  # unanswered, or no thread to try in: never inline, on a stalled file system
        if not unanswered(removal):
            raise
        if not isinstance(removal, TimeoutError):  # no removal was begun: nothing removes it in this program
            return _retold(exc, f"the partial file {temp} was not removed: no thread could be started to try, on a"
                                " file system that does not answer; the next dumplib to write in that directory"
                                " removes it")
        return _retold(exc, f"the partial file {temp} could not be removed yet: its file system does not answer;"
                            " it goes once that file system answers while this program runs, or with the next"
                            " dumplib to write in that directory")


@contextlib.contextmanager
def _output_errors(where: str, pid: Optional[int] = None,
                   left: str = "the partial file was removed") -> Iterator[None]:
    """OSErrors of our own output as DumpFailed with the reason a script can branch on; *left* says
    what the failure leaves in that destination."""
    try:
        yield
    except DumpFailed as exc:
        # Host.open_private's own disk-full names the temporary it could not create: say which file it was for.
        if exc.reason != "disk-full":
            raise
        raise DumpFailed(f"the disk filled up while writing {where}; {left}. Free space or dump to another"
                         " volume", pid=pid, errno=exc.errno, reason="disk-full") from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise DumpFailed(f"the reader of {where} went away before the dump was complete; what it received"
                             " is incomplete", pid=pid, errno=exc.errno, reason="broken-pipe") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DumpFailed(f"the disk filled up while writing {where}; {left}. Free space or dump to another"
                             " volume", pid=pid, errno=exc.errno, reason="disk-full") from None
        raise DumpFailed(f"writing {where} failed: {exc}", pid=pid, errno=exc.errno) from None


def _pump(raw: str, fd: int, codec: Optional[str], level: int, tick: Optional[Tick], where: str,
          pid: Optional[int] = None, left: str = "the partial file was removed",
          writer: Optional[CompressingWriter] = None) -> Tuple[CompressingWriter, str]:
    """Copy the file *raw* (a dump of *pid*) through a compressor into *fd* (through *writer*, if given, one
    made for *fd*); return the writer and the raw sha256."""
    out = writer if writer is not None else CompressingWriter(fd, codec, level)
    with _output_errors(where, pid, left):
        raw_sha = _compress_file(raw, out, tick)
    return out, raw_sha


def _compress_file(raw: str, out: CompressingWriter, tick: Optional[Tick]) -> str:
    """Read the file *raw* once through *out* (closed at the end); its sha256."""
    raw_sha = new_sha256()
    with open(raw, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            raw_sha.update(block)
            out.write(block)
            if tick is not None:
                tick(out.raw_bytes)
    out.close()
    return raw_sha.hexdigest()


def _sink(out: CompressingWriter, where: str, pid: int, left: str = "the partial file was removed") -> Sink:
    """*out*'s write for a streaming writer, its OSErrors told as this output's own (where, what is left)."""
    def write(data: Union[bytes, bytearray, memoryview]) -> None:
        with _output_errors(where, pid, left):
            out.write(data)

    return write


def _received(exc: DumpError, sent: int, codec: Optional[str]) -> DumpError:
    """*exc*, told of a pipe that already carried *sent* bytes of the dump that failed."""
    what = (f"the reader of stdout already received the first {sent} bytes of the dump, an incomplete"
            f" {codec + ' stream' if codec else 'core'} that must be discarded (no file was written)")
    import copy  # an error path's: not start-up every dump pays

    told = copy.copy(exc)
    told.message = (exc.message.replace("nothing was kept", what) if "nothing was kept" in exc.message
                    else f"{exc.message}; {what}")
    told.args = (told.message,)
    return told


def _retold(exc: DumpError, more: str) -> DumpError:
    """A new error of *exc*'s kind and facts, its message followed by *more*."""
    import copy  # an error path's: not start-up every dump pays

    told = copy.copy(exc)
    told.message = f"{exc.message}; {more}"
    told.args = (told.message,)
    return told


def _check_stored(path: str, sha256: str, size: int, tick: Optional[Tick] = None) -> None:
    """The compressed file read back; *tick* hears it (a cancel or a watch's end need not wait for it)."""
    with open(path, "rb") as f:
        if sha256_of_stream(f, tick=tick) != (sha256, size):
            raise DumpFailed(f"{path} does not hold the bytes that were written to it; it was removed",
                             reason="unverified")


def _check_round_trip(path: str, codec: str, raw_sha256: str, raw_size: int, tick: Optional[Tick]) -> None:
    """Decompress what was written, once, and compare it with the verified raw dump (sha256 and size).
    *tick* hears it as it goes: a whole dump decompressed takes seconds to minutes, and a watch's abandon
    check (a Ctrl-C, its timeout) or cancel_dumps must not wait for it, nor its watcher give up first."""
    with open_content(path, codec) as f:
        if sha256_of_stream(f, tick=tick) != (raw_sha256, raw_size):
            raise DumpFailed(f"the compressed dump {path} does not decompress to the dump that was verified;"
                             " it was removed", reason="unverified")


def _stdout_fd(host: Host) -> int:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        raise InvalidDumpPath("'-' streams the dump to stdout, but this process has no usable stdout", path="-") from None
    if os.isatty(fd):
        raise InvalidDumpPath(
            "'-' streams the dump to stdout, which is a terminal; pipe it (| zstd -d > x.core, | ssh host ...)"
            " or give a file path instead of '-'",
            path="-",
        )
    if host.reader_gone(fd):
        raise DumpFailed("the reader of stdout has already gone away (the pipe's other end is closed): nothing was"
                         " dumped, and the process was not stopped", errno=errno.EPIPE, reason="broken-pipe")
    sys.stdout.flush()
    host.binary(fd)  # a text-mode fd would turn every \n byte of the dump into \r\n
    return fd



def scratch_directory(dest_dir: str, min_free: Optional[int], host: Host) -> str:
    """Where a seekable-file platform puts the raw dump before compressing it: the volume with the
    most room; the destination's own directory wins ties, then the temp directory, then volume roots.
    Only directories the platform deems fit for a private file count (Windows: fixed local volumes
    that keep ACLs, proven writable by creating a file there)."""
    import tempfile  # here, not at the top: with shutil and random, start-up every dump would pay

    chosen = roomiest_directory([dest_dir, tempfile.gettempdir()], min_free, host.scratch_usable, host)
    if chosen is None:
        raise InvalidDumpPath(
            "no local volume can hold the raw dump before compression (it needs a fixed volume whose file"
            " system keeps permissions, where this user can create files); dump without compression instead",
            path=dest_dir,
        )
    return chosen
