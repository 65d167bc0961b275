"""Our minidump reader against files built byte by byte here (real dumps are covered under Wine)."""
import struct

import pytest

from dumplib import InvalidDumpFile
from dumplib.formats import minidump as md


def build(*, pid=1234, comment="hello", memory=b"MARKER-BYTES", base=0x10000, with_threads=True, flags=0x2):
    """A minimal valid minidump: ThreadList, ModuleList, MiscInfo, CommentW, Memory64List."""
    streams = []
    body = bytearray()
    offset = 32 + 12 * 5  # header + directory

    def add(stype, data):
        nonlocal offset
        streams.append((stype, len(data), offset))
        body.extend(data)
        offset += len(data)

    threads = struct.pack("<I", 1) + struct.pack("<IIIIQQIIII", 77, 0, 0, 0, 0, base, 16, 0, 0, 0)
    add(md.THREAD_LIST, threads if with_threads else struct.pack("<I", 0))
    name = "C:\\app\\app.exe".encode("utf-16-le")
    name_rva = offset + 4 + 108
    modules = struct.pack("<I", 1) + struct.pack("<QIIII52s8s8sQQ", 0x400000, 0x1000, 0, 0, name_rva, b"", b"", b"", 0, 0)
    modules += struct.pack("<I", len(name)) + name
    add(md.MODULE_LIST, modules)
    add(md.MISC_INFO, struct.pack("<III", 24, 1, pid) + b"\0" * 12)
    add(md.COMMENT_W, (comment + "\0").encode("utf-16-le"))
    mem_rva = offset + 16 + 16
    add(md.MEMORY64_LIST, struct.pack("<QQ", 1, mem_rva) + struct.pack("<QQ", base, len(memory)))
    body.extend(memory)
    header = struct.pack("<4sIIIIIQ", b"MDMP", 0xA793, len(streams), 32, 0, 0, flags)
    directory = b"".join(struct.pack("<III", *s) for s in streams)
    return header + directory + bytes(body)


def test_reads_threads_modules_pid_comment_memory(tmp_path):
    path = tmp_path / "a.dmp"
    path.write_bytes(build())
    d = md.read_minidump(str(path))
    assert d.complete, d.problems
    assert [t.tid for t in d.threads] == [77]
    assert [m.name for m in d.modules] == ["app.exe"] and d.modules[0].path == "C:\\app\\app.exe"
    assert d.pid == 1234 and d.comment == "hello" and d.flags == 0x2
    assert d.read_memory(0x10000, 6) == b"MARKER"
    assert d.read_memory(0x10000 + 6, 6) == b"-BYTES"
    assert d.read_memory(0x20000, 4) is None
    assert "Memory64List" in d.stream_names()


def test_truncated_memory_is_reported_not_hidden(tmp_path):
    path = tmp_path / "t.dmp"
    path.write_bytes(build()[:-5])
    d = md.read_minidump(str(path))
    assert not d.complete
    assert any("truncated" in p for p in d.problems)


@pytest.mark.parametrize("content", [b"", b"MDM", b"ELF\x7f" + b"\0" * 60, b"MDMP" + b"\xff" * 28])
def test_garbage_raises_invalid_dump_file(tmp_path, content):
    path = tmp_path / "g.dmp"
    path.write_bytes(content)
    with pytest.raises(InvalidDumpFile) as info:
        md.read_minidump(str(path))
    assert info.value.path == str(path)


def test_directory_past_end_is_invalid(tmp_path):
    data = bytearray(build())
    struct.pack_into("<I", data, 12, 10_000_000)  # StreamDirectoryRva far past the end
    path = tmp_path / "d.dmp"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDumpFile) as info:
        md.read_minidump(str(path))
    assert "truncated" in str(info.value)


def test_holds_reports_captured_addresses(tmp_path):
    path = tmp_path / "h.dmp"
    path.write_bytes(build(memory=b"x" * 32, base=0x5000))
    d = md.read_minidump(str(path))
    assert d.holds(0x5000) and d.holds(0x501F)
    assert not d.holds(0x4FFF) and not d.holds(0x5020)
