"""Compressed dumps: the codecs, a streaming writer, and a seekable reader for the dump readers.

gzip comes from the stdlib (zlib). zstd comes from the stdlib where it has it (Python 3.14's
``compression.zstd``), else from the optional ``zstandard`` package (the ``zstd`` extra: ``pip install '.[zstd]'``);
the core stays psutil-only. Default levels are the fast ones: on Linux the target stays stopped
while its memory streams through the compressor, so compressor speed is target stop time.
"""
from __future__ import annotations

import io
import os
import stat
import sys

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Callable, Optional, Tuple, Union

from ._bounded import output_call
from ._hashing import new_sha256
from ._text import shell_word
from .errors import DumpFailed, InvalidCompression, InvalidDumpFile

#: What pyproject.toml's `zstd` extra installs (tests/packaging holds the two equal).
ZSTD_REQUIREMENT = "zstandard>=0.19"

__all__ = ["CODECS", "SUFFIXES", "parse_codec", "sniff", "require_reader", "CompressingWriter", "open_dump", "open_content"]

CODECS = ("zstd", "gzip")
SUFFIXES = {"zstd": ".zst", "gzip": ".gz"}
#: Level 1 of each: the target is stopped while its memory goes through the compressor, and higher
#: levels buy little size for much time (docs/benchmarks.md, "Linux: whole commands at 200 MiB and 2 GiB").
DEFAULT_LEVELS = {"zstd": 1, "gzip": 1}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_BLOCK = 1 << 20


def parse_codec(compress: Optional[str], level: Optional[int] = None) -> Optional[Tuple[str, int]]:
    """(codec, level) for a user's ``compress=`` value, None for no compression; checks availability now,
    before any target is touched."""
    if compress is None or str(compress).lower() in ("", "none", "no", "off"):
        if level is not None:
            raise InvalidCompression("a compression level was given without --compress", compress=None)
        return None
    codec = str(compress).lower()
    if codec in ("gz", "zlib"):
        codec = "gzip"
    if codec == "zst":
        codec = "zstd"
    if codec not in CODECS:
        raise InvalidCompression(
            f"unknown compression {compress!r}; choose one of: {', '.join(CODECS)}", compress=compress
        )
    if codec == "zstd":
        _zstd()  # raises if neither implementation is installed
    if level is None:
        level = DEFAULT_LEVELS[codec]
    limits = {"gzip": (0, 9), "zstd": (-7, 22)}[codec]
    if not limits[0] <= int(level) <= limits[1]:
        raise InvalidCompression(
            f"{codec} level {level} is out of range {limits[0]}..{limits[1]}", compress=codec
        )
    return codec, int(level)


def sniff(head: bytes) -> Optional[str]:
    """``"gzip"``/``"zstd"`` if *head* (the first bytes of a file) starts a compressed stream."""
    for magic, codec in _MAGIC.items():
        if head.startswith(magic):
            return codec
    return None


def require_reader(path: str, codec: str) -> None:
    """InvalidDumpFile, saying what to install, if *path* is compressed with a codec this Python cannot read."""
    if codec == "zstd":
        try:
            _zstd()
        except InvalidCompression as exc:
            raise InvalidDumpFile(f"{path} is zstd-compressed; {exc.message}, or decompress it with zstd -d",
                                  path=path) from None


def _zstd() -> Tuple[str, Any]:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return "stdlib", zstd
    except ImportError:
        pass
    try:
        import zstandard

        return "zstandard", zstandard
    except ImportError:
        # The line installs into the interpreter running now: a venv's or pipx's, never another one.
        raise InvalidCompression(
            "zstd compression needs Python 3.14+ or the zstandard package (dumplib's zstd extra): "
            f"{shell_word(sys.executable)} -m pip install '{ZSTD_REQUIREMENT}' (pipx: pipx inject dumplib zstandard),"
            " or use --compress gzip, which needs nothing",
            compress="zstd",
        ) from None


def _workers() -> int:
    """zstd worker threads: one per CPU this process may run on (zstd -T0; a container's cpuset, not
    the host's count). The target is stopped while its memory goes through the compressor, so
    compressor throughput is the target's stop time (docs/benchmarks.md has the gain on a 2-vCPU machine)."""
    affinity = getattr(os, "sched_getaffinity", None)  # where the OS has one (a neutral module: no OS branch)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def _zstd_error(exc: BaseException) -> bool:
    """Whether *exc* is libzstd's own error (zstandard.ZstdError, compression.zstd.ZstdError)."""
    return type(exc).__name__ == "ZstdError"


class _Compressor:
    """compress()/flush() over one codec, producing one gzip member or one zstd frame (with checksum)."""

    def __init__(self, codec: str, level: int) -> None:
        self._codec, self._level = codec, level
        #: Nothing compressed yet: libzstd starts its worker threads at the first compress(), and a
        #: refusal there (a pids limit: "Allocation error") is met by compressing on one thread instead.
        self._first = True
        self._build(None)

    def _build(self, workers: Optional[int]) -> None:
        """The codec's objects; *workers*: zstd's worker threads (None: one per CPU; 0: none)."""
        codec, level = self._codec, self._level
        if codec == "gzip":
            import zlib  # here, not at the top: an uncompressed dump's start-up does not pay for it

            obj = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip header and CRC
            self._compress, self._flush = obj.compress, obj.flush
            return
        flavour, zstd = _zstd()
        if flavour == "stdlib":
            params = {zstd.CompressionParameter.compression_level: level, zstd.CompressionParameter.checksum_flag: 1}
            # A libzstd built without threads reports an upper bound of 0 workers: stay single-threaded.
            workers = min(_workers() if workers is None else workers, zstd.CompressionParameter.nb_workers.bounds()[1])
            if workers > 0:
                params[zstd.CompressionParameter.nb_workers] = workers
            c = zstd.ZstdCompressor(options=params)
            self._compress, self._flush = c.compress, c.flush
        else:
            c = zstd.ZstdCompressor(level=level, write_checksum=True,
                                    threads=_workers() if workers is None else workers).compressobj()
            self._compress, self._flush = c.compress, c.flush

    def compress(self, data: Any) -> bytes:
        try:
            out = self._compress(data)
        except Exception as exc:
            if not (_zstd_error(exc) and self._first):
                raise _failed(exc, self._first) if _zstd_error(exc) else exc from None
            # Its workers were refused before any output (a pids limit): the same frame, made on this thread.
            self._build(0)
            out = _typed(self._compress, True, data)
        if len(data):  # an empty write may never reach libzstd, which starts its workers at the first byte
            self._first = False
        return out

    def flush(self) -> bytes:
        return _typed(self._flush, self._first)


def _typed(call: Callable[..., bytes], starting: bool, *args: Any) -> bytes:
    try:
        return call(*args)
    except Exception as exc:
        if not _zstd_error(exc):
            raise
        raise _failed(exc, starting) from None


def _failed(exc: BaseException, starting: bool) -> DumpFailed:
    """A libzstd error as dumplib's: typed (not the codec's own class), saying what the codec said.
    *starting*: before any data went through (its workers' start); later, an allocation failing is memory."""
    short = "memory" in str(exc).lower() or "allocation" in str(exc).lower()
    if short and starting:
        return DumpFailed.no_resources("zstd's compression", strerror=str(exc))
    why = ": memory is short, free some" if short else ""
    return DumpFailed(f"zstd compression failed ({exc}){why}; dump again, or with --compress gzip",
                      reason="no-resources" if short else None)


class CompressingWriter:
    """A sequential binary writer that compresses into *fd* (a file or a pipe such as stdout), or into a
    callable taking bytes (an upload, see outputs.RemoteObject).

    Counts raw and stored bytes and hashes what is stored, so a dump sent to a pipe still gets a
    sha256 the receiver can check.
    """

    def __init__(self, fd: Union[int, Callable[[Any], object]], codec: Optional[str], level: int = 1) -> None:
        self.fd = fd
        self.codec = codec
        self._c = _Compressor(codec, level) if codec else None
        self.raw_bytes = 0
        self.stored_bytes = 0
        self._sha = new_sha256()
        #: A file's writes are bounded in a copy's worker (_bounded.output_call: a file system that stops
        #: answering); a pipe's are not: a slow reader is its owner's, and SIGPIPE or Ctrl-C end them.
        self._file = isinstance(fd, int) and stat.S_ISREG(os.fstat(fd).st_mode)

    def write(self, data: Any) -> None:
        self.raw_bytes += len(data)
        self._out(self._c.compress(data) if self._c else data)

    def close(self) -> None:
        if self._c is not None:
            self._out(self._c.flush())
            self._c = None

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _out(self, data: Any) -> None:
        if not data:
            return
        self._sha.update(data)
        if callable(self.fd):
            self.fd(data)
            self.stored_bytes += len(data)
        else:
            view = memoryview(data)
            while view:
                n = output_call(os.write, self.fd, view) if self._file else os.write(self.fd, view)
                view = view[n:]
                self.stored_bytes += n  # as it goes: a failed write leaves the count of what went out


class DecodingHasher:
    """Fed the compressed stream as it is produced: decompresses it in memory and hashes the result, so
    a stream that never lands on a disk (an upload) is still checked to decode to what was compressed."""

    def __init__(self, codec: str) -> None:
        if codec == "gzip":
            import zlib

            self._d: Any = zlib.decompressobj(31)
        else:
            flavour, zstd = _zstd()
            self._d = zstd.ZstdDecompressor() if flavour == "stdlib" else zstd.ZstdDecompressor().decompressobj()
        self._sha = new_sha256()
        self.size = 0

    def __call__(self, data: Any) -> None:
        out = self._d.decompress(bytes(data))
        self._sha.update(out)
        self.size += len(out)

    def result(self) -> Tuple[str, int]:
        flush = getattr(self._d, "flush", None)
        if flush is not None:
            tail = flush()
            if tail:
                self._sha.update(tail)
                self.size += len(tail)
        return self._sha.hexdigest(), self.size


def _stream(codec: str, f: BinaryIO) -> BinaryIO:
    """A read(n)-bounded decompressing stream over *f* (never inflates more than asked for)."""
    if codec == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    flavour, zstd = _zstd()
    reader: BinaryIO
    if flavour == "stdlib":
        reader = zstd.ZstdFile(f, "rb")
    else:
        reader = zstd.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return reader


class DecompressedFile(io.RawIOBase):
    """The decompressed content of a file as a read-only seekable file.

    Seeking back reopens and decompresses from the start; the dump readers read headers near the
    start in order, so that is rare. The size is only known after one pass, which also proves the
    stream is intact (gzip CRC, zstd checksum).
    """

    def __init__(self, path: str, codec: str) -> None:
        super().__init__()
        self.path, self.codec = path, codec
        self._raw: Optional[BinaryIO] = None
        self._s: Optional[BinaryIO] = None
        self._pos = 0
        self._size: Optional[int] = None
        self._reopen()

    def _reopen(self) -> None:
        self._close_streams()
        self._raw = open(self.path, "rb")
        self._s = _stream(self.codec, self._raw)
        self._pos = 0

    def _close_streams(self) -> None:
        for s in (self._s, self._raw):
            if s is not None:
                s.close()
        self._s = self._raw = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        assert self._s is not None
        import zlib  # for zlib.error below (a gzip stream has loaded it already)

        try:
            if n is None or n < 0:
                chunks = []
                while True:
                    block = self._s.read(_BLOCK)
                    if not block:
                        break
                    chunks.append(block)
                data = b"".join(chunks)
            else:
                data = self._read_exactly(n)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise InvalidDumpFile(f"{self.path} is a damaged {self.codec} stream: {exc}", path=self.path) from None
        except Exception as exc:  # zstandard.ZstdError and friends are not OSError subclasses
            if type(exc).__module__.startswith(("zstandard", "compression", "_zstd")):
                raise InvalidDumpFile(f"{self.path} is a damaged {self.codec} stream: {exc}", path=self.path) from None
            raise
        self._pos += len(data)
        return data

    def _read_exactly(self, n: int) -> bytes:
        assert self._s is not None
        parts = []
        left = n
        while left > 0:
            block = self._s.read(left)
            if not block:
                break
            parts.append(block)
            left -= len(block)
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, _BLOCK)))
            if not got:
                break
            n -= got

    def size(self) -> int:
        if self._size is None:
            here = self._pos
            self._skip(1 << 62)
            # The zstandard package's reader ends quietly at a frame cut short: the frames' headers tell.
            if self.codec == "zstd" and not _zstd_frames_complete(self.path):
                raise InvalidDumpFile(f"{self.path} is a damaged zstd stream: it ends inside a frame (truncated?)",
                                      path=self.path)
            self._size = self._pos
            self.seek(here)
        return self._size

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self._pos
        elif whence == 2:
            offset += self.size()
        if offset < self._pos:
            self._reopen()
        self._skip(offset - self._pos)
        return self._pos

    def close(self) -> None:
        self._close_streams()
        super().close()


def _zstd_frames_complete(path: str) -> bool:
    """Whether *path* is whole zstd frames to its last byte: frame and block headers are walked, nothing
    is decompressed (RFC 8878: a frame's blocks end with one marked last, then its checksum if flagged)."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, 2)
            at = 0
            while at < end:
                f.seek(at)
                head = f.read(14)
                magic = int.from_bytes(head[:4], "little")
                if 0x184D2A50 <= magic <= 0x184D2A5F and len(head) >= 8:  # a skippable frame
                    at += 8 + int.from_bytes(head[4:8], "little")
                    continue
                if magic != 0xFD2FB528 or len(head) < 5:
                    return False
                fhd = head[4]
                single, checksum, did, fcs = fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3, fhd >> 6
                at += 5 + (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0) if fcs == 0 else (2, 4, 8)[fcs - 1])
                while True:
                    f.seek(at)
                    block = f.read(3)
                    if len(block) < 3:
                        return False
                    word = int.from_bytes(block, "little")
                    kind, length = word >> 1 & 3, word >> 3
                    if kind == 3:
                        return False
                    at += 3 + (1 if kind == 1 else length)
                    if word & 1:
                        break
                at += 4 if checksum else 0
            return at == end
    except OSError:
        return False


def open_content(path: str, codec: Optional[str]) -> BinaryIO:
    """The raw content of *path* as a seekable file, given the codec ``open_dump`` found."""
    return open(path, "rb") if codec is None else DecompressedFile(path, codec)  # type: ignore[return-value]


def open_dump(path: str) -> Tuple[BinaryIO, int, Optional[str]]:
    """Open a dump, compressed or not, as (seekable file of its raw content, raw size, codec or None).

    For a compressed file this decompresses it once to learn the size (and check its integrity);
    InvalidDumpFile if it cannot be read or the compressed stream is damaged.
    """
    try:
        with open(path, "rb") as f:
            codec = sniff(f.read(4))
    except OSError as exc:
        raise InvalidDumpFile(f"cannot read {path}: {exc.strerror}", path=path) from None
    if codec is None:
        f = open(path, "rb")
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        return f, size, None
    require_reader(path, codec)
    d = DecompressedFile(path, codec)
    try:
        size = d.size()
    except BaseException:
        d.close()
        raise
    return d, size, codec  # type: ignore[return-value]

