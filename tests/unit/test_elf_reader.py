"""The ELF core reader against hand-built cores: what it refuses, what it bounds, how it shows names,
and the notes writer's bytes for names that are not UTF-8."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

import elfcraft as ec
from dumplib.errors import InvalidDumpFile
from dumplib.formats import elfcore


def _read(tmp_path: Path, data: bytes) -> elfcore.ElfCore:
    path = tmp_path / "c.core"
    path.write_bytes(data)
    return elfcore.read_elfcore(str(path))


def _whole() -> bytes:
    return ec.core([ec.prstatus(41), ec.prpsinfo(41, b"prog", b"prog --flag"), ec.prstatus(42),
                    ec.nt_file([(0x1000, 0x2000, b"/usr/lib/a.so"), (0x3000, 0x4000, b"/usr/lib/b.so")])],
                   [(0x1000, 4096, 4096), (0x8000, 0, 4096)])


def test_a_whole_core_reads_back(tmp_path):
    core = _read(tmp_path, _whole())
    assert core.complete, core.problems
    assert (core.pid, core.threads, core.command) == (41, [41, 42], "prog --flag")
    assert core.files == ["/usr/lib/a.so", "/usr/lib/b.so"]
    assert [(ld.vaddr, ld.filesz, ld.memsz) for ld in core.loads] == [(0x1000, 4096, 4096), (0x8000, 0, 4096)]
    assert core.memory_bytes == 4096 and core.read_memory(0x1000, 3) == b"AAA"
    assert core.note_types() == [1, 3, 1, ec.NT_FILE] and core.notes[-1].owner == "CORE"


@pytest.mark.parametrize("offset, value, words", [
    (18, struct.pack("<H", 183), "64-bit little-endian ELF core for AArch64"),
    (18, struct.pack("<H", 3), "for i386"),
    (4, bytes([1]), "32-bit little-endian"),
    (5, bytes([2]), "64-bit big-endian"),
])
def test_another_class_byte_order_or_machine_is_named_not_misread(tmp_path, offset, value, words):
    data = bytearray(_whole())
    data[offset : offset + len(value)] = value
    if offset == 5:  # a big-endian file says its machine big-endian: keep it x86-64 to isolate the order
        data[18:20] = struct.pack(">H", 62)
    with pytest.raises(InvalidDumpFile) as err:
        _read(tmp_path, bytes(data))
    assert words in err.value.message and "x86-64 cores only" in err.value.message


def test_a_core_with_no_thread_and_no_process_record_is_incomplete(tmp_path):
    core = _read(tmp_path, ec.core([]))
    assert not core.complete and any("no thread" in p for p in core.problems)
    only_threads = _read(tmp_path, ec.core([ec.prstatus(77)]))
    assert only_threads.complete and only_threads.pid == 77  # as gdb names it: from the leader's PRSTATUS


def test_counts_are_not_trusted(tmp_path):
    lying = _read(tmp_path, ec.core([ec.prstatus(1), ec.nt_file([(0, 4096, b"/x")], count=2**60)]))
    assert any("claims 1152921504606846976 files" in p for p in lying.problems) and lying.files == []
    owner = _read(tmp_path, ec.core([ec.prstatus(1), ec.note(b"CORE", 1, b"", namesz=2**31)]))
    assert any("owner name" in p for p in owner.problems)
    long_desc = _read(tmp_path, ec.core([ec.prstatus(1), ec.note(b"CORE", 1, b"", descsz=2**31)]))
    assert any("runs past the end of the notes" in p for p in long_desc.problems)


def test_limits_stop_the_reader_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(elfcore, "MAX_NOTES", 3)
    many = _read(tmp_path, ec.core([ec.prstatus(t) for t in range(1, 6)]))
    assert many.threads == [1, 2, 3] and any("more than 3 notes" in p for p in many.problems)
    monkeypatch.setattr(elfcore, "MAX_PROGRAM_HEADERS", 2)
    loads = _read(tmp_path, ec.core([ec.prstatus(1)], [(0x1000 * i, 0, 4096) for i in range(1, 6)]))
    assert len(loads.loads) == 1 and any("claims 6 program headers" in p for p in loads.problems)


def test_notes_read_in_tiny_pieces_read_the_same(tmp_path, monkeypatch):
    # A 7-byte window splits every header, owner, descriptor and NT_FILE name across reads.
    monkeypatch.setattr(elfcore, "_CHUNK", 7)
    test_a_whole_core_reads_back(tmp_path)


def test_undecodable_and_control_bytes_in_names_are_escaped(tmp_path):
    core = _read(tmp_path, ec.core([
        ec.prstatus(5), ec.prpsinfo(5, b"n\xff", b"run \x1b]0;owned\x07 \xe2\x82"),
        ec.nt_file([(0, 4096, b"/tmp/\xff\xfe\n.so")]),
        ec.note(b"DUMPLIB", elfcore.NT_DUMPLIB_COMMENT, b"ok \x1b[2J\xc3"),
    ]))
    assert core.complete, core.problems
    assert core.command == "run \\x1b]0;owned\\x07 \\xe2\\x82"
    assert core.files == ["/tmp/\\xff\\xfe\\x0a.so"]
    assert core.comment == "ok \\x1b[2J\\xc3"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dumplib._linux imports on Linux only")
def test_the_note_writer_keeps_the_kernels_bytes():
    from dumplib._linux.core import notes
    from dumplib._linux.proc import maps
    from dumplib._linux.proc.pidfiles import parse_stat

    comm = "A€€€€".encode()[:15] + b"\xe2"
    stat = parse_stat(b"9 (x) S 1 2 3 0 0 0" + b" 0" * 20)
    assert stat is not None
    desc = notes.prpsinfo(9, stat, 0, 0, b"a\0b\xff\0", comm)
    assert desc[40:56].rstrip(b"\0") == comm and desc[56:63] == b"a b\xff\0\0\0"
    path = b"/tmp/map-\xff\xfe.bin".decode("utf-8", "surrogateescape")  # as smaps is decoded
    region = maps.Region(start=0x1000, end=0x2000, perms="r--p", offset=0, inode=7, path=path)
    table = notes.nt_file([region])
    assert table.endswith(b"/tmp/map-\xff\xfe.bin\0")


def test_an_owner_name_across_a_window_edge_is_read_whole(tmp_path, monkeypatch):
    # 28-byte notes from a window's start: the tenth has its header inside the window, its owner past it.
    monkeypatch.setattr(elfcore, "_CHUNK", 7)
    core = _read(tmp_path, ec.core([ec.note(b"LONG-OWNER-X", 99, b"") for _ in range(12)] + [ec.prstatus(3)]))
    assert [n.owner for n in core.notes] == ["LONG-OWNER-X"] * 12 + ["CORE"] and core.threads == [3]


def test_a_last_file_name_without_its_terminator_is_still_listed(tmp_path):
    table = ec.nt_file([(0, 4096, b"/a"), (4096, 8192, b"/b")])
    unterminated = ec.note(b"CORE", ec.NT_FILE, table[20:].rstrip(b"\0"))  # desc after the 20-byte head
    core = _read(tmp_path, ec.core([ec.prstatus(1), unterminated]))
    assert core.files == ["/a", "/b"]
