"""A small dump costs what its data costs: the buffers of the memory copier and of the sidecar's hasher
are sized to the dump, not to their largest block (zero-filling 4 MiB and 32 MiB of buffer cost a
small dump more CPU than the rest of its work). Read back as the kernel's peak resident size (VmHWM)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.linux

ROOT = Path(__file__).resolve().parents[2]

PEAK = r"""
import os, subprocess, sys
import dumplib, dumplib.api, dumplib._linux.backend, dumplib._hashing

def peak_kib():  # this process's own peak (getrusage's maxrss can be the forking parent's, kept over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

target = subprocess.Popen(["sleep", "60"])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak starts again from what is resident now
    before = peak_kib()
    result = dumplib.create_dump(target.pid, os.path.join(sys.argv[1], "small.core"), "mini")
    grown = peak_kib() - before
finally:
    target.kill()
print(grown, result.size, os.path.exists(result.path + ".json"))
"""


def test_a_small_dump_grows_the_dumper_by_little_more_than_its_size(tmp_path):
    done = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    grown_kib, size, sidecar = done.stdout.split()
    assert sidecar == "True"  # the hasher ran
    assert int(size) < 1 << 20
    # 2 MiB: a dump under 1 MiB, and room for the interpreter's own allocations; one copier buffer
    # of 4 MiB or one hasher block of 32 MiB, zero-filled, is well past it.
    assert int(grown_kib) < 2 << 10, f"peak RSS grew by {grown_kib} KiB for a {size}-byte dump"
