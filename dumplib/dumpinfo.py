"""``dumplib.info``: what a dump file holds, for either format, by the readers verification uses."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional

from .compression import open_content, require_reader, sniff
from .errors import InvalidDumpFile
from .formats import elfcore, minidump

_SIGNATURE = re.compile(r"dumplib (\S+); kind=(\w+); flags=(0x[0-9A-Fa-f]+|kind rules)")


@dataclasses.dataclass(frozen=True)
class DumpInfo:
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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def info(path: str) -> DumpInfo:
    """Read *path* (a minidump or an ELF core, plain or gzip/zstd-compressed) and describe it;
    InvalidDumpFile if it is neither, or unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        stored = os.stat(path).st_size
    except OSError as exc:
        raise InvalidDumpFile(f"cannot read {path}: {exc.strerror}", path=path) from None
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
        process=d.modules[0].name if d.modules else None, kind=sig["kind"],
        flags=d.flags if sig["flags"] is None else sig["flags"], threads=len(d.threads),
        modules=[m.path for m in d.modules], memory_ranges=len(d.memory), memory_bytes=d.memory_bytes,
        comment=user_comment, complete=d.complete, problems=list(d.problems),
        compression=d.compression, stored_size=stored,
    )


def _from_core(c: elfcore.ElfCore, stored: int) -> DumpInfo:
    sig = _signature(c.signature)
    return DumpInfo(
        path=c.path, format="elf-core", file_size=c.file_size, pid=c.pid, process=c.command, kind=sig["kind"],
        flags=sig["flags"], threads=len(c.threads), modules=c.files, memory_ranges=len(c.loads),
        memory_bytes=c.memory_bytes, comment=c.comment, complete=c.complete,
        problems=list(c.problems), compression=c.compression, stored_size=stored,
    )
