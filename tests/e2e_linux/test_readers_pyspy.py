"""A miniplus or full core of CPython is read by py-spy (`py-spy dump --core`), which names the running function.

py-spy finds the Python binary by a PT_LOAD with the executable flag at an NT_FILE mapping's start, and
reads an object's .data and .bss as one run of the file: cores that stored neither failed ("Failed to get
binary from coredump", then a read past the file's end).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dumplib
from dumplib.formats.elfcore import read_elfcore
from helpers import require
from linuxrig import have, run_target

pytestmark = pytest.mark.linux

PY_KNOWN = r"""
import json, os, sys, threading, time
def dumplib_known_function(n):
    while True:
        time.sleep(100)
threading.Thread(target=dumplib_known_function, args=(1,), daemon=True).start()
while not any(t.name.endswith("(dumplib_known_function)") for t in threading.enumerate()):
    time.sleep(0.01)
time.sleep(0.1)
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["miniplus", "full"])
def test_py_spy_reads_a_miniplus_or_full_core_of_cpython(outdir, kind):
    require(have("py-spy"), "py-spy is not installed (pip install py-spy, the test extra)")
    with run_target([sys.executable, "-c", PY_KNOWN]) as t:
        result = dumplib.create_dump(t.pid, outdir / "py.core", kind)
        t.assert_running_untraced()
    done = subprocess.run(["py-spy", "dump", "--core", result.path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Process {t.pid}" in done.stdout, done.stdout
    assert "dumplib_known_function" in done.stdout, done.stdout


def _writable_image_bytes(path: str) -> int:
    """Bytes of *path*'s writable PT_LOADs (its .data and .bss), page-rounded, as readelf reads the file."""
    out = subprocess.run(["readelf", "-W", "-l", path], capture_output=True, text=True, check=True).stdout
    total = 0
    for row in out.splitlines():
        p = row.split()
        if p and p[0] == "LOAD" and "W" in "".join(p[6:-1]):
            vaddr, memsz = int(p[2], 16), int(p[5], 16)
            total += (vaddr + memsz + 4095) // 4096 * 4096 - vaddr // 4096 * 4096
    return total


def test_a_mini_core_of_cpython_holds_its_objects_data_not_the_arenas_next_to_it(outdir):
    # The kernel merges an anonymous mapping made later into a library's .bss: mini takes the .bss only.
    require(have("readelf"), "readelf is not installed (binutils)")
    with run_target([sys.executable, "-c", PY_KNOWN]) as t:
        with open(f"/proc/{t.pid}/maps") as f:
            objects = {line.split(None, 5)[5].strip() for line in f if " r-xp " in line and "/" in line}
        result = dumplib.create_dump(t.pid, outdir / "mini.core", "mini")
    images = sum(_writable_image_bytes(p) for p in objects if os.path.exists(p))
    stored = sum(ld.filesz for ld in read_elfcore(result.path).loads)
    assert images > 0
    # Besides the objects' data: stacks, ELF header pages, TLS and link_map pages, well under 1 MiB here.
    assert stored < images + (1 << 20), (stored, images)


def test_miniplus_stores_each_objects_data_and_bss_whole_as_py_spy_reads_them(outdir):
    # py-spy reads an object's .data and .bss as one run of the core file (it ignores p_filesz): every PT_LOAD
    # over them must store all its bytes, untouched .bss pages too, as the kernel's cores do.
    require(have("readelf"), "readelf is not installed (binutils)")
    with run_target([sys.executable, "-c", PY_KNOWN]) as t:
        with open(f"/proc/{t.pid}/maps") as f:
            rows = [line.split() for line in f]
        result = dumplib.create_dump(t.pid, outdir / "miniplus.core", "miniplus")
    code = {r[5] for r in rows if len(r) == 6 and r[1] == "r-xp" and r[5].startswith("/")}
    base = {}
    for r in rows:
        if len(r) == 6 and r[5] in code and int(r[2], 16) == 0:
            base.setdefault(r[5], int(r[0].split("-")[0], 16))
    expected = {}  # start of each .bss mapping -> its size
    for path, at in base.items():
        out = subprocess.run(["readelf", "-W", "-l", path], capture_output=True, text=True, check=True).stdout
        if "DYN" not in out.split("Elf file type is", 1)[-1].split("\n", 1)[0]:
            at = 0  # a fixed-address executable
        for p in (row.split() for row in out.splitlines()):
            if p and p[0] == "LOAD" and "W" in "".join(p[6:-1]):
                vaddr, filesz, memsz = int(p[2], 16), int(p[4], 16), int(p[5], 16)
                data_end, end = -(-(at + vaddr + filesz) // 4096) * 4096, -(-(at + vaddr + memsz) // 4096) * 4096
                if end > data_end:
                    expected[data_end] = end - data_end
    assert len(expected) >= 2, expected  # libc's and libpython's at least
    out = subprocess.run(["readelf", "-W", "-l", result.path], capture_output=True, text=True, check=True).stdout
    loads = {int(p[2], 16): (int(p[4], 16), int(p[5], 16)) for p in (row.split() for row in out.splitlines())
             if p and p[0] == "LOAD"}
    for start, least in expected.items():
        assert start in loads, hex(start)
        filesz, memsz = loads[start]
        assert filesz == memsz >= least, (hex(start), filesz, memsz, least)
