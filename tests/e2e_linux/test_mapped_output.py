"""A full dump large enough to be read straight into its mapped output file (core/memory.py
FileSink.prepare): the kernel's view of the file while the target is stopped shows it was sized before
the copy; gdb reads the target's bytes from the core; the kernel's SEEK_DATA says the zero pages are
holes; sha256sum agrees with the sidecar."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dumplib
from linuxrig import gdb

pytestmark = pytest.mark.linux

MIB = 1 << 20
PAGE = 4096
DATA, ZEROS = 48 * MIB, 48 * MIB  # then 16 MiB untouched, then one page of data

TARGET = r"""
import ctypes, mmap, os, sys
n = %d + %d + 16 * 1024 * 1024 + 4096
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for page in range(%d // 4096):
    mark = b"PAGE-%%010d-DATA-" %% page + b"\xa5" * 5
    m[page * 4096 : page * 4096 + len(mark)] = mark
for page in range(%d // 4096, (%d + %d) // 4096):
    m[page * 4096] = 1  # touched: a present page...
    m[page * 4096] = 0  # ...whose bytes are all zero
m[n - 4096 : n - 4096 + 9] = b"LAST-PAGE"
address = ctypes.addressof(ctypes.c_char.from_buffer(m))
print(address, n, flush=True)
sys.stdin.read()
""" % (DATA, ZEROS, DATA, DATA, DATA, ZEROS)


def _load_offset(core: Path, address: int) -> int:
    """The file offset of the PT_LOAD at *address*, as readelf reads the program headers."""
    out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and int(f[2], 16) == address:
            return int(f[1], 16)
    raise AssertionError(f"no PT_LOAD at {address:#x}:\n{out}")


def test_a_mapped_core_holds_the_targets_bytes_and_its_zero_pages_as_holes(outdir):
    child = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sizes = []

    def progress(written: int, elapsed: float) -> None:
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for p in outdir.iterdir():
            if p.name.startswith(".dumplib-") and not p.name.endswith(".json"):
                sizes.append((state, os.stat(p).st_size))

    try:
        address, n = map(int, child.stdout.readline().split())  # type: ignore[union-attr]
        r = dumplib.create_dump(child.pid, outdir / "m.core", "full", progress=progress, min_free=0)
    finally:
        child.kill()
        child.wait()
    core = Path(r.path)
    final = core.stat().st_size
    # While the target was stopped, the file already had (about) its final size: it was sized, and
    # the copy went into its pages, before the stop. Written with pwrite, it grows chunk by chunk.
    stopped = [size for state, size in sizes if state == "t"]
    assert stopped, sizes
    assert stopped[0] >= final * 0.9, (stopped[:3], final)

    # The bytes, as gdb reads them from the core.
    probes = [0, 1, DATA // PAGE // 2, DATA // PAGE - 1]
    out = gdb(sys.executable, str(core), *[f"x/s {address + p * PAGE}" for p in probes],
              f"x/s {address + n - PAGE}", f"x/8xb {address + DATA + 7 * PAGE}")
    for p in probes:
        assert f'"PAGE-{p:010d}-DATA-' in out, (p, out)
    assert '"LAST-PAGE"' in out, out
    zero_line = [line for line in out.splitlines() if line.startswith(f"{address + DATA + 7 * PAGE:#x}:")]
    assert zero_line and zero_line[0].split(":")[1].split() == ["0x00"] * 8, out

    # The zero pages: holes, as the kernel says; the data before them: data.
    off = _load_offset(core, address)
    fd = os.open(core, os.O_RDONLY)
    try:
        assert os.lseek(fd, off, os.SEEK_HOLE) >= off + DATA
        try:
            next_data = os.lseek(fd, off + DATA, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after it at all
            next_data = final
        assert next_data >= off + DATA + ZEROS, (next_data - off - DATA)
    finally:
        os.close(fd)

    sidecar = json.loads(Path(r.path + ".json").read_text())
    real = subprocess.run(["sha256sum", r.path], capture_output=True, text=True, check=True).stdout.split()[0]
    assert sidecar["sha256"] == real == r.sha256


ZEROED = r"""
import ctypes, mmap, sys
n = 256 << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, n, 4096):
    m[at] = 1  # touched: present pages (the estimate counts them)...
    m[at] = 0  # ...all zero (the core keeps them as holes)
m[n - 4096 : n - 4096 + 11] = b"ZEROED-LAST"
print(ctypes.addressof(ctypes.c_char.from_buffer(m)) + n - 4096, flush=True)
sys.stdin.read()
"""


def test_no_room_for_the_estimate_falls_back_to_writing_the_sparse_core_that_fits(tmp_path):
    """On a volume with less free space than the estimate, the reservation is refused (ext4 may have
    allocated part of it) and the core is written instead: all holes but a page, it fits."""
    from helpers import ext4_volume

    with ext4_volume(tmp_path / "vol", "400M", leave_free=160 << 20) as vol:
        child = subprocess.Popen([sys.executable, "-c", ZEROED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        try:
            last = int(child.stdout.readline())  # type: ignore[union-attr]
            est = dumplib.estimate(child.pid, "full")
            assert est.bytes > 256 << 20  # more than the volume has free: no reservation
            r = dumplib.create_dump(child.pid, vol / "z.core", "full", sidecar=False, space_check=False)
        finally:
            child.kill()
            child.wait()
        st = os.stat(r.path)
        assert st.st_blocks * 512 < 64 << 20, (st.st_size, st.st_blocks)  # sparse, as du sees it
        assert '"ZEROED-LAST"' in gdb(sys.executable, r.path, f"x/s {last}")
        assert sorted(p.name for p in vol.iterdir()) == ["filler", "lost+found", "z.core"]
