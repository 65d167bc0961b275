"""ELF core files: the header layout dumplib writes, and the reader used by verification and `info`."""
from __future__ import annotations

import array
import bisect
import io
import struct

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union, overload
else:
    from collections.abc import Sequence  # a base class below (typing's Sequence is this one)

    from .._typing import TypeVar, overload

from .._record import field, record
from .._text import printable
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
#: dumplib's signature (owner "DUMPLIB"): JSON {tool, version, kind, flags}, apart from the user's comment.
NT_DUMPLIB_SIGNATURE = 0x444D5053  # "DMPS"

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_NHDR = struct.Struct("<III")
_IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, version 1, SYSV


@record(frozen=True)
class Load:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int


@record(frozen=True)
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


#: What a core may make the reader do, whatever its headers claim: a hostile file costs what a real one does.
#: 32x Linux's default vm.max_map_count (one PT_LOAD per mapping), and a quarter of a million threads.
MAX_PROGRAM_HEADERS = 1 << 21
MAX_NOTE_SEGMENTS = 16
MAX_NOTES = 1 << 20
MAX_OWNER_BYTES = 256
#: dumplib's own records and the process record are small; a larger one is not ours.
MAX_TEXT_NOTE = 1 << 20
MAX_FILE_NAMES = 1 << 16
_CHUNK = 1 << 20

# e_machine values a core of another architecture is likely to carry, to say what it is.
_MACHINES = {3: "i386", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "S/390", 40: "ARM", 50: "IA-64",
             62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch"}


_T = TypeVar("_T")


class _Packed(Sequence[_T]):
    """Records of *width* unsigned integers packed in one array: a million of them cost 8 bytes a field,
    not the ~200 bytes of an object each."""

    width = 1

    def __init__(self) -> None:
        self.cols = array.array("Q")

    def __len__(self) -> int:
        return len(self.cols) // self.width

    def _record(self, fields: Sequence[int]) -> _T:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> _T: ...
    @overload
    def __getitem__(self, i: slice) -> List[_T]: ...
    def __getitem__(self, i: Union[int, slice]) -> Union[_T, List[_T]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._record(self.cols[self.width * i : self.width * (i + 1)])


class _Loads(_Packed[Load]):
    width = 5  # vaddr, memsz, offset, filesz, flags

    def _record(self, fields: Sequence[int]) -> Load:
        return Load(*fields)


class _Notes(_Packed[Note]):
    width = 4  # owner index, type, descriptor offset, descriptor size

    def __init__(self) -> None:
        super().__init__()
        self._owners: List[str] = []

    def owner_index(self, owner: str) -> int:
        self._owners.append(owner)
        return len(self._owners) - 1

    def _record(self, fields: Sequence[int]) -> Note:
        owner, ntype, offset, size = fields
        return Note(self._owners[owner], ntype, offset, size)

    def types(self) -> List[int]:
        return list(self.cols[1::4])


@record()
class ElfCore:
    path: str
    file_size: int
    loads: Sequence[Load]
    notes: Sequence[Note]
    problems: List[str]
    threads: List[int] = field(default_factory=list)
    pid: Optional[int] = None
    #: The process's command line (else its name), undecodable bytes and controls shown as ``\xNN``.
    command: Optional[str] = None
    comment: Optional[str] = None
    signature: Optional[str] = None
    #: Mapped files named by NT_FILE, shown as ``command`` is (the note itself holds the kernel's bytes).
    files: List[str] = field(default_factory=list)
    #: ``"gzip"``/``"zstd"`` when the file on disk is compressed (sizes and offsets are of the content).
    compression: Optional[str] = None
    #: Bytes of memory the PT_LOADs hold in the file (their p_filesz), summed as they are read.
    memory_bytes: int = 0
    #: (offset, size) of the NT_FILE and NT_AUXV descriptors, for loaded_objects().
    file_note: Optional[Tuple[int, int]] = None
    auxv_note: Optional[Tuple[int, int]] = None

    @property
    def complete(self) -> bool:
        return not self.problems

    def note_types(self) -> List[int]:
        return self.notes.types() if isinstance(self.notes, _Notes) else [n.type for n in self.notes]

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
    """Parse *path*, plain or gzip/zstd-compressed; InvalidDumpFile if it is not an x86-64 ELF core.

    Time and memory are bounded whatever the headers claim (see the MAX_ limits): what goes past a
    limit is left unread and named in ``problems``, so the core is not ``complete``.
    """
    f, size, codec = open_dump(path)
    with f:
        try:
            core = _parse(f, path, size)
        except (ValueError, OverflowError, OSError) as exc:  # offsets no file has (seek past 2**63...)
            raise InvalidDumpFile(f"{path} is not a readable ELF core: {exc}", path=path) from None
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


def describe_ident(head: bytes) -> str:
    """``a 32-bit big-endian ELF core for MIPS``: what an ELF header says it is, for messages."""
    bits = {1: "32-bit", 2: "64-bit"}.get(head[4], f"class-{head[4]}")
    order = {1: "little-endian", 2: "big-endian"}.get(head[5], f"byte-order-{head[5]}")
    etype, machine = struct.unpack_from("<HH" if head[5] != 2 else ">HH", head, 16)
    what = "core" if etype == ET_CORE else f"file (e_type {etype}, not a core)"
    return f"a {bits} {order} ELF {what} for {_MACHINES.get(machine, f'machine {machine}')}"


def _check_ident(head: bytes, path: str) -> None:
    """Refuse what this reader would misread: another class, byte order or machine than dumplib writes."""
    if head[:4] != b"\x7fELF":
        raise InvalidDumpFile(f"{path} is not an ELF file", path=path)
    etype, machine = struct.unpack_from("<HH" if head[5] != 2 else ">HH", head, 16)
    if head[4] != 2 or head[5] != 1 or machine != EM_X86_64:
        raise InvalidDumpFile(
            f"{path} is {describe_ident(head)}; dumplib reads 64-bit little-endian x86-64 cores only"
            " (open it with gdb-multiarch, or with gdb on a machine of its architecture)", path=path)
    if etype != ET_CORE:
        raise InvalidDumpFile(f"{path} is an ELF file but not a core (e_type {etype})", path=path)


def _parse(f: BinaryIO, path: str, size: int) -> ElfCore:
    if size < _EHDR.size:
        raise InvalidDumpFile(f"{path} is not an ELF core: only {size} bytes", path=path)
    head = _read(f, path, size, 0, _EHDR.size)
    _check_ident(head, path)
    _i, _t, _m, _v, _e, phoff, shoff, _fl, _eh, phentsize, phnum, _she, shnum, _shs = _EHDR.unpack(head)
    if phentsize != _PHDR.size:
        raise InvalidDumpFile(f"{path}: program header size {phentsize} is not {_PHDR.size}", path=path)
    if phnum == PN_XNUM:
        if not shoff or not shnum:
            raise InvalidDumpFile(f"{path}: PN_XNUM without a section header", path=path)
        phnum = _SHDR.unpack(_read(f, path, size, shoff, _SHDR.size))[7]
    if phoff + phnum * _PHDR.size > size:
        raise InvalidDumpFile(f"{path} is truncated: its {phnum} program headers end past its {size} bytes", path=path)
    core = ElfCore(path, size, _Loads(), _Notes(), [])
    if phnum > MAX_PROGRAM_HEADERS:
        core.problems.append(f"it claims {phnum} program headers; only the first {MAX_PROGRAM_HEADERS} were read")
        phnum = MAX_PROGRAM_HEADERS
    note_ranges = _program_headers(f, core, phoff, phnum)
    if len(note_ranges) > MAX_NOTE_SEGMENTS:
        core.problems.append(f"more than {MAX_NOTE_SEGMENTS} PT_NOTE segments; only the first"
                             f" {MAX_NOTE_SEGMENTS} were read")
        del note_ranges[MAX_NOTE_SEGMENTS:]
    budget = [MAX_NOTES]
    for offset, length in note_ranges:
        try:
            _parse_notes(f, core, size, offset, length, budget)
        except struct.error:  # the file ended before what its headers promised (a head cut short)
            core.problems.append(f"the notes at {offset} are cut short")
    if not note_ranges:
        core.problems.append("no PT_NOTE segment")
    # A core without a thread has nothing a debugger can show; without NT_PRPSINFO the leader's
    # NT_PRSTATUS still names the process, as gdb reads it.
    if not core.threads:
        core.problems.append("no thread: the core has no NT_PRSTATUS note")
    elif core.pid is None:
        core.pid = core.threads[0]
    return core


def _program_headers(f: BinaryIO, core: ElfCore, phoff: int, phnum: int) -> List[Tuple[int, int]]:
    """Read the program headers a chunk at a time into *core*; return the (offset, size) of each PT_NOTE."""
    loads = core.loads
    assert isinstance(loads, _Loads)
    size = core.file_size
    note_ranges: List[Tuple[int, int]] = []
    past_end, first_past = 0, ""
    per_chunk = max(1, _CHUNK // _PHDR.size)
    f.seek(phoff)
    for first in range(0, phnum, per_chunk):
        raw = f.read(min(per_chunk, phnum - first) * _PHDR.size)
        whole = raw[: len(raw) - len(raw) % _PHDR.size]
        for ptype, flags, offset, vaddr, _pa, filesz, memsz, _al in _PHDR.iter_unpack(whole):
            if ptype == PT_LOAD:
                loads.cols.extend((vaddr, memsz, offset, filesz, flags))
                core.memory_bytes += filesz
                if offset + filesz > size:
                    past_end += 1
                    first_past = first_past or f"0x{vaddr:x} ends at {offset + filesz}"
            elif ptype == PT_NOTE and len(note_ranges) <= MAX_NOTE_SEGMENTS:
                note_ranges.append((offset, filesz))
    if past_end:
        core.problems.append(f"{past_end} segment(s) end past the end of the file ({size} bytes); the first,"
                             f" at {first_past}")
    return note_ranges


class _Forward:
    """Reads of a file region through one buffer, moving forward: a note costs its header, not its descriptor,
    and a compressed file is never rewound."""

    def __init__(self, f: BinaryIO, at: int) -> None:
        self.f = f
        self.at = at
        self.buf = b""
        f.seek(at)

    def get(self, at: int, n: int) -> bytes:
        end = self.at + len(self.buf)
        if self.at <= at and at + n <= end:
            return self.buf[at - self.at : at - self.at + n]
        tail = self.buf[at - self.at :] if self.at <= at < end else b""
        if at < self.at or (at > end and not tail):
            self.f.seek(at)
        self.buf = tail + self.f.read(max(n, _CHUNK) - len(tail))
        self.at = at
        return self.buf[:n]

    def pieces(self, at: int, n: int) -> Iterator[bytes]:
        while n > 0:
            piece = self.get(at, min(n, _CHUNK))
            if not piece:
                return
            yield piece
            at += len(piece)
            n -= len(piece)


def _parse_notes(f: BinaryIO, core: ElfCore, size: int, offset: int, length: int, budget: List[int]) -> None:
    end = offset + length
    if end > size:
        core.problems.append(f"the notes end at {end}, past the end of the file ({size})")
        end = size
    notes = core.notes
    assert isinstance(notes, _Notes)
    reader = _Forward(f, offset)
    owners: Dict[bytes, int] = {}  # owner bytes -> index in notes' owner table
    interesting = (b"CORE", b"DUMPLIB")
    pos = offset
    # The loop runs once per note (up to MAX_NOTES): it reads from the window's buffer directly.
    while pos + 12 <= end:
        if budget[0] <= 0:
            core.problems.append(f"more than {MAX_NOTES} notes; the rest were not read")
            return
        budget[0] -= 1
        i = pos - reader.at
        if i < 0 or i + 12 + MAX_OWNER_BYTES > len(reader.buf):
            reader.get(pos, min(12 + MAX_OWNER_BYTES, end - pos))
            i = pos - reader.at
        namesz, descsz, ntype = _NHDR.unpack_from(reader.buf, i)
        if namesz > MAX_OWNER_BYTES:
            core.problems.append(f"a note at {pos} has a {namesz}-byte owner name; the notes after it were not read")
            return
        desc_at = pos + 12 + namesz + (-namesz % 4)
        if desc_at + descsz > end:
            core.problems.append("a note runs past the end of the notes segment")
            return
        raw_owner = reader.buf[i + 12 : i + 12 + namesz].rstrip(b"\0")
        index = owners.get(raw_owner)
        if index is None:
            index = owners[raw_owner] = notes.owner_index(printable(raw_owner))
        notes.cols.extend((index, ntype, desc_at, descsz))
        if raw_owner in interesting:
            _interpret(core, reader, raw_owner, ntype, desc_at, descsz)
        pos = desc_at + descsz + (-descsz % 4)


def _interpret(core: ElfCore, reader: _Forward, owner: bytes, ntype: int, at: int, size: int) -> None:
    if owner == b"CORE" and ntype == NT_PRSTATUS and size >= 36:
        core.threads.append(struct.unpack("<i", reader.get(at + 32, 4))[0])
    elif owner == b"CORE" and ntype == NT_PRPSINFO and size >= 136:
        desc = reader.get(at, 136)
        core.pid = struct.unpack_from("<i", desc, 24)[0]
        command = desc[56:136].split(b"\0", 1)[0] or desc[40:56].split(b"\0", 1)[0]
        core.command = printable(command)
    elif owner == b"CORE" and ntype == NT_FILE and size >= 16:
        core.files = _file_names(core, reader, at, size)
        core.file_note = (at, size)
    elif owner == b"CORE" and ntype == NT_AUXV:
        core.auxv_note = (at, size)
    elif owner == b"DUMPLIB" and ntype in (NT_DUMPLIB_COMMENT, NT_DUMPLIB_SIGNATURE):
        if size > MAX_TEXT_NOTE:
            core.problems.append(f"dumplib's note of type 0x{ntype:x} is {size} bytes; dumplib writes at most"
                                 f" {MAX_TEXT_NOTE}")
            return
        text = reader.get(at, size)
        if ntype == NT_DUMPLIB_COMMENT:
            core.comment = printable(text)
        else:
            core.signature = text.decode("utf-8", "replace")


def _file_names(core: ElfCore, reader: _Forward, at: int, size: int) -> List[str]:
    """The distinct paths in an NT_FILE note, read in pieces; its count is checked against its size."""
    count = struct.unpack("<Q", reader.get(at, 8))[0]
    if 16 + 24 * count > size:
        core.problems.append(f"the NT_FILE note claims {count} files but has room for {(size - 16) // 24}")
        return []
    names: Dict[bytes, None] = {}  # a set that keeps the note's order, so the cut keeps the first ones
    partial = b""
    for piece in reader.pieces(at + 16 + 24 * count, size - 16 - 24 * count):
        *whole, partial = (partial + piece).split(b"\0")
        names.update(dict.fromkeys(n for n in whole if n))
        if len(names) > MAX_FILE_NAMES or len(partial) > _CHUNK:
            core.problems.append(f"the NT_FILE note names more than {MAX_FILE_NAMES} files; the rest were not read")
            names, partial = dict.fromkeys(list(names)[:MAX_FILE_NAMES]), b""  # one piece may hold many more
            break
    if partial:
        names[partial] = None
    return sorted(printable(n) for n in names)


#: Bytes of one NT_FILE path read before it is cut: Linux's PATH_MAX.
_MAX_PATH = 4096
#: Bytes of the AUXV note read: the kernel's is a few hundred.
_MAX_AUXV = 1 << 16
PF_X = 1


def loaded_objects(core: ElfCore) -> List[str]:
    """Paths of the objects loaded in the process (its executable, the dynamic loader, every object of
    the dynamic linker's link_map chain), as gdb's `info sharedlibrary` knows them: not every mapped
    file (NT_FILE also names locale archives, the gconv cache, any file the program mapped).

    Each object is named by the NT_FILE mapping that holds its dynamic section. The chain is read from
    the core's memory; where it cannot be (a compressed core, memory the core lacks), the files with a
    code (executable) PT_LOAD are taken, and failing those every mapped file. Reads are bounded.
    """
    from .linkmap import linkmap_addresses, parse_auxv

    if core.file_note is None:
        return list(core.files)
    with open_content(core.path, core.compression) as f:
        mappings = _file_mappings(f, *core.file_note)
        starts = [m[0] for m in mappings]

        def holder(address: int) -> Optional[int]:
            i = bisect.bisect_right(starts, address) - 1
            return i if i >= 0 and address < mappings[i][1] else None

        objects: List[int] = []
        from_auxv = 0
        if core.auxv_note is not None and core.compression is None:  # a compressed core is not read at random
            f.seek(core.auxv_note[0])
            auxv = parse_auxv(f.read(min(core.auxv_note[1], _MAX_AUXV)))
            linkmap_addresses(auxv, _Memory(core, f).read, objects)
            from_auxv = sum(1 for key in (3, 7, 9) if auxv.get(key))  # AT_PHDR, AT_BASE, AT_ENTRY
        found = [i for i in (holder(a) for a in objects) if i is not None]
        if len(objects) == from_auxv:  # no link_map entry was read (or a static executable): code mappings
            found += [i for i in (holder(ld.vaddr) for ld in core.loads if ld.flags & PF_X) if i is not None]
    names = list(dict.fromkeys(mappings[i][2] for i in found))
    return [printable(n) for n in names] if names else list(core.files)


def _file_mappings(f: BinaryIO, at: int, size: int) -> List[Tuple[int, int, bytes]]:
    """(start, end, path) of each NT_FILE entry, sorted by start; at most MAX_FILE_NAMES."""
    f.seek(at)
    count = struct.unpack("<Q", f.read(8))[0]
    if count > MAX_FILE_NAMES or 16 + 24 * count > size:
        return []
    f.seek(at + 16)
    ranges = [struct.unpack_from("<QQQ", raw) for raw in (f.read(24) for _ in range(count))]
    # Read in pieces up to the count-th name: the note's size is the core's to claim (a hole of zeros, say).
    names: List[bytes] = []
    left, partial = size - 16 - 24 * count, b""
    while len(names) < count and left > 0 and len(partial) <= _MAX_PATH:
        piece = f.read(min(left, 1 << 16))
        if not piece:
            break
        left -= len(piece)
        *whole, partial = (partial + piece).split(b"\0")
        names += whole
    names.append(partial)
    return sorted((lo, hi, name) for (lo, hi, _off), name in zip(ranges, names))


class _Memory:
    """The process's memory as the core stores it (PT_LOAD data only), read through one open file."""

    def __init__(self, core: ElfCore, f: BinaryIO) -> None:
        self.f = f
        stored = sorted((ld.vaddr, ld.filesz, ld.offset) for ld in core.loads if ld.filesz)
        self.starts = [s[0] for s in stored]
        self.stored = stored

    def read(self, address: int, length: int) -> Optional[bytes]:
        i = bisect.bisect_right(self.starts, address) - 1
        if i < 0:
            return None
        vaddr, filesz, offset = self.stored[i]
        if address + length > vaddr + filesz:
            length = vaddr + filesz - address  # a read that runs past stored memory returns what is there
        if length <= 0:
            return None
        self.f.seek(offset + address - vaddr)
        return self.f.read(length)
