"""Hand-built ELF cores for reader tests, packed from the ELF and Linux struct layouts (not from dumplib's
writer, so the reader is checked against the format, not against itself)."""
from __future__ import annotations

import struct
from typing import Iterable, List, Sequence, Tuple

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
PT_LOAD, PT_NOTE, PN_XNUM = 1, 4, 0xFFFF
NT_PRSTATUS, NT_PRPSINFO, NT_FILE = 1, 3, 0x46494C45


def ident(elf_class: int = 2, data: int = 1) -> bytes:
    return b"\x7fELF" + bytes([elf_class, data, 1, 0]) + bytes(8)


def ehdr(phoff: int, phnum: int, *, machine: int = 62, etype: int = 4, shoff: int = 0, shnum: int = 0) -> bytes:
    return EHDR.pack(ident(), etype, machine, 1, 0, phoff, shoff, 0, 64, 56, phnum, 64 if shnum else 0, shnum, 0)


def note(owner: bytes, ntype: int, desc: bytes, *, namesz: int = -1, descsz: int = -1) -> bytes:
    name = owner + b"\0" if owner else b""
    head = struct.pack("<III", len(name) if namesz < 0 else namesz, len(desc) if descsz < 0 else descsz, ntype)
    out = head + name + b"\0" * (-len(name) % 4) + desc
    return out + b"\0" * (-len(out) % 4)


def prstatus(tid: int) -> bytes:
    desc = bytearray(336)  # struct elf_prstatus on x86-64; pr_pid at 32
    struct.pack_into("<i", desc, 32, tid)
    return note(b"CORE", NT_PRSTATUS, bytes(desc))


def prpsinfo(pid: int, fname: bytes, psargs: bytes) -> bytes:
    desc = bytearray(136)  # struct elf_prpsinfo on x86-64: pr_pid at 24, pr_fname[16] at 40, pr_psargs[80] at 56
    struct.pack_into("<i", desc, 24, pid)
    desc[40 : 40 + len(fname[:15])] = fname[:15]
    desc[56 : 56 + len(psargs[:79])] = psargs[:79]
    return note(b"CORE", NT_PRPSINFO, bytes(desc))


def nt_file(entries: Sequence[Tuple[int, int, bytes]], *, count: int = -1) -> bytes:
    n = len(entries) if count < 0 else count
    desc = struct.pack("<QQ", n, 4096) + b"".join(struct.pack("<QQQ", s, e, 0) for s, e, _ in entries)
    return note(b"CORE", NT_FILE, desc + b"".join(p + b"\0" for *_, p in entries))


def core(notes: Iterable[bytes], loads: Sequence[Tuple[int, int, int]] = (), *, machine: int = 62) -> bytes:
    """A whole core: header, PT_NOTE then PT_LOADs (vaddr, filesz, memsz) whose bytes follow the notes."""
    body = b"".join(notes)
    phnum = 1 + len(loads)
    notes_at = 64 + 56 * phnum
    cursor = notes_at + len(body)
    phdrs: List[bytes] = [PHDR.pack(PT_NOTE, 0, notes_at, 0, 0, len(body), 0, 4)]
    for vaddr, filesz, memsz in loads:
        phdrs.append(PHDR.pack(PT_LOAD, 4, cursor, vaddr, 0, filesz, memsz, 4096))
        cursor += filesz
    data = b"".join(bytes([0x41 + i % 26]) * filesz for i, (_, filesz, _) in enumerate(loads))
    return ehdr(64, phnum, machine=machine) + b"".join(phdrs) + body + data
