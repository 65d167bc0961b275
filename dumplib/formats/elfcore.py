"""ELF core files: the header layout dumplib writes, and the reader used by verification and `info`."""
from __future__ import annotations

import dataclasses
import io
import struct
from typing import BinaryIO, List, Optional, Sequence, Tuple

from ..compression import open_content, open_dump
from ..errors import InvalidDumpFile

PAGE = 4096
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45
#: dumplib's own note (owner "DUMPLIB"): the comment text, UTF-8. Debuggers ignore unknown owners.
NT_DUMPLIB_COMMENT = 0x444D5043  # "DMPC": distinct from every CORE/LINUX note type

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, SYSV


@dataclasses.dataclass(frozen=True)
class Load:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@dataclasses.dataclass(frozen=True)
class Note:
    owner: str
    type: int
    offset: int  # of the descriptor in the file
    size: int


def layout(loads: Sequence[Tuple[int, int, int, int]], notes_size: int) -> Tuple[bytes, List[int], int]:
    """ELF header + program headers for *loads* (vaddr, memsz, flags, filesz) after a PT_NOTE.

    Returns (header bytes, file offset of each load, end of the file). Segment data starts
    page-aligned; a load's memory past its *filesz* reads as zero (ELF's rule, which gdb follows),
    so untouched memory is described without being stored. Past 0xfffe loads the count moves to
    section 0's sh_info (PN_XNUM).
    """
    phnum = 1 + len(loads)
    xnum = phnum >= PN_XNUM
    head = _EHDR.size + phnum * _PHDR.size + (_SHDR.size if xnum else 0)
    notes_at = head + (-head % 4)
    cursor = notes_at + notes_size
    cursor += -cursor % PAGE
    offsets = []
    phdrs = [_PHDR.pack(PT_NOTE, 0, notes_at, 0, 0, notes_size, 0, 4)]
    for vaddr, memsz, flags, filesz in loads:
        if isinstance(filesz, bool) or not 0 <= filesz <= memsz:
            raise ValueError(f"load at 0x{vaddr:x}: file size {filesz!r} is not within its memory size {memsz}")
        offsets.append(cursor)
        phdrs.append(_PHDR.pack(PT_LOAD, flags, cursor, vaddr, 0, filesz, memsz, PAGE))
        cursor += filesz + (-filesz % PAGE)
    ehdr = _EHDR.pack(
        _IDENT, ET_CORE, EM_X86_64, 1, 0, _EHDR.size, _EHDR.size + phnum * _PHDR.size if xnum else 0, 0,
        _EHDR.size, _PHDR.size, PN_XNUM if xnum else phnum, _SHDR.size if xnum else 0, 1 if xnum else 0, 0,
    )
    shdr = _SHDR.pack(0, 0, 0, 0, 0, 0, 0, phnum, 0, 0) if xnum else b""
    header = ehdr + b"".join(phdrs) + shdr
    return header + b"\0" * (notes_at - len(header)), offsets, cursor


@dataclasses.dataclass
class ElfCore:
    path: str
    file_size: int
    loads: List[Load]
    notes: List[Note]
    problems: List[str]
    threads: List[int] = dataclasses.field(default_factory=list)
    pid: Optional[int] = None
    command: Optional[str] = None
    comment: Optional[str] = None
    files: List[str] = dataclasses.field(default_factory=list)
    #: ``"gzip"``/``"zstd"`` when the file on disk is compressed (sizes and offsets are of the content).
    compression: Optional[str] = None

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def memory_bytes(self) -> int:
        return sum(load.filesz for load in self.loads)

    def note_types(self) -> List[int]:
        return [n.type for n in self.notes]

    def holds(self, address: int) -> bool:
        return any(ld.filesz and ld.vaddr <= address < ld.vaddr + ld.filesz for ld in self.loads)

    def read_memory(self, address: int, length: int) -> Optional[bytes]:
        for ld in self.loads:
            if ld.filesz and ld.vaddr <= address and address + length <= ld.vaddr + ld.filesz:
                with open_content(self.path, self.compression) as f:
                    f.seek(ld.offset + address - ld.vaddr)
                    data = f.read(length)
                return data if len(data) == length else None
        return None


def looks_like_elf(head: bytes) -> bool:
    return head[:4] == b"\x7fELF"


def read_elfcore(path: str) -> ElfCore:
    """Parse *path*, plain or gzip/zstd-compressed; InvalidDumpFile if it is not an ELF core at all."""
    f, size, codec = open_dump(path)
    with f:
        core = _parse(f, path, size)
    core.compression = codec
    return core


def parse_head(head: bytes, size: int, name: str) -> ElfCore:
    """Parse a core from its first bytes (header, program headers, notes) and its total *size*: how a
    core sent down a pipe is checked, since it cannot be read back."""
    return _parse(io.BytesIO(head), name, size)


def _read(f: BinaryIO, path: str, size: int, offset: int, n: int) -> bytes:
    if offset + n > size:
        raise InvalidDumpFile(f"{path} is truncated: needs bytes {offset}..{offset + n} of {size}", path=path)
    f.seek(offset)
    return f.read(n)


def _parse(f: BinaryIO, path: str, size: int) -> ElfCore:
    if size < _EHDR.size:
        raise InvalidDumpFile(f"{path} is not an ELF core: only {size} bytes", path=path)
    ident, etype, machine, _v, _e, phoff, shoff, _fl, _eh, phentsize, phnum, _she, shnum, _shs = _EHDR.unpack(
        _read(f, path, size, 0, _EHDR.size)
    )
    if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
        raise InvalidDumpFile(f"{path} is not a 64-bit little-endian ELF file", path=path)
    if etype != ET_CORE:
        raise InvalidDumpFile(f"{path} is an ELF file but not a core (e_type {etype})", path=path)
    if phentsize != _PHDR.size:
        raise InvalidDumpFile(f"{path}: program header size {phentsize} is not {_PHDR.size}", path=path)
    if phnum == PN_XNUM:
        if not shoff or not shnum:
            raise InvalidDumpFile(f"{path}: PN_XNUM without a section header", path=path)
        phnum = _SHDR.unpack(_read(f, path, size, shoff, _SHDR.size))[7]
    raw = _read(f, path, size, phoff, phnum * _PHDR.size)
    core = ElfCore(path, size, [], [], [])
    note_ranges = []
    for i in range(phnum):
        ptype, flags, offset, vaddr, _pa, filesz, memsz, _al = _PHDR.unpack_from(raw, i * _PHDR.size)
        if ptype == PT_LOAD:
            core.loads.append(Load(vaddr, memsz, offset, filesz, flags))
            if offset + filesz > size:
                core.problems.append(f"segment at 0x{vaddr:x} ends at {offset + filesz}, past the end of the file ({size})")
        elif ptype == PT_NOTE:
            note_ranges.append((offset, filesz))
    for offset, length in note_ranges:
        _parse_notes(f, core, size, offset, length)
    if not note_ranges:
        core.problems.append("no PT_NOTE segment")
    return core


def _parse_notes(f: BinaryIO, core: ElfCore, size: int, offset: int, length: int) -> None:
    if offset + length > size:
        core.problems.append(f"the notes end at {offset + length}, past the end of the file ({size})")
        return
    f.seek(offset)
    data = f.read(length)
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + namesz + (-namesz % 4)
        end = desc_at + descsz + (-descsz % 4)
        if desc_at + descsz > len(data):
            core.problems.append("a note runs past the end of the notes segment")
            return
        owner = data[name_at : name_at + namesz].rstrip(b"\0").decode("latin-1")
        desc = data[desc_at : desc_at + descsz]
        core.notes.append(Note(owner, ntype, offset + desc_at, descsz))
        _interpret(core, owner, ntype, desc)
        pos = end


def _interpret(core: ElfCore, owner: str, ntype: int, desc: bytes) -> None:
    if owner == "CORE" and ntype == NT_PRSTATUS and len(desc) >= 36:
        core.threads.append(struct.unpack_from("<i", desc, 32)[0])
    elif owner == "CORE" and ntype == NT_PRPSINFO and len(desc) >= 136:
        core.pid = struct.unpack_from("<i", desc, 24)[0]
        core.command = desc[56:136].split(b"\0", 1)[0].decode("utf-8", "replace") or desc[40:56].split(b"\0", 1)[0].decode()
    elif owner == "CORE" and ntype == NT_FILE and len(desc) >= 16:
        count = struct.unpack_from("<Q", desc, 0)[0]
        names = desc[16 + 24 * count :].split(b"\0")
        core.files = sorted({n.decode("utf-8", "replace") for n in names if n})
    elif owner == "DUMPLIB" and ntype == NT_DUMPLIB_COMMENT:
        core.comment = desc.decode("utf-8", "replace")
