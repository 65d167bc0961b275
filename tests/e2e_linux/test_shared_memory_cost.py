"""The holes of shared memory (MAP_SHARED|MAP_ANONYMOUS, memfd, SysV shm, tmpfs files) are found with
SEEK_DATA/SEEK_HOLE on the object, and SEEK_HOLE walks the object's pages from the data to the next
hole. Asked again for every 1 MiB chunk of one run of data, that walk made a shared segment's copy
quadratic: a 1 GiB segment kept its process stopped 7-8 s (0.5 s now; a private one 0.4-0.7 s), 2 GiB
~28 s. The count of the dump's lseek(SEEK_HOLE) calls, as the kernel sees them (strace), must follow the
runs of data, not the chunks; and the core must still hold the segment's bytes (readelf's offsets)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from linuxrig import have

if not sys.platform.startswith("linux"):
    pytest.skip("Linux only", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20

SEGMENT = r"""
import ctypes, mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for at in range(0, n, 4096):
    m[at : at + 8] = b"SHMPAGE!"
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
sys.stdin.read()
"""

DUMPER = "import sys, dumplib\ndumplib.create_dump(int(sys.argv[1]), sys.argv[2], 'full', sidecar=False, min_free=0)\n"


def test_a_shared_segments_holes_are_asked_once_per_run_of_data_not_once_per_chunk(tmp_path):
    if not have("strace"):
        pytest.fail("strace is not installed (apt-get install strace; .ci/run installs it)")
    size_mib = 128
    target = subprocess.Popen([sys.executable, "-c", SEGMENT, str(size_mib)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        address = int(target.stdout.readline())  # type: ignore[union-attr]
        core, log = tmp_path / "shm.core", tmp_path / "strace.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=lseek", "-o", str(log), sys.executable, "-c", DUMPER,
                        str(target.pid), str(core)], check=True, env=env, timeout=300)
        holes = [ln for ln in log.read_text().splitlines() if "SEEK_HOLE" in ln]
        # One run of data: asked at the estimate, the layout and the copy, a few times each; 128 when
        # asked per chunk.
        assert 0 < len(holes) <= 16, f"{len(holes)} SEEK_HOLE calls for one {size_mib} MiB run of data"
        # The segment's bytes are in the core, where its program header says (readelf, not our reader).
        out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
        load = next(ln.split() for ln in out.splitlines()
                    if ln.split()[:1] == ["LOAD"] and int(ln.split()[2], 16) == address)
        offset, filesz = int(load[1], 16), int(load[4], 16)
        assert filesz == size_mib * MIB, load
        with open(core, "rb") as f:
            for page in (0, size_mib * 256 // 2, size_mib * 256 - 1):
                f.seek(offset + page * 4096)
                assert f.read(8) == b"SHMPAGE!", page
    finally:
        target.kill()
        target.wait()
