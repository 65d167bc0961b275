"""A dump's output whose file system stops answering (#16: every wait bounded): a real FUSE mount
(bindfs over a directory of the test's) whose daemon the test stops with SIGSTOP in the middle of a
dump, so that every request to it waits, as an NFS server gone or a hung FUSE daemon makes them.

Each write to the output is given up on after WRITE_STALL_SECONDS (made 2 s here): the dump fails with
DumpFailed "output-stalled", and what dumplib held for it is let go at once, whatever the mount does
later: the target (stopped for the copy, if it was), a snapshot's clone, the memory the copy was
staged in. Independent evidence: the target's state and tracer (/proc), its children (the clone),
this process's anonymous mappings (/proc/self/maps), the directory behind the mount once the daemon
runs again (the partial file removed), and the daemon's own state.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

import dumplib
from linuxrig import assert_running_untraced
from linuxrig import state as _state

pytestmark = pytest.mark.linux

MIB = 1 << 20
#: The test's own bound on a dump that should give up within seconds: past it, the daemon is let go
#: (so the test ends) and the test fails.
HANG_SECONDS = 90.0

#: A target of argv[1] MiB of pages that differ (so that a compressed core is large too).
TARGET = r"""
import mmap, os, sys
m = mmap.mmap(-1, int(sys.argv[1]) << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, len(m), 4096):
    m[at : at + 16] = os.urandom(16)
print("ready", flush=True)
sys.stdin.read()
"""


class Mount:
    def __init__(self, backing: Path, path: Path, daemon: int) -> None:
        self.backing, self.path, self.daemon = backing, path, daemon

    def stall(self) -> None:
        os.kill(self.daemon, signal.SIGSTOP)

    def answer(self) -> None:
        os.kill(self.daemon, signal.SIGCONT)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    if shutil.which("bindfs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("bindfs is not installed (.ci/run installs it)")
        pytest.skip("bindfs is not installed")
    backing, path = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    path.mkdir()
    subprocess.run(["bindfs", str(backing), str(path)], check=True, timeout=60)
    try:
        daemons = [int(p) for p in subprocess.run(["pgrep", "-x", "bindfs"], capture_output=True, text=True).stdout.split()]
        daemon = next(p for p in daemons if str(path) in _cmdline(p))  # others' bindfs may come and go
        yield Mount(backing, path, daemon)
    finally:
        with contextlib.suppress(Exception):
            os.kill(daemon, signal.SIGCONT)
        subprocess.run(["umount", "-l", str(path)], timeout=60)


@pytest.fixture
def stall_bound(monkeypatch) -> float:  # type: ignore[no-untyped-def]
    from dumplib import _bounded

    monkeypatch.setattr(_bounded, "WRITE_STALL_SECONDS", 2.0)
    return 2.0


@contextlib.contextmanager
def target(mib: int) -> Iterator["subprocess.Popen[str]"]:
    child = subprocess.Popen([sys.executable, "-c", TARGET, str(mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield child
    finally:
        child.kill()
        child.wait()


@contextlib.contextmanager
def hang_guard(mount: Mount) -> Iterator[threading.Event]:
    """The test's own bound on the block: past HANG_SECONDS the mount is let go (so the block ends) and
    the event yielded is set, for the test to fail on."""
    hung = threading.Event()
    done = threading.Event()

    def guard() -> None:
        if not done.wait(HANG_SECONDS):
            hung.set()
            mount.answer()

    threading.Thread(target=guard, daemon=True).start()
    try:
        yield hung
    finally:
        done.set()


def dump_with_stall(mount: Mount, fn: Callable[[], object]) -> Dict[str, object]:
    """fn() (a dump that stalls the mount), bounded by the test: {"error": DumpFailed, "hung": bool}."""
    with hang_guard(mount) as hung:
        with pytest.raises(dumplib.DumpFailed) as caught:
            fn()
    return {"error": caught.value, "hung": hung.is_set()}


def stalled_in_the_stop(mount: Mount, child: "subprocess.Popen[str]", name: str) -> Dict[str, object]:
    """A full dump of *child* to *name* on the mount, with no max_pause (only the write's bound can let
    the target go), the mount stalled at the first progress: data copied, the target stopped."""
    seen: List[str] = []

    def progress(written: int, elapsed: float) -> None:
        if written and not seen:
            seen.append(_state(child.pid))
            mount.stall()

    got = dump_with_stall(mount, lambda: dumplib.create_dump(child.pid, mount.path / name, "full",
                                                             max_pause=None, progress=progress))
    assert seen == ["t"], seen
    return got


def children(pid: int) -> List[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gone_once_answered(mount: Mount) -> List[str]:
    """What is left behind the mount once the daemon answers again (waited for, bounded): the partial
    file's removal, given up on while the mount stalled, goes on in the background."""
    mount.answer()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = os.listdir(mount.backing)
        if not left:
            return []
        time.sleep(0.1)
    return os.listdir(mount.backing)


def assert_stalled(got: Dict[str, object], pid: int) -> None:
    assert not got["hung"], "the dump waited on the stalled mount past the test's bound"
    exc = got["error"]
    assert getattr(exc, "reason", None) == "output-stalled", exc
    assert "got no answer within 2 s" in str(exc) and "could not be removed yet" in str(exc), exc
    assert_running_untraced(pid)


def test_a_write_stalled_while_the_target_is_stopped_lets_it_go(mount, stall_bound):
    """A 40 MiB core is written during the stop; the mount stalls at the first progress (data copied,
    the target stopped). With no max_pause, only the write's bound can let the target go."""
    with target(40) as child:
        assert_stalled(stalled_in_the_stop(mount, child, "a.core"), child.pid)
        assert gone_once_answered(mount) == []


def test_a_snapshots_clone_is_dropped_when_its_write_stalls(mount, stall_bound, monkeypatch):
    """The copy from the clone stalls at its third write (the target runs): the clone is killed and
    reaped, not held while the mount stalls (it would hold memory for as long)."""
    from dumplib._linux.core.memory import FileSink

    pwrite_all = FileSink._pwrite_all
    clones: List[List[int]] = []
    with target(96) as child:
        writes = []

        def stalling(self, view, offset):  # type: ignore[no-untyped-def]
            writes.append(offset)
            if len(writes) == 3:
                clones.append(children(child.pid))
                mount.stall()
            return pwrite_all(self, view, offset)

        monkeypatch.setattr(FileSink, "_pwrite_all", stalling)
        got = dump_with_stall(mount, lambda: dumplib.create_dump(child.pid, mount.path / "s.core", "full",
                                                                 snapshot=True))
        assert len(clones) == 1 and len(clones[0]) == 1, f"no one clone seen while it was read: {clones}"
        assert_stalled(got, child.pid)
        assert "its snapshot dropped" in str(got["error"])
        assert children(child.pid) == [], "the snapshot's clone outlived the dump"
        assert not Path(f"/proc/{clones[0][0]}").exists()
        assert gone_once_answered(mount) == []


def _anonymous_64() -> Dict[int, int]:
    """This process's anonymous mappings of 64 MiB or more: start -> Rss in bytes (/proc/self/smaps)."""
    found: Dict[int, int] = {}
    start: Optional[int] = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        f = line.split()
        if "-" in f[0] and not f[0].endswith(":"):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            start = lo if len(f) == 5 and hi - lo >= 64 * MIB else None
        elif f[0] == "Rss:" and start is not None:
            found[start] = int(f[1]) * 1024
    return found


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_staged_copys_write_stalled_after_the_stop_gives_its_memory_back(mount, stall_bound, monkeypatch, compress):
    """A 96 MiB core on FUSE is staged in memory (core/staged.py) and written once the target runs;
    the mount stalls at the second chunk written: the dump fails, and the staged memory (an anonymous
    mapping of 64 MiB or more in this process) is given back: unmapped, or, while the stuck write still
    holds a view of it, emptied (its Rss under 4 MiB)."""
    from dumplib._linux.core.staged import StagedMemory

    chunks = StagedMemory.chunks
    states: List[str] = []

    with target(96) as child:
        def stalling(self, lo, hi):  # type: ignore[no-untyped-def]
            for n, piece in enumerate(chunks(self, lo, hi)):
                if n == 1 and not states:
                    states.append(_state(child.pid))
                    mount.stall()
                yield piece

        monkeypatch.setattr(StagedMemory, "chunks", stalling)
        before = _anonymous_64()
        name = "z.core.zst" if compress else "z.core"
        got = dump_with_stall(mount, lambda: dumplib.create_dump(child.pid, mount.path / name, "full",
                                                                 compress=compress, max_pause=None))
        assert len(states) == 1 and states[0] in "RS", f"not staged, or not stalled after the stop: {states}"
        assert_stalled(got, child.pid)
        held = {at: rss for at, rss in _anonymous_64().items() if at not in before and rss >= 4 * MIB}
        assert held == {}, f"the staged memory outlived the dump: {held}"
        assert gone_once_answered(mount) == []


#: Dumps argv[1] to its stdout (a pipe the test never reads), with WRITE_PATIENCE made 20 s so that the
#: order of the target's release and the wait for the stuck write shows whatever the load.
STDOUT_DUMPER = r"""
import sys
import dumplib
from dumplib import _bounded
_bounded.WRITE_PATIENCE = 20.0
try:
    dumplib.create_dump(int(sys.argv[1]), "-", "full", max_pause=None, sidecar=False)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_ctrl_c_while_a_write_is_stuck_lets_the_target_go_before_waiting_for_that_write():
    """A 40 MiB core sent to a stdout pipe nobody reads: the copy's write blocks in the kernel with the
    target stopped. A Ctrl-C then lets the target go at once; only after that does dumplib wait (up to
    WRITE_PATIENCE, 20 s here) for the stuck write before it goes on. The target's state is read from
    /proc; the dumper's end is its exit."""
    with target(40) as child:
        r, w = os.pipe()
        dumper = subprocess.Popen([sys.executable, "-c", STDOUT_DUMPER, str(child.pid)], stdout=w,
                                  stderr=subprocess.PIPE)
        os.close(w)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _state(child.pid) != "t":
                time.sleep(0.005)
            time.sleep(0.5)  # the pipe (64 KiB) is full long before: the copy's write waits in the kernel
            assert _state(child.pid) == "t", "the target was not stopped by the dump"
            dumper.send_signal(signal.SIGINT)
            while time.monotonic() < deadline and _state(child.pid) == "t":
                time.sleep(0.005)
            let_go = time.monotonic()
            assert dumper.poll() is None, "dumplib ended before the target was let go"
            dumper.wait(60)
            ended = time.monotonic()
        finally:
            os.close(r)
            if dumper.poll() is None:
                dumper.kill()
                dumper.wait()
        assert dumper.returncode == 130, dumper.stderr.read()  # type: ignore[union-attr]
        # Let go well before the 20 s wait for the stuck write ended.
        assert ended - let_go > 10, (let_go, ended)
        assert_running_untraced(child.pid)


def test_a_stalled_mount_does_not_hold_the_next_dump_of_the_same_process(mount, stall_bound, tmp_path):
    """One dump given up on as output-stalled leaves its temporary (and that temporary's lock) on the
    stalled mount; the next dump of this process, to a directory that answers, must not wait on it
    (each new temporary looks at the earlier ones: that look is bounded, and a file that got no answer
    is left out of later looks). Bounded by the test: past HANG_SECONDS the mount is let go and the test
    fails."""
    healthy = tmp_path / "healthy"
    healthy.mkdir()
    with target(40) as child:
        assert_stalled(stalled_in_the_stop(mount, child, "a.core"), child.pid)
        with hang_guard(mount) as hung:
            for n in range(2):  # the second: after the first left an unanswered look behind
                r = dumplib.create_dump(child.pid, healthy / f"next{n}.core", "mini")
                assert Path(r.path).exists()
        assert not hung.is_set(), "a dump to a directory that answers waited on the stalled mount"
        assert gone_once_answered(mount) == []


def test_the_disk_watchdogs_look_at_a_stalled_mount_is_bounded_too(mount, stall_bound, monkeypatch):
    """The disk's watchdog asks the output's file system for its free space while the copy goes on
    (statfs): on NFS, or FUSE with a write-back cache, that may be the first request to meet a server
    that is gone. The mount stalls in the progress callback, just before the watchdog's look of that
    same tick (made at every tick here): the dump gives up as output-stalled, the target let go."""
    from dumplib import space

    monkeypatch.setattr(space, "WATCH_EVERY", 1)
    with target(40) as child:
        assert_stalled(stalled_in_the_stop(mount, child, "w.core"), child.pid)
        assert gone_once_answered(mount) == []
