"""``dumplib.info``: what a dump file holds, for either format, by the readers verification uses."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from typing import Any, Dict, List, Optional

from .compression import open_content, require_reader, sniff
from ._text import printable
from .errors import InvalidDumpFile
from .formats import elfcore, minidump

_SIGNATURE = re.compile(r"dumplib (\S+); kind=(\w+); flags=(0x[0-9A-Fa-f]+|kind rules)")


@dataclasses.dataclass(frozen=True)
class DumpInfo:
    """What ``dumplib.info`` read in a dump file: its format, whose process, what it holds, whether it is whole."""

    path: str
    #: ``"minidump"`` or ``"elf-core"``.
    format: str
    file_size: int
    pid: Optional[int]
    process: Optional[str]
    kind: Optional[str]
    flags: Optional[int]
    threads: int
    modules: List[str]
    memory_ranges: int
    memory_bytes: int
    comment: Optional[str]
    complete: bool
    problems: List[str]
    #: ``"gzip"``/``"zstd"`` if the file is compressed (then *file_size* is the decompressed size).
    compression: Optional[str] = None
    #: Bytes of the file as stored on disk.
    stored_size: Optional[int] = None
    #: The dumplib version that wrote it, from its signature record (None if dumplib did not write it).
    dumplib_version: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The facts as a JSON-friendly dict (``dumplib info --json``)."""
        return dataclasses.asdict(self)


def info(path: str) -> DumpInfo:
    """Read *path* (a minidump or an ELF core, plain or gzip/zstd-compressed) and describe it;
    InvalidDumpFile if it is neither, or unreadable, or not a regular file (a FIFO, a device).

    Time and memory stay bounded whatever the file's headers claim; names inside it are shown with
    undecodable bytes and control characters escaped as ``\\xNN``."""
    head, stored = _regular_head(path)
    codec = sniff(head)
    if codec is not None:
        what = "a compressed file"
        require_reader(path, codec)
        with open_content(path, codec) as f:
            head = f.read(4)
    else:
        what = "a file"
    if minidump.looks_like_minidump(head):
        return _from_minidump(minidump.read_minidump(path), stored)
    if elfcore.looks_like_elf(head):
        return _from_core(elfcore.read_elfcore(path), stored)
    raise InvalidDumpFile(f"{path} is {what} that is neither a minidump nor an ELF core", path=path)


def _regular_head(path: str) -> "tuple[bytes, int]":
    """The first bytes and stored size of *path*, refusing what is not a regular file: opening a FIFO
    waits for a writer, and a device never ends."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        # Refused before it is opened: opening a FIFO, even to refuse it, lets a writer waiting for a reader on.
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidDumpFile(f"{path} is not a regular file ({_file_type(mode)}); a dump is a file", path=path)
        fd = os.open(path, flags)
    except OSError as exc:
        raise InvalidDumpFile(f"cannot read {path}: {exc.strerror}", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidDumpFile(f"{path} is not a regular file ({_file_type(st.st_mode)}); a dump is a file",
                                  path=path)
        return os.read(fd, 4), st.st_size
    except OSError as exc:
        raise InvalidDumpFile(f"cannot read {path}: {exc.strerror}", path=path) from None
    finally:
        os.close(fd)


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _core_signature(record: Optional[str]) -> Dict[str, Any]:
    """kind, flags and version from a core's signature note (JSON), and from nothing else: the comment
    note is the user's text, which may say anything."""
    try:
        data = json.loads(record) if record else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("tool") != "dumplib":
        return {"kind": None, "flags": None, "version": None}
    kind, flags, version = data.get("kind"), data.get("flags"), data.get("version")
    return {"kind": kind if isinstance(kind, str) else None,
            "flags": flags if isinstance(flags, int) and not isinstance(flags, bool) else None,
            "version": version if isinstance(version, str) else None}


def _signature(record: Optional[str]) -> Dict[str, Any]:
    """kind and flags from dumplib's signature record (JSON), or from the older one-line form."""
    try:
        data = json.loads(record or "")
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("tool") == "dumplib":
        flags = data.get("flags")
        return {"kind": data.get("kind"), "flags": flags if isinstance(flags, int) else None}
    m = _SIGNATURE.search(record or "")
    if not m:
        return {"kind": None, "flags": None}
    return {"kind": m.group(2), "flags": None if m.group(3) == "kind rules" else int(m.group(3), 16)}


def _split_comment_stream(comment: Optional[str]) -> "tuple[Optional[str], Optional[str]]":
    """(user comment, signature) from a minidump's comment stream, where the signature is the last line."""
    if comment is None:
        return None, None
    text, _, last = comment.rpartition("\n")
    if last.startswith('{"tool":"dumplib"') or _SIGNATURE.search(last):
        return (text.strip() or None), last
    return (comment.strip() or None), None


def _from_minidump(d: minidump.Minidump, stored: int) -> DumpInfo:
    user_comment, record = _split_comment_stream(d.comment)
    sig = _signature(record)
    return DumpInfo(
        path=d.path, format="minidump", file_size=d.file_size, pid=d.pid,
        process=printable(d.modules[0].name) if d.modules else None, kind=sig["kind"],
        flags=d.flags if sig["flags"] is None else sig["flags"], threads=len(d.threads),
        modules=[printable(m.path) for m in d.modules], memory_ranges=len(d.memory), memory_bytes=d.memory_bytes,
        comment=printable(user_comment) if user_comment is not None else None, complete=d.complete,
        problems=list(d.problems), compression=d.compression, stored_size=stored,
    )


def _from_core(c: elfcore.ElfCore, stored: int) -> DumpInfo:
    sig = _core_signature(c.signature)
    return DumpInfo(
        path=c.path, format="elf-core", file_size=c.file_size, pid=c.pid, process=c.command, kind=sig["kind"],
        flags=sig["flags"], threads=len(c.threads), modules=elfcore.loaded_objects(c), memory_ranges=len(c.loads),
        memory_bytes=c.memory_bytes, comment=c.comment, complete=c.complete,
        problems=list(c.problems), compression=c.compression, stored_size=stored, dumplib_version=sig["version"],
    )
