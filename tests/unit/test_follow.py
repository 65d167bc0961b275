"""The sidecar's hasher: right bytes, idle priority while the target is stopped, full speed after.

The scheduling policy is read back from the kernel (/proc/self/task/TID/stat, field 41), never
from the hasher's own bookkeeping.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from typing import Optional

import pytest

from dumplib._hashing import FollowingHasher
from dumplib._switch import current

HOST = current().host()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import require  # noqa: E402

SCHED_OTHER, SCHED_IDLE = 0, 5
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling policies")


def policy_of(tid: int) -> Optional[int]:
    """The kernel's scheduling policy of thread *tid* of this process (None: it has just ended, as
    the idle hasher does when a normal-priority thread takes over)."""
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[38])


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
    hasher = FollowingHasher(str(path), HOST)
    write_slowly(path, data)
    assert hasher.result(len(data)) == hashlib.sha256(data).hexdigest()


SMALL_HASH = r"""
import hashlib, os, sys
from dumplib._hashing import FollowingHasher
from dumplib._switch import current
HOST = current().host()

def peak_kib():  # this process's own peak (getrusage's maxrss can be the forking parent's, kept over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

path, data = sys.argv[1], os.urandom(100 << 10)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak starts again from what is resident now
before = peak_kib()
hasher = FollowingHasher(path, HOST)
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
    hasher = FollowingHasher(str(path), HOST)
    write_slowly(path, b"x" * 1000, pieces=1)
    with pytest.raises(OSError, match="hashed 1000 of 2000"):
        hasher.result(2000)


def test_idle_while_stopped_normal_once_released(tmp_path):
    path = tmp_path / "dump"
    path.write_bytes(b"")
    hasher = FollowingHasher(str(path), HOST)
    deadline = time.monotonic() + 10
    while not hasher_tids() and time.monotonic() < deadline:
        time.sleep(0.01)
    [tid] = hasher_tids()
    assert policy_of(tid) == SCHED_IDLE
    hasher.released()
    assert [policy_of(t) for t in hasher_tids()] == [SCHED_OTHER]
    assert hasher.result(0) == hashlib.sha256(b"").hexdigest()


HANDOVER = r"""
import hashlib, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
from dumplib._hashing import FollowingHasher
from test_follow import hasher_tids, policy_of, write_slowly
from pathlib import Path
path = Path(sys.argv[2])
from dumplib._switch import current
HOST = current().host()  # the platform's modules, loaded while this interpreter's own files can still be read
os.setgid(65534); os.setuid(65534)
data = os.urandom(5 << 20)
hasher = FollowingHasher(str(path), HOST)
writer = threading.Thread(target=write_slowly, args=(path, data, 10, 0.05))
writer.start()
deadline = time.monotonic() + 10  # a loaded machine may take a while to start the hasher thread
while not hasher_tids() and time.monotonic() < deadline:
    time.sleep(0.01)
before = [p for p in map(policy_of, hasher_tids()) if p is not None]
hasher.released()  # an unprivileged thread cannot leave SCHED_IDLE: a new thread takes over
deadline = time.monotonic() + 20  # the idle thread leaves at its next block, when it gets a CPU
while 5 in [policy_of(t) for t in hasher_tids() if t] and time.monotonic() < deadline:
    time.sleep(0.05)
after = [p for p in map(policy_of, hasher_tids()) if p is not None]
writer.join()
ok = hasher.result(len(data)) == hashlib.sha256(data).hexdigest()
print(before, after, ok)
"""


def test_unprivileged_hand_over_to_a_normal_thread():
    require(os.geteuid() == 0, "switching to uid 65534 needs root")
    room = Path(tempfile.mkdtemp(prefix="dumplib-follow-", dir="/tmp"))  # pytest's tmp_path is root-only
    try:
        room.chmod(0o777)
        done = subprocess.run([sys.executable, "-c", HANDOVER, str(Path(__file__).parent), str(room / "dump")],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    finally:
        shutil.rmtree(room)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[5]", "[0]", "True"], done.stdout


def _sha256sum(path: Path) -> str:
    """coreutils' sha256sum: a reader independent of the hasher under test."""
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


@pytest.mark.parametrize("size", [0, 1, 100 << 10, (1 << 20) + 4097])
def test_the_built_in_and_the_openssl_sha256_agree_with_sha256sum(tmp_path, size):
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
        assert h.hexdigest() == _sha256sum(path)


def test_a_small_dump_is_hashed_by_the_built_in_sha256_while_it_is_written(tmp_path):
    data = os.urandom(300 << 10) + b"tail"
    path = tmp_path / "dump"
    writer = threading.Thread(target=write_slowly, args=(path, data))
    hasher = FollowingHasher(str(path), HOST, expected=len(data))
    writer.start()
    writer.join()
    assert "openssl" not in type(hasher._sha).__name__.lower()
    assert hasher.result(len(data)) == _sha256sum(path)


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
        hasher = FollowingHasher(str(path), HOST, idle=False)
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
