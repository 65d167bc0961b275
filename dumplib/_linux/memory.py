"""Copying a stopped process's memory into the core: process_vm_readv in, pwrite out, holes kept.

Never-touched anonymous pages (per /proc/PID/pagemap) are not read at all, all-zero pages are not
written, and unreadable pages stay holes: the file is sparse, and reads back as the process saw it.
The output is a sink: a file (pwrite, holes left unwritten) or a stream (a compressor or a pipe,
holes written as zeros), which works because the core is produced strictly in file order.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
from typing import Any, Callable, Iterator, Optional, Tuple

from .._backend import Tick
from ..errors import DumpFailed
from . import libc

PAGE = 4096
CHUNK = 4 << 20  # 1-4 MiB reads are fastest (research/linux-core.md)
ZERO_PAGE = bytes(PAGE)
_ZERO_BYTES = re.compile(b"\x00+")
# pagemap entry flags live in the top byte: bit 63 present, bit 62 swapped.
_IN_MEMORY = bytes(1 if b & 0xC0 else 0 for b in range(256))
_RUNS = re.compile(b"\x01+")


class FileSink:
    """A regular file written with pwrite: what is never written stays a hole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write_at(self, data: Any, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def finish(self, size: int) -> None:
        os.ftruncate(self.fd, size)


class StreamSink:
    """A sequential writer (``write(bytes)``): gaps before each write and at the end become zeros."""

    _ZEROS = memoryview(bytes(1 << 20))

    def __init__(self, write: Callable[[Any], Any]) -> None:
        self._write = write
        self.pos = 0

    def write_at(self, data: Any, offset: int) -> None:
        if offset < self.pos:
            raise AssertionError(f"stream sink asked to go back from {self.pos} to {offset}")
        self._pad(offset)
        self._write(data)
        self.pos += len(data)

    def finish(self, size: int) -> None:
        self._pad(size)

    def _pad(self, upto: int) -> None:
        while self.pos < upto:
            n = min(upto - self.pos, len(self._ZEROS))
            self._write(self._ZEROS[:n])
            self.pos += n


class MemoryCopier:
    def __init__(self, pid: int, sink: Any, tick: Optional[Tick] = None) -> None:
        self.pid, self.sink, self.tick = pid, sink, tick
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self._words = self.view.cast("Q")
        self._local = libc.iovec(None, 0)
        self._remote = libc.iovec(None, 0)
        self.written = 0  # bytes actually stored (zero pages and holes excluded)
        try:
            self._pagemap: Optional[int] = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._pagemap = None

    def close(self) -> None:
        if self._pagemap is not None:
            os.close(self._pagemap)
            self._pagemap = None
        self._words.release()
        self.view.release()

    def copy(self, start: int, end: int, file_offset: int, anon: bool) -> None:
        """Copy target memory [start, end) to the file at *file_offset*."""
        for chunk in range(start, end, CHUNK):
            n = min(CHUNK, end - chunk)
            base = file_offset + (chunk - start)
            for off, length in self._touched_runs(chunk, n) if anon else ((0, n),):
                got = self._read(chunk + off, off, length)
                if got < length:
                    self._salvage(chunk + off + got, off + got, length - got)
                self._write_nonzero(off, length, base)
            if self.tick is not None:
                self.tick(self.written)

    def _touched_runs(self, address: int, n: int) -> Iterator[Tuple[int, int]]:
        """(offset, length) runs of pages present or swapped; untouched anonymous pages read as zero."""
        if self._pagemap is None:
            yield 0, n
            return
        pages = n // PAGE
        try:
            entries = os.pread(self._pagemap, pages * 8, (address // PAGE) * 8)
        except OSError:
            yield 0, n
            return
        if len(entries) != pages * 8:
            yield 0, n
            return
        flags = entries[7::8].translate(_IN_MEMORY)
        for m in _RUNS.finditer(flags):
            yield m.start() * PAGE, (m.end() - m.start()) * PAGE

    def _read(self, address: int, offset: int, length: int) -> int:
        self._local.iov_base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf, offset))
        self._local.iov_len = length
        self._remote.iov_base = address
        self._remote.iov_len = length
        try:
            return libc.process_vm_readv(self.pid, ctypes.byref(self._local), 1, ctypes.byref(self._remote), 1, 0)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise DumpFailed(
                    f"process {self.pid} exited while it was being dumped; nothing was kept",
                    pid=self.pid,
                    reason="exited",
                ) from None
            if exc.errno in (errno.EFAULT, errno.EIO, errno.ENOMEM):
                return 0
            raise DumpFailed(f"reading memory of process {self.pid} failed: {exc}", pid=self.pid, errno=exc.errno) from None

    def _salvage(self, address: int, offset: int, length: int) -> None:
        """After a short read, take what can be read page by page; the rest stays zero (a hole)."""
        for page in range(0, length, PAGE):
            if self._read(address + page, offset + page, PAGE) < PAGE:
                self.buf[offset + page : offset + page + PAGE] = ZERO_PAGE

    def _write_nonzero(self, offset: int, length: int, base: int) -> None:
        """Write buf[offset:offset+length] except its all-zero pages, in as few calls as possible."""
        run_start = offset
        for zero_start, zero_end in self._zero_pages(offset, length):
            if zero_start > run_start:
                self._pwrite(run_start, zero_start, base)
            run_start = zero_end
        if offset + length > run_start:
            self._pwrite(run_start, offset + length, base)

    def _zero_pages(self, offset: int, length: int) -> Iterator[Tuple[int, int]]:
        """[start, end) buffer ranges of whole pages that are all zero, in order.

        A page can only be zero if its first 64 bytes are. Those are gathered for every page at
        once by 8 strided slices of 8-byte words, so pages of real data are ruled out by a few C
        operations per chunk rather than a Python loop per page; the few left are compared whole.
        """
        pages = length // PAGE
        if not pages:
            return
        word, stride = offset // 8, PAGE // 8
        heads = 0
        for j in range(8):  # word j of every page, as one little-endian integer of 8-byte lanes
            heads |= int.from_bytes(self._words[word + j : word + pages * stride : stride].tobytes(), "little")
        lanes = heads.to_bytes(8 * pages, "little")
        folded = 0
        for k in range(8):  # OR each page's 8 lane bytes into one byte
            folded |= int.from_bytes(lanes[k::8], "little")
        buf = self.buf
        for m in _ZERO_BYTES.finditer(folded.to_bytes(pages, "little")):
            run = None
            for page in range(m.start(), m.end()):
                at = offset + page * PAGE
                if buf.startswith(ZERO_PAGE, at):
                    run = (run[0], at + PAGE) if run else (at, at + PAGE)
                    continue
                if run:
                    yield run
                    run = None
            if run:
                yield run

    def _pwrite(self, lo: int, hi: int, base: int) -> None:
        self.sink.write_at(self.view[lo:hi], base + lo)
        self.written += hi - lo


def read_small(pid: int, address: int, length: int) -> Optional[bytes]:
    """Up to *length* bytes at *address* (fewer if the range runs into unmapped memory), None if none."""
    buf = ctypes.create_string_buffer(length)
    local = libc.iovec(ctypes.cast(buf, ctypes.c_void_p), length)
    remote = libc.iovec(address, length)
    try:
        got = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            raise
        return None
    return buf.raw[:got] if got > 0 else None
