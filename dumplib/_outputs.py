"""Where the dump's bytes go, and what disk space each way needs.

Four ways, one interface: a plain file; a file written through a compressor (backends that write
in file order: Linux); stdout (a pipe); and, for backends that need a seekable file (dbghelp), a
raw file on the roomiest volume that is then compressed into the destination or to stdout.
Each says which volumes it will fill and by how much, so the one free-space guard covers them all.
"""
from __future__ import annotations

import abc
import dataclasses
import errno
import hashlib
import os
import secrets
import sys
import tempfile
from typing import List, Optional, Tuple, Union

from ._backend import Backend, Plan, Tick, WriteReport
from ._follow import FollowingHasher
from .compression import CompressingWriter, open_content
from .errors import DumpFailed, InvalidDumpPath
from .output import TEMP_PREFIX, Destination, finalize, remove_quietly, remove_stale_temps
from .sidecar import sha256_of_stream
from .space import roomiest_directory

#: For the pre-flight only: compressed output is assumed to take at most this share of the raw
#: estimate. Measured cores compress to 6-10% (docs/benchmarks.md); memory full of already
#: compressed or encrypted data would not, and then the watchdog stops the dump cleanly.
ASSUMED_RATIO = 0.5
#: What a plain file's need is called: the one need that is simply the estimate, needing no explanation.
THE_DUMP = "the dump"
_BLOCK = 4 << 20


@dataclasses.dataclass
class Stored:
    """What ended up where."""

    path: str
    size: int
    raw_size: int
    codec: Optional[str] = None
    sha256: Optional[str] = None


class Output(abc.ABC):
    #: Human name of the destination, for messages.
    where: str = ""

    @abc.abstractmethod
    def needs(self, estimate: int) -> List[Tuple[str, int, str]]:
        """(directory, bytes, what) this output will put on disk for a dump estimated at *estimate* raw bytes."""

    @abc.abstractmethod
    def write(self, backend: Backend, plan: Plan, comment: Optional[str], signature: str,
              tick: Optional[Tick]) -> Tuple[WriteReport, Stored]:
        """Write, verify and put the dump in place; on any exception leave nothing behind."""

    def watched(self) -> List[str]:
        """Directories whose free space the watchdog checks during the write."""
        return [d for d, _, _ in self.needs(0)]


class PlainFile(Output):
    def __init__(self, dest: Destination, overwrite: bool, want_sha256: bool) -> None:
        self.dest, self.overwrite, self.where = dest, overwrite, dest.final
        self.want_sha256 = want_sha256

    def needs(self, estimate: int) -> List[Tuple[str, int, str]]:
        return [(self.dest.directory, estimate, THE_DUMP)]

    def write(self, backend: Backend, plan: Plan, comment: Optional[str], signature: str,
              tick: Optional[Tick]) -> Tuple[WriteReport, Stored]:
        # A writer that goes in file order can be hashed as it writes (see _follow.py).
        hasher = FollowingHasher(self.dest.temp) if self.want_sha256 and backend.streams else None
        sha = None
        try:
            report = backend.write(plan, self.dest.temp, comment=comment, signature=signature, tick=tick)
            size = os.stat(self.dest.temp).st_size
            backend.verify(self.dest.temp, plan)
            if hasher is not None:
                sha = hasher.result(size)
                hasher = None
            finalize(self.dest.temp, self.dest.final, overwrite=self.overwrite)
        except BaseException:
            if hasher is not None:
                hasher.abandon()
            remove_quietly(self.dest.temp)
            raise
        return report, Stored(self.dest.final, size, size, None, sha)


class CompressedFile(Output):
    """The dump streams through the compressor into the destination: the raw size never touches disk."""

    def __init__(self, dest: Destination, overwrite: bool, codec: str, level: int) -> None:
        self.dest, self.overwrite, self.codec, self.level, self.where = dest, overwrite, codec, level, dest.final

    def needs(self, estimate: int) -> List[Tuple[str, int, str]]:
        return [(self.dest.directory, int(estimate * ASSUMED_RATIO), "the compressed dump, assumed at most half the raw size")]

    def write(self, backend: Backend, plan: Plan, comment: Optional[str], signature: str,
              tick: Optional[Tick]) -> Tuple[WriteReport, Stored]:
        try:
            fd = backend.open_private(self.dest.temp)
            try:
                out = CompressingWriter(fd, self.codec, self.level)
                report = backend.write_stream(plan, out.write, comment=comment, signature=signature, tick=tick)
                out.close()
            finally:
                os.close(fd)
            # The core's header, notes and size, from what the writer produced; then the file read
            # back must be exactly the compressed bytes produced. Decompressing it all again would
            # cost more than the dump (zstd decodes a sparse heap at ~0.75 GB/s here).
            backend.verify_stream(plan, out.raw_bytes)
            _check_stored(self.dest.temp, out.sha256, out.stored_bytes)
            finalize(self.dest.temp, self.dest.final, overwrite=self.overwrite)
        except BaseException:
            remove_quietly(self.dest.temp)
            raise
        return report, Stored(self.dest.final, out.stored_bytes, out.raw_bytes, self.codec, out.sha256)

    def take_raw(self, backend: Backend, raw: str, tick: Optional[Tick]) -> Stored:
        """Compress an already verified raw dump into the destination, check it decodes back to it."""
        try:
            fd = backend.open_private(self.dest.temp)
            try:
                out, raw_sha = _pump(raw, fd, self.codec, self.level, tick, self.dest.final)
            finally:
                os.close(fd)
            _check_round_trip(self.dest.temp, self.codec, raw_sha, out.raw_bytes)
            finalize(self.dest.temp, self.dest.final, overwrite=self.overwrite)
        except BaseException:
            remove_quietly(self.dest.temp)
            raise
        return Stored(self.dest.final, out.stored_bytes, out.raw_bytes, self.codec, out.sha256)


class Stdout(Output):
    """The dump goes down stdout (a pipe), compressed or not; nothing is written locally."""

    where = "stdout"

    def __init__(self, codec: Optional[str], level: int) -> None:
        self.codec, self.level = codec, level
        self.fd = _stdout_fd()

    def needs(self, estimate: int) -> List[Tuple[str, int, str]]:
        return []

    def write(self, backend: Backend, plan: Plan, comment: Optional[str], signature: str,
              tick: Optional[Tick]) -> Tuple[WriteReport, Stored]:
        out = CompressingWriter(self.fd, self.codec, self.level)
        report = backend.write_stream(plan, out.write, comment=comment, signature=signature, tick=tick)
        out.close()
        backend.verify_stream(plan, out.raw_bytes)
        return report, Stored("-", out.stored_bytes, out.raw_bytes, self.codec, out.sha256)

    def take_raw(self, backend: Backend, raw: str, tick: Optional[Tick]) -> Stored:
        """Send an already verified raw dump down stdout, compressed or not."""
        out, _raw_sha = _pump(raw, self.fd, self.codec, self.level, tick, "stdout")
        return Stored("-", out.stored_bytes, out.raw_bytes, self.codec, out.sha256)


class RawThenCompress(Output):
    """For writers that need a seekable file: raw dump on the roomiest volume, then compressed into
    the destination (or to stdout), then the raw file deleted."""

    def __init__(self, target: Union[CompressedFile, Stdout], scratch: str, stem: str) -> None:
        self.target, self.scratch = target, scratch
        self.where = target.where
        self.raw = os.path.join(scratch, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.{stem}.raw.tmp")

    def needs(self, estimate: int) -> List[Tuple[str, int, str]]:
        return [(self.scratch, estimate, "the raw dump before compression")] + self.target.needs(estimate)

    def write(self, backend: Backend, plan: Plan, comment: Optional[str], signature: str,
              tick: Optional[Tick]) -> Tuple[WriteReport, Stored]:
        remove_stale_temps(self.scratch)
        try:
            report = backend.write(plan, self.raw, comment=comment, signature=signature, tick=tick)
            backend.verify(self.raw, plan)
            stored = self.target.take_raw(backend, self.raw, tick)
        finally:
            remove_quietly(self.raw)
        return report, stored


def _pump(raw: str, fd: int, codec: Optional[str], level: int, tick: Optional[Tick],
          where: str) -> Tuple[CompressingWriter, str]:
    """Copy the file *raw* through a compressor into *fd*; return the writer and the raw sha256."""
    raw_sha = hashlib.sha256()
    out = CompressingWriter(fd, codec, level)
    try:
        with open(raw, "rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                raw_sha.update(block)
                out.write(block)
                if tick is not None:
                    tick(out.raw_bytes)
        out.close()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise DumpFailed(f"the reader of {where} went away before the dump was complete; what it received"
                             " is incomplete", errno=exc.errno, reason="broken-pipe") from None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DumpFailed(f"the disk filled up while writing {where}; the partial file was removed",
                             errno=exc.errno, reason="disk-full") from None
        raise DumpFailed(f"writing {where} failed: {exc}", errno=exc.errno) from None
    return out, raw_sha.hexdigest()


def _check_stored(path: str, sha256: str, size: int) -> None:
    with open(path, "rb") as f:
        if sha256_of_stream(f) != (sha256, size):
            raise DumpFailed(f"{path} does not hold the bytes that were written to it; it was removed",
                             reason="unverified")


def _check_round_trip(path: str, codec: str, raw_sha256: str, raw_size: int) -> None:
    """Decompress what was written, once, and compare it with the verified raw dump (sha256 and size)."""
    with open_content(path, codec) as f:
        if sha256_of_stream(f) != (raw_sha256, raw_size):
            raise DumpFailed(f"the compressed dump {path} does not decompress to the dump that was verified;"
                             " it was removed", reason="unverified")


def _stdout_fd() -> int:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        raise InvalidDumpPath("'-' streams the dump to stdout, but this process has no usable stdout", path="-") from None
    if os.isatty(fd):
        raise InvalidDumpPath(
            "'-' streams the dump to stdout, which is a terminal; pipe it (| zstd -d > x.core, | ssh host ...)"
            " or redirect it to a file",
            path="-",
        )
    sys.stdout.flush()
    if os.name == "nt":
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)  # a text-mode fd would turn every \n byte of the dump into \r\n
    return fd


def scratch_directory(dest_dir: str, min_free: Optional[int]) -> str:
    """Where a seekable-file backend puts the raw dump before compressing it: the volume with the
    most room; the destination's own directory wins ties, then the temp directory, then volume roots.
    Only directories the backend deems fit for a private file count (Windows: fixed local volumes
    that keep ACLs, proven writable by creating a file there)."""
    from ._backend import get_backend

    usable = getattr(get_backend(), "scratch_usable", None)
    chosen = roomiest_directory([dest_dir, tempfile.gettempdir()], min_free, usable)
    if chosen is None:
        raise InvalidDumpPath(
            "no local volume can hold the raw dump before compression (it needs a fixed volume whose file"
            " system keeps permissions, where this user can create files); dump without compression instead",
            path=dest_dir,
        )
    return chosen