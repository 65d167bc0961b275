"""The sidecar's hasher: right bytes; nothing run while the target is stopped (it waits in the kernel
until released), full speed after.

What the hashing thread does is read back from the kernel (/proc/self/task/TID: its wake-ups and its
system call), never from the hasher's own bookkeeping.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dumplib._hashing import FollowingHasher
from linuxrig import sha256sum, thread_facts

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc/self/task")

FUTEX = 202  # x86-64


def hasher_tids() -> list:
    return [t.native_id for t in threading.enumerate() if t.name == "dumplib-sha256" and t.native_id]


def write_slowly(path: Path, data: bytes, pieces: int = 8, pause: float = 0.02) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            os.write(fd, data[i : i + step])
            time.sleep(pause)
    finally:
        os.close(fd)


def test_hashes_exactly_what_the_writer_wrote(tmp_path):
    data = os.urandom(40 << 20) + b"tail" * 1001  # more than one block, not a multiple of it
    path = tmp_path / "dump"
    hasher = FollowingHasher(str(path))
    write_slowly(path, data)
    assert hasher.result(len(data)) == hashlib.sha256(data).hexdigest()


SMALL_HASH = r"""
import hashlib, os, sys
from dumplib._hashing import FollowingHasher

def peak_kib():  # this process's own peak (getrusage's maxrss can be the forking parent's, kept over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

path, data = sys.argv[1], os.urandom(100 << 10)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts again from what is resident now
before = peak_kib()
hasher = FollowingHasher(path)
with open(path, "xb") as f:
    f.write(data)
assert hasher.result(len(data)) == hashlib.sha256(data).hexdigest()
print(peak_kib() - before)
"""


def test_a_small_file_costs_the_hasher_no_more_memory_than_it_holds(tmp_path):
    # The kernel's peak resident size (VmHWM) of a fresh process: a block buffer filled (zeroed) whole for a
    # 100 KiB dump would add 32 MiB of page faults, more CPU than the rest of a small dump.
    done = subprocess.run([sys.executable, "-c", SMALL_HASH, str(tmp_path / "dump")], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 8 << 10, f"peak RSS grew by {done.stdout} KiB"


def test_a_short_file_is_an_error_not_a_wrong_hash(tmp_path):
    path = tmp_path / "dump"
    hasher = FollowingHasher(str(path))
    write_slowly(path, b"x" * 1000, pieces=1)
    with pytest.raises(OSError, match="hashed 1000 of 2000"):
        hasher.result(2000)


def test_idle_it_reads_nothing_and_never_wakes_until_released(tmp_path):
    """Before released() the thread waits in the kernel (futex) without waking (its voluntary context
    switches do not change over 0.3 s) and has read nothing, though the file holds data: it never takes
    the GIL while the target is stopped. Released, it hashes what is there before result() is asked."""
    data = os.urandom(3 << 20)
    path = tmp_path / "dump"
    path.write_bytes(data)
    hasher = FollowingHasher(str(path))
    deadline = time.monotonic() + 10
    while not hasher_tids() and time.monotonic() < deadline:
        time.sleep(0.01)
    [tid] = hasher_tids()
    time.sleep(0.05)  # into its wait
    first = thread_facts(tid)
    samples = []
    for _ in range(30):
        time.sleep(0.01)
        samples.append(thread_facts(tid))
    assert first[1] == FUTEX and set(samples) == {first}, (first, samples)
    assert hasher._pos == 0 and hasher.idle
    hasher.released()
    deadline = time.monotonic() + 30
    while hasher._pos < len(data) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hasher._pos == len(data), "released, the hasher did not hash what the file held"
    assert hasher.result(len(data)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 100 << 10, (1 << 20) + 4097])
def test_the_built_in_and_the_openssl_sha256_agree_withsha256sum(tmp_path, size):
    from dumplib._hashing import SMALL_HASH, new_sha256

    data = os.urandom(size)
    path = tmp_path / "dump"
    path.write_bytes(data)
    small, large = new_sha256(SMALL_HASH), new_sha256(SMALL_HASH + 1)  # each side of the bound
    unknown = new_sha256(None)
    # Which implementation: the built-in for a small input (no OpenSSL to load), hashlib's otherwise.
    assert type(small).__module__ != "_hashlib" and "openssl" not in type(small).__name__.lower()
    assert type(large).__name__ == type(unknown).__name__ == type(hashlib.sha256()).__name__
    for h in (small, large, unknown):
        h.update(data)
        assert h.hexdigest() == sha256sum(path)


def test_a_small_dump_is_hashed_by_the_built_in_sha256_while_it_is_written(tmp_path):
    data = os.urandom(300 << 10) + b"tail"
    path = tmp_path / "dump"
    writer = threading.Thread(target=write_slowly, args=(path, data))
    hasher = FollowingHasher(str(path), expected=len(data))
    writer.start()
    writer.join()
    assert "openssl" not in type(hasher._sha).__name__.lower()
    assert hasher.result(len(data)) == sha256sum(path)


def test_a_file_sized_before_it_is_filled_is_hashed_no_further_than_its_published_frontier(tmp_path):
    """The core writer's mapped output (core/memory.py FileSink.prepare) has its final size before
    any data: the hasher must wait at the frontier the writer publishes, not hash the zeros ahead."""
    from dumplib import _hashing

    data = os.urandom(24 << 20)
    path = tmp_path / "dump"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    _hashing.frontiers[key] = 0  # published before the file has a size, as the writer does
    try:
        os.ftruncate(fd, len(data))  # all zeros, and all of it "there" by its size
        hasher = FollowingHasher(str(path), idle=False)
        step = 4 << 20
        for at in range(0, len(data), step):
            # the hasher had time to run ahead into the zeros, were it to ignore the frontier
            time.sleep(0.05)
            os.pwrite(fd, data[at : at + step], at)
            _hashing.frontiers[key] = at + step
        assert hasher.result(len(data)) == hashlib.sha256(data).hexdigest()
    finally:
        _hashing.frontiers.pop(key, None)
        os.close(fd)
