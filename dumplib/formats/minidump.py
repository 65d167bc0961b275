"""A small reader of Windows minidump files (no third-party parser).

It serves both the verification after writing and ``dumplib info``: one parser of these bytes.
It reads the header, the stream directory and the few streams that say what a dump holds;
memory contents are only touched by :meth:`Minidump.read_memory`.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Dict, List, Optional, Tuple

from ..compression import open_content, open_dump
from ..errors import InvalidDumpFile

SIGNATURE = b"MDMP"

# Stream types (MINIDUMP_STREAM_TYPE).
THREAD_LIST = 3
MODULE_LIST = 4
MEMORY_LIST = 5
EXCEPTION = 6
SYSTEM_INFO = 7
MEMORY64_LIST = 9
COMMENT_A = 10
COMMENT_W = 11
HANDLE_DATA = 12
UNLOADED_MODULE_LIST = 14
MISC_INFO = 15
MEMORY_INFO_LIST = 16
THREAD_INFO_LIST = 17
TOKEN = 19

STREAM_NAMES = {
    THREAD_LIST: "ThreadList",
    MODULE_LIST: "ModuleList",
    MEMORY_LIST: "MemoryList",
    EXCEPTION: "Exception",
    SYSTEM_INFO: "SystemInfo",
    MEMORY64_LIST: "Memory64List",
    COMMENT_A: "CommentA",
    COMMENT_W: "CommentW",
    HANDLE_DATA: "HandleData",
    UNLOADED_MODULE_LIST: "UnloadedModuleList",
    MISC_INFO: "MiscInfo",
    MEMORY_INFO_LIST: "MemoryInfoList",
    THREAD_INFO_LIST: "ThreadInfoList",
    TOKEN: "Token",
}

_HEADER = struct.Struct("<4sIIIIIQ")
_DIRECTORY = struct.Struct("<III")
_THREAD = struct.Struct("<IIIIQQIIII")  # id, suspend, prio class, prio, teb, stack start, stack loc, context loc
_MODULE = struct.Struct("<QIIII52s8s8sQQ")
_MEM_DESC = struct.Struct("<QII")
_MEM_DESC64 = struct.Struct("<QQ")
_ARCHITECTURES = {0: "x86", 5: "arm", 6: "ia64", 9: "amd64", 12: "arm64"}
_MAX_STREAMS = 4096


@dataclasses.dataclass(frozen=True)
class Thread:
    tid: int
    stack_start: int
    stack_size: int


@dataclasses.dataclass(frozen=True)
class Module:
    base: int
    size: int
    path: str

    @property
    def name(self) -> str:
        return self.path.replace("/", "\\").rsplit("\\", 1)[-1]


@dataclasses.dataclass(frozen=True)
class MemoryRange:
    start: int
    size: int
    rva: int


@dataclasses.dataclass
class Minidump:
    path: str
    file_size: int
    version: int
    flags: int
    timestamp: int
    #: stream type -> (data size, rva), first occurrence of each type.
    streams: Dict[int, Tuple[int, int]]
    threads: List[Thread]
    modules: List[Module]
    memory: List[MemoryRange]
    pid: Optional[int]
    architecture: Optional[str]
    comment: Optional[str]
    #: What makes the file incomplete or inconsistent; empty when it is whole.
    problems: List[str]
    #: ``"gzip"``/``"zstd"`` when the file on disk is compressed (sizes and RVAs are of the content).
    compression: Optional[str] = None

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def memory_bytes(self) -> int:
        return sum(r.size for r in self.memory)

    def has_stream(self, stream_type: int) -> bool:
        return stream_type in self.streams

    def stream_names(self) -> List[str]:
        return [STREAM_NAMES.get(t, f"0x{t:X}") for t in self.streams]

    def holds(self, address: int) -> bool:
        """Whether the dump captured the byte at *address*."""
        return any(r.start <= address < r.start + r.size for r in self.memory)

    def read_memory(self, address: int, length: int) -> Optional[bytes]:
        """Bytes at *address* in the dumped process, or None if the dump does not hold them all."""
        for r in self.memory:
            if r.start <= address and address + length <= r.start + r.size:
                with open_content(self.path, self.compression) as f:
                    f.seek(r.rva + (address - r.start))
                    data = f.read(length)
                return data if len(data) == length else None
        return None


class _Reader:
    def __init__(self, f: BinaryIO, path: str, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def read(self, rva: int, n: int) -> bytes:
        if rva + n > self.size:
            raise InvalidDumpFile(
                f"{self.path} is truncated: needs bytes {rva}..{rva + n} but the file has {self.size}",
                path=self.path,
            )
        self.f.seek(rva)
        return self.f.read(n)

    def string(self, rva: int) -> str:
        (length,) = struct.unpack("<I", self.read(rva, 4))
        if length > 65536:
            raise InvalidDumpFile(f"{self.path}: a module name of {length} bytes is implausible", path=self.path)
        return self.read(rva + 4, length).decode("utf-16-le", "replace")


def looks_like_minidump(head: bytes) -> bool:
    return head[:4] == SIGNATURE


def read_minidump(path: str) -> Minidump:
    """Parse *path*; raise InvalidDumpFile if it is not a minidump at all.

    A truncated or inconsistent file still parses where it can, with ``problems`` saying what is wrong.
    """
    f, size, codec = open_dump(path)
    with f:
        r = _Reader(f, path, size)
        if size < _HEADER.size:
            raise InvalidDumpFile(f"{path} is not a minidump: only {size} bytes", path=path)
        sig, version, count, dir_rva, _checksum, stamp, flags = _HEADER.unpack(r.read(0, _HEADER.size))
        if sig != SIGNATURE:
            raise InvalidDumpFile(f"{path} is not a minidump: no MDMP signature", path=path)
        if count > _MAX_STREAMS:
            raise InvalidDumpFile(f"{path}: {count} streams is not a sane stream directory", path=path)
        dump = Minidump(path, size, version & 0xFFFF, flags, stamp, {}, [], [], [], None, None, None, [], codec)
        directory = r.read(dir_rva, count * _DIRECTORY.size)
        for i in range(count):
            stype, dsize, rva = _DIRECTORY.unpack_from(directory, i * _DIRECTORY.size)
            if stype == 0:  # UnusedStream: padding entries writers may leave
                continue
            if rva + dsize > size:
                dump.problems.append(
                    f"stream {STREAM_NAMES.get(stype, hex(stype))} ends at {rva + dsize}, past the end of the file ({size})"
                )
                continue
            dump.streams.setdefault(stype, (dsize, rva))
        for stype, parse in _PARSERS.items():
            if stype in dump.streams:
                try:
                    parse(r, dump, *dump.streams[stype])
                except (InvalidDumpFile, struct.error, UnicodeDecodeError) as exc:
                    dump.problems.append(f"stream {STREAM_NAMES[stype]} is corrupt: {exc}")
        return dump


def _threads(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    (n,) = struct.unpack("<I", r.read(rva, 4))
    data = r.read(rva + 4, n * _THREAD.size)
    for i in range(n):
        tid, _s, _pc, _p, _teb, start, ssize, _srva, _csize, _crva = _THREAD.unpack_from(data, i * _THREAD.size)
        d.threads.append(Thread(tid, start, ssize))


def _modules(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    (n,) = struct.unpack("<I", r.read(rva, 4))
    data = r.read(rva + 4, n * _MODULE.size)
    for i in range(n):
        base, msize, _ck, _ts, name_rva = _MODULE.unpack_from(data, i * _MODULE.size)[:5]
        d.modules.append(Module(base, msize, r.string(name_rva)))


def _memory_list(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    (n,) = struct.unpack("<I", r.read(rva, 4))
    data = r.read(rva + 4, n * _MEM_DESC.size)
    for i in range(n):
        start, dsize, drva = _MEM_DESC.unpack_from(data, i * _MEM_DESC.size)
        if drva + dsize > r.size:
            d.problems.append(f"memory at 0x{start:X} lies past the end of the file")
            continue
        d.memory.append(MemoryRange(start, dsize, drva))


def _memory64_list(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    n, base_rva = struct.unpack("<QQ", r.read(rva, 16))
    if n > (r.size // _MEM_DESC64.size):
        raise InvalidDumpFile(f"{n} memory ranges cannot fit in the file", path=r.path)
    data = r.read(rva + 16, n * _MEM_DESC64.size)
    offset = base_rva
    for i in range(n):
        start, dsize = _MEM_DESC64.unpack_from(data, i * _MEM_DESC64.size)
        d.memory.append(MemoryRange(start, dsize, offset))
        offset += dsize
    if offset > r.size:
        d.problems.append(f"full-memory data ends at {offset}, past the end of the file ({r.size}): truncated")


def _misc(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    if size >= 12:
        _size, flags1, pid = struct.unpack("<III", r.read(rva, 12))
        if flags1 & 0x1:  # MINIDUMP_MISC1_PROCESS_ID
            d.pid = pid


def _system(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    (arch,) = struct.unpack("<H", r.read(rva, 2))
    d.architecture = _ARCHITECTURES.get(arch, f"0x{arch:X}")


def _comment_w(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    d.comment = r.read(rva, size).decode("utf-16-le", "replace").rstrip("\x00")


def _comment_a(r: _Reader, d: Minidump, size: int, rva: int) -> None:
    if d.comment is None:
        d.comment = r.read(rva, size).decode("latin-1").rstrip("\x00")


_PARSERS = {
    THREAD_LIST: _threads,
    MODULE_LIST: _modules,
    MEMORY_LIST: _memory_list,
    MEMORY64_LIST: _memory64_list,
    MISC_INFO: _misc,
    SYSTEM_INFO: _system,
    COMMENT_W: _comment_w,
    COMMENT_A: _comment_a,
}
