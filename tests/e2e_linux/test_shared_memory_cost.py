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


FILE_SEGMENT = r"""
import ctypes, mmap, os, sys
path, n = sys.argv[1], int(sys.argv[2]) << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.ftruncate(fd, n)
m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED)
for at in range(0, n, 4096):
    m[at : at + 8] = b"SHMPAGE!"
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
sys.stdin.read()
"""

PUNCHING_DUMPER = r"""
import ctypes, os, sys
import dumplib
from dumplib._linux.core import memory
pid, out, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real, calls = memory.object_runs, []
def punching(fd, lo, hi, known=None):
    # The copy's second chunk: another process sharing the object punches out all but its first MiB.
    if known is not None:
        calls.append(lo)
        if len(calls) == 2:
            f = os.open(path, os.O_RDWR)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
            assert libc.fallocate(f, 3, 1 << 20, os.fstat(f).st_size - (1 << 20)) == 0  # PUNCH_HOLE|KEEP_SIZE
            os.close(f)
    return real(fd, lo, hi, known)
memory.object_runs = punching
dumplib.create_dump(pid, out, "full", sidecar=False, min_free=0)
print(len(calls))
"""


def test_a_hole_punched_in_shared_memory_during_the_copy_is_not_allocated_again_by_reading_it(tmp_path):
    # Reading a hole of shared memory through /proc/PID/mem allocates its pages in the object (the
    # target's memory, charged to its cgroup). The run of data found before the punch must not be
    # read through: SEEK_DATA at each chunk finds the hole. The kernel's own count of the object's
    # blocks says what was allocated.
    seg = Path("/dev/shm") / f"dumplib-test-{os.getpid()}-punch"
    size_mib = 64
    target = subprocess.Popen([sys.executable, "-c", FILE_SEGMENT, str(seg), str(size_mib)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        int(target.stdout.readline())  # type: ignore[union-attr]
        assert seg.stat().st_blocks * 512 >= size_mib * MIB
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
        done = subprocess.run([sys.executable, "-c", PUNCHING_DUMPER, str(target.pid), str(tmp_path / "p.core"),
                               str(seg)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert int(done.stdout.split()[-1]) >= 2, done.stdout  # the punch happened during the copy
        allocated = seg.stat().st_blocks * 512
        assert allocated <= 3 * MIB, f"{allocated >> 20} MiB of the punched segment allocated again by the dump"
    finally:
        target.kill()
        target.wait()
        seg.unlink(missing_ok=True)
