"""A full dump whose output is not mapped (a file system off core/mapped.py's list, or ext4/xfs above its
writeback rule) but has memory to spare is staged (core/memory.py FileSink.stage): the copy reads the
target's memory into anonymous memory of ours, populated before the stop, and the file is written once
the target runs. What the kernel shows while the target is stopped (the file still empty, write-only;
an anonymous mapping of the estimate's size, all present), what gdb and the kernel's SEEK_DATA read
from the core, sha256sum against the sidecar; an estimate too low (the rest written straight to the
file, the sidecar's hasher held back from the gap); a read given up on (the staged memory given back
at once)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

import dumplib
from helpers import tmpfs
from linuxrig import assert_running_untraced, gdb, mapping_rss, mapping_vmflags, sha256sum, thread_facts
from linuxrig import state as _state
from test_mapped_output import (HEAP, PAGE, TARGET, _segments_end, assert_sidecar_agrees, assert_targets_pages,
                                assert_zero_pages_are_holes, heap_target, mmaplock_exe, output_seen, plan_then,
                                volume)

pytestmark = pytest.mark.linux

__all__ = ["mmaplock_exe"]  # a fixture, used by name

MIB = 1 << 20


def _anonymous_maps() -> Set[Tuple[int, int]]:
    """This process's anonymous mappings of 64 MiB or more, as (start, end)."""
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        f = line.split()
        if len(f) == 5:  # no path: anonymous
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if hi - lo >= 64 * MIB:
                found.add((lo, hi))
    return found


def staged_seen(directory: Path, seen: Dict[str, object]):  # type: ignore[no-untyped-def]
    """output_seen's progress callback, which also records, at the first call with data copied (the
    target stopped), the anonymous mappings of 64 MiB or more this process gained since it was made,
    with their Rss, and their VmFlags."""
    # With its Rss: an earlier test's mapping given back (Rss ~0) and unmapped meanwhile may leave the very
    # range the staged memory then takes (a CI run saw nothing "gained" so): filled since, it is gained.
    before = {m: mapping_rss(m[0]) for m in _anonymous_maps()}
    look = output_seen(directory, seen)

    def progress(written: int, elapsed: float) -> None:
        if written and "staged" not in seen:
            look(written, elapsed)
            gained = sorted(m for m in _anonymous_maps()
                            if m not in before or mapping_rss(m[0]) - before[m] >= 64 * MIB)
            seen["staged"] = [(hi - lo, mapping_rss(lo)) for lo, hi in gained]
            seen["vmflags"] = [mapping_vmflags(lo) for lo, hi in gained]
    return progress


def test_a_staged_core_holds_the_targets_bytes_and_its_zero_pages_as_holes(tmp_path):
    with volume("btrfs", tmp_path / "btrfs") as vol:
        child = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        seen: Dict[str, object] = {}
        try:
            address, n = map(int, child.stdout.readline().split())  # type: ignore[union-attr]
            estimate = dumplib.estimate(child.pid, "full").bytes
            before = _anonymous_maps()
            r = dumplib.create_dump(child.pid, vol / "s.core", "full", progress=staged_seen(vol, seen),
                                    space_check=False)
        finally:
            child.kill()
            child.wait()
        core = Path(r.path)
        final = core.stat().st_size
        # While the target was stopped: nothing in the file yet, not mapped, write-only; this process
        # held one anonymous mapping the size of the estimate, every page of it present (populated
        # before the stop).
        assert seen["size"] == 0 and not seen["mapped"] and seen["modes"] == [os.O_WRONLY], seen
        staged = seen["staged"]
        assert len(staged) == 1, staged  # type: ignore[arg-type]
        length, rss = staged[0]  # type: ignore[index]
        # (the kernel may have merged it with a neighbouring mapping of the same flags: an earlier
        # test's, held by a read given up on, so its Rss is weighed against the estimate)
        assert length >= estimate - PAGE and rss >= 0.9 * estimate, (staged, estimate)
        # Not in a child of ours ("dc", MADV_DONTFORK), nor in a core of dumplib itself ("dd",
        # MADV_DONTDUMP: a SIGQUIT or a crash of dumplib must not write the target's memory out again).
        assert {"dc", "dd"} <= seen["vmflags"][0], seen["vmflags"]  # type: ignore[index]
        assert final == _segments_end(core), (final, _segments_end(core))

        assert_targets_pages(core, address, n)
        assert_zero_pages_are_holes(core, address, final)
        assert_sidecar_agrees(r)
        assert not _anonymous_maps() - before, "the staged memory outlived the call"


GROWING = r"""
import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, n, 4096):
    m[at : at + 8] = b"HEAPPAGE"
print("ready", flush=True)
grown = []
for line in sys.stdin:
    g = mmap.mmap(-1, int(sys.argv[2]) << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for at in range(0, len(g), 4096):
        g[at : at + 8] = b"GROWPAGE"
    grown.append(g)
    print("grown", flush=True)
"""


def growing(mib: int, grow: int) -> "subprocess.Popen[str]":
    """A target of *mib* MiB of marked pages that maps *grow* MiB more at a line on stdin."""
    child = subprocess.Popen([sys.executable, "-c", GROWING, str(mib), str(grow)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
    return child


@pytest.mark.parametrize("slow", [False, True], ids=["disk", "slow-disk"])
def test_a_staged_core_whose_estimate_was_low_is_whole_and_its_sidecar_hash_true(tmp_path, monkeypatch, slow):
    """The target maps 32 MiB more between the plan and the stop: the staged memory (the estimate) is
    too small, and what follows it in file order is written straight to the file during the stop. The
    sidecar's hasher follows the file: the frontier keeps it from hashing the not yet written staged
    part as zeros (sha256sum agrees), and every page of the target's is in the core (gdb counts them).
    On a slow disk (each write of the staged part 3 ms late), the hasher keeps up with the writes and
    would hash bytes not yet written if the frontier ran ahead of them."""
    from dumplib._linux.backend import LinuxSession
    from dumplib._linux.core.memory import FileSink

    woke: List[int] = []  # the hashing thread's voluntary context switches when the staged writes start and end
    if slow:
        pwrite_all, write_staged = FileSink._pwrite_all, FileSink._write_staged

        def late(self, view, offset):  # type: ignore[no-untyped-def]
            time.sleep(0.003)
            return pwrite_all(self, view, offset)

        def staged_writes(self, stage, size, tick=None):  # type: ignore[no-untyped-def]
            woke.append(_hasher_switches())
            write_staged(self, stage, size, tick)
            woke.append(_hasher_switches())

        monkeypatch.setattr(FileSink, "_pwrite_all", late)
        monkeypatch.setattr(FileSink, "_write_staged", staged_writes)

    child = growing(80, 32)
    monkeypatch.setattr(LinuxSession, "plan", plan_then(child, "grow", "grown"))

    with volume("btrfs", tmp_path / "btrfs") as vol:
        seen: Dict[str, object] = {}
        try:
            r = dumplib.create_dump(child.pid, vol / "g.core", "full", progress=staged_seen(vol, seen),
                                    space_check=False)
        finally:
            child.kill()
            child.wait()
        assert seen["staged"], "not staged: the test proves nothing"
        final = os.stat(r.path).st_size
        length = seen["staged"][0][0]  # type: ignore[index]
        assert final > length + 16 * MIB, (final, length)  # written past the staged part
        assert final == _segments_end(Path(r.path))
        assert_sidecar_agrees(r)
        data = Path(r.path).read_bytes()
        assert data.count(b"HEAPPAGE") >= 80 * MIB // PAGE and data.count(b"GROWPAGE") >= 32 * MIB // PAGE
        if slow:  # the hash ran beside the staged writes (the writer said when the target ran), not after them
            assert len(woke) == 2 and woke[1] > woke[0], woke


def _hasher_switches() -> int:
    """The voluntary context switches of this process's sidecar hashing thread, as the kernel counts them."""
    import threading

    [tid] = [t.native_id for t in threading.enumerate() if t.name == "dumplib-sha256"]
    return thread_facts(tid)[0]


def test_a_read_given_up_on_gives_the_staged_memory_back_at_once(mmaplock_exe, tmp_path):
    """The copy's read into the staged memory waits on the target's mmap lock (held for good: the FUSE
    rig of test_stuck_mmap_lock) and is given up on with its window still held, so the mapping cannot
    be unmapped: its memory is given back when the dump ends (the kernel's Rss of it), not whenever that
    read returns, which may be never. The target is let go, nothing is left."""
    from helpers import require
    from test_stuck_mmap_lock import left_alone, refused_in_process, rig, unharmed

    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    with volume("btrfs", tmp_path / "btrfs") as out, rig(tmp_path, mmaplock_exe, heap_mib=96) as r:
        r.hold()
        sibling = int(r.t.info["sibling"])  # type: ignore[arg-type]
        poked: List[bool] = []
        before = _anonymous_maps()

        def progress(written: int, _elapsed: float) -> None:
            if written and not poked:
                os.kill(sibling, signal.SIGUSR1)  # a writer queues behind the held read: the next read waits
                poked.append(True)
                r.wait_stuck()

        refused = refused_in_process(r, r.t.pid, out / "x.core", "full", progress=progress, sidecar=False,
                                     space_check=False)
        assert refused.reason == "memory-map-locked", refused
        held = sorted(_anonymous_maps() - before)
        assert held, "no staged mapping is held: the test proves nothing"
        assert all(mapping_rss(lo) < 4 * MIB for lo, _ in held), [(hi - lo, mapping_rss(lo)) for lo, hi in held]
        left_alone(r, out)
        unharmed(r)


def test_a_disk_that_fills_while_the_staged_copy_is_written_fails_the_dump_with_the_target_running(tmp_path):
    """A staged copy is written once the target runs, so a disk that fills then (the guard turned off
    here) is found after the stop: DumpFailed "disk-full", nothing left in the directory, and the
    target was let go before the failure (its state read from /proc at the failure, not after it), and
    runs on."""
    with volume("btrfs", tmp_path / "btrfs") as vol:
        subprocess.run(["fallocate", "-l", "300M", str(vol / "filler")], check=True)
        os.sync()
        child = heap_target(96)
        states: List[str] = []
        from dumplib._linux.core.memory import FileSink

        write_staged = FileSink._write_staged

        def write_staged_seen(self, stage, size, tick=None):  # type: ignore[no-untyped-def]
            states.append(_state(child.pid))
            return write_staged(self, stage, size, tick)

        FileSink._write_staged = write_staged_seen  # type: ignore[method-assign]
        try:
            with pytest.raises(dumplib.DumpFailed) as failed:
                dumplib.create_dump(child.pid, vol / "full.core", "full", sidecar=False, space_check=False)
            state = _state(child.pid)
        finally:
            FileSink._write_staged = write_staged  # type: ignore[method-assign]
            child.kill()
            child.wait()
        assert failed.value.reason == "disk-full", failed.value
        assert states and states[0] in ("S", "R"), states  # staged, and written with the target running
        assert state in ("S", "R"), state
        assert sorted(p.name for p in vol.iterdir()) == ["filler"]


def test_a_compressed_core_is_staged_and_compressed_once_the_target_runs(outdir):
    """`compress="zstd"` to a local file: while the target is stopped nothing has reached the
    compressor (the temporary is empty) and this process holds the staged memory, all present; the
    core decompressed (zstd, an independent reader) holds the target's bytes as gdb reads them, and
    sha256sum of the compressed file agrees with the sidecar."""
    child = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seen: Dict[str, object] = {}
    try:
        address, n = map(int, child.stdout.readline().split())  # type: ignore[union-attr]
        estimate = dumplib.estimate(child.pid, "full").bytes
        r = dumplib.create_dump(child.pid, outdir / "c.core.zst", "full", compress="zstd",
                                progress=staged_seen(outdir, seen))
    finally:
        child.kill()
        child.wait()
    assert seen["size"] == 0, seen  # nothing compressed while the target was stopped
    staged = seen["staged"]
    assert len(staged) == 1, staged  # type: ignore[arg-type]
    length, rss = staged[0]  # type: ignore[index]
    assert length >= estimate and rss >= 0.9 * estimate, (staged, estimate)  # (merged: see above)
    raw = outdir / "c.core"
    subprocess.run(["zstd", "-q", "-d", r.path, "-o", str(raw)], check=True)
    out = gdb(sys.executable, str(raw), f"x/s {address + 5 * PAGE}", f"x/s {address + n - PAGE}")
    assert '"PAGE-0000000005-DATA-' in out and '"LAST-PAGE"' in out, out
    sidecar = json.loads(Path(r.path + ".json").read_text())
    assert sidecar["sha256"] == sha256sum(r.path)


def test_a_core_sent_to_a_stdout_nobody_reads_yet_does_not_hold_the_target(tmp_path):
    """`dumplib dump PID - -k full` into a pipe this test does not read until bytes arrive: staged, the
    first byte reaches the pipe only once the target runs again (its TracerPid 0, state not t, read as
    soon as the pipe is readable); written during the stop, the pipe would fill and hold the target
    stopped until someone read it. Then the core read whole from the pipe holds the target's bytes."""
    import select

    child = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address, n = map(int, child.stdout.readline().split())  # type: ignore[union-attr]
        dump = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(child.pid), "-", "-k", "full",
                                 "--max-pause", "120s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready, _, _ = select.select([dump.stdout], [], [], 240)
            assert ready, "no byte of the dump in 240 s"
            status = Path(f"/proc/{child.pid}/status").read_text()
            tracer = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("TracerPid:"))
            state = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("State:"))
            core, err = dump.communicate(timeout=240)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
        assert dump.returncode == 0, err[-2000:]
        assert tracer == 0 and state != "t", (tracer, state)
        path = tmp_path / "piped.core"
        path.write_bytes(core)
        out = gdb(sys.executable, str(path), f"x/s {address + 7 * PAGE}", f"x/s {address + n - PAGE}")
        assert '"PAGE-0000000007-DATA-' in out and '"LAST-PAGE"' in out, out
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("grow", [8, 48])
def test_a_compressed_core_whose_estimate_was_low_is_whole(outdir, monkeypatch, grow):
    """The target maps *grow* MiB more between the plan and the stop. 8 MiB fits in the stream's
    staged room over the estimate: the staged part goes down the stream once the target runs. 48 MiB
    does not: it is sent during the stop (the target's state, read when the sending starts), then the
    rest; either way the core, decompressed, has every page of the target's (counted)."""
    from dumplib._linux.backend import LinuxSession
    from dumplib._linux.core.memory import StreamSink

    child = growing(80, grow)
    monkeypatch.setattr(LinuxSession, "plan", plan_then(child, "grow", "grown"))
    states: List[str] = []
    send = StreamSink._send_staged

    def send_seen(self, tick=None):  # type: ignore[no-untyped-def]
        states.append(_state(child.pid))
        return send(self, tick)

    monkeypatch.setattr(StreamSink, "_send_staged", send_seen)
    try:
        r = dumplib.create_dump(child.pid, outdir / "g.core.zst", "full", compress="zstd")
    finally:
        child.kill()
        child.wait()
    assert len(states) == 1, states
    assert (states[0] == "t") is (grow == 48), states
    data = subprocess.run(["zstd", "-q", "-d", "-c", r.path], capture_output=True, check=True).stdout
    assert data.count(b"HEAPPAGE") >= 80 * MIB // PAGE and data.count(b"GROWPAGE") >= grow * MIB // PAGE


NEIGHBOUR = r"""
import mmap, signal, sys, time
taken = []
def take(*_):
    m = mmap.mmap(-1, int(sys.argv[1]) << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for at in range(0, len(m), 4096):
        m[at] = 1
    taken.append(m)
    open(sys.argv[2], "w").close()
signal.signal(signal.SIGUSR1, take)
print("ready", flush=True)
while True:
    time.sleep(1)
"""

#: Joins memory cgroup argv[5] (v1), waits for a line, dumps argv[1] to argv[2]; at the second populate
#: step, has the neighbour (argv[3]) take its memory and waits for its flag file (argv[4]).
CGROUP_DUMPER = r"""
import json, os, signal, sys, time
import dumplib
from dumplib._linux.core import mapped
target, out, neighbour, flag, group = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
real, steps = mapped.libc.populate, []
def populate(address, length):
    steps.append(length)
    if len(steps) == 2:
        os.kill(neighbour, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(address, length)
mapped.libc.populate = populate
with open(os.path.join(group, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
print("joined", flush=True)
sys.stdin.readline()
r = dumplib.create_dump(target, out, "full", sidecar=False, space_check=False)
print(json.dumps({"steps": len(steps), "path": r.path}), flush=True)
"""


def test_a_populate_stops_short_when_a_neighbour_takes_the_cgroups_room_meanwhile(tmp_path):
    """dumplib and a neighbour share a memory cgroup (v1, the controller this machine has) with room for
    twice the estimate when the dump decides to stage; after the first populate steps the neighbour
    takes most of that room. The populate reads the room again before each step and stops (the staged
    memory given back, the core written instead), where going on would have pushed the cgroup past its
    limit and its OOM killer would have picked one of them: both live, the cgroup's oom_kill count
    (memory.oom_control) is unchanged, and the core is whole."""
    from helpers import require

    require(os.geteuid() == 0, "making a memory cgroup needs root")
    with open("/proc/self/cgroup") as f:
        ours = next((ln.strip().split(":", 2)[2] for ln in f if ln.split(":")[1] == "memory"), None)
    require(ours is not None and os.path.isdir(f"/sys/fs/cgroup/memory{ours}"), "no cgroup v1 memory controller here")
    group = Path(f"/sys/fs/cgroup/memory{ours.rstrip('/')}/dumplib-stagetest-{os.getpid()}")
    flag = tmp_path / "taken"
    with volume("btrfs", tmp_path / "btrfs") as vol:
        target = heap_target(200)
        group.mkdir()
        procs: List["subprocess.Popen[str]"] = []
        try:
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, "520", str(flag)], stdout=subprocess.PIPE,
                                         text=True)
            procs.append(neighbour)
            assert neighbour.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
            (group / "cgroup.procs").write_text(str(neighbour.pid))
            dumper = subprocess.Popen([sys.executable, "-c", CGROUP_DUMPER, str(target.pid), str(vol / "cg.core"),
                                       str(neighbour.pid), str(flag), str(group)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(dumper)
            assert dumper.stdout.readline().strip() == "joined", dumper.stderr.read()  # type: ignore[union-attr]
            usage = int((group / "memory.usage_in_bytes").read_text())
            (group / "memory.limit_in_bytes").write_text(str(usage + (700 << 20)))
            kills = int(next(ln.split()[1] for ln in (group / "memory.oom_control").read_text().splitlines()
                             if ln.startswith("oom_kill ")))
            out, err = dumper.communicate("go\n", timeout=300)
            killed = int(next(ln.split()[1] for ln in (group / "memory.oom_control").read_text().splitlines()
                              if ln.startswith("oom_kill "))) - kills
            assert killed == 0 and neighbour.poll() is None and dumper.returncode == 0, (killed, dumper.returncode,
                                                                                          err[-2000:])
            assert flag.exists(), "the neighbour never took its memory: the test proves nothing"
            steps = json.loads(out.strip().splitlines()[-1])["steps"]
            assert steps == 2, steps  # it stopped at the check after the neighbour took the room
            data = Path(vol / "cg.core").read_bytes()
            assert data.count(b"HEAPPAGE") >= 200 * MIB // PAGE
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
            target.kill()
            target.wait()
            parent = group.parent / "cgroup.procs"
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    parent.write_text(pid)
            group.rmdir()


def test_a_snapshot_is_never_staged(tmp_path):
    """With a snapshot the copy runs after the target goes on, from the clone: nothing is staged (no
    anonymous mapping of 64 MiB or more appears in this process during the copy), where the same dump
    without a snapshot is staged (the test's own check that it would see one)."""
    with volume("btrfs", tmp_path / "btrfs") as vol:
        child = heap_target(96)
        try:
            seen: Dict[str, Dict[str, object]] = {"snapshot": {}, "stopped": {}}
            for name, snapshot in (("stopped", False), ("snapshot", True)):
                r = dumplib.create_dump(child.pid, vol / f"{name}.core", "full", snapshot=snapshot, sidecar=False,
                                        progress=staged_seen(vol, seen[name]), space_check=False)
                assert r.snapshot is snapshot
        finally:
            child.kill()
            child.wait()
        assert len(seen["stopped"]["staged"]) == 1, seen  # type: ignore[arg-type]
        assert seen["snapshot"]["staged"] == [], seen


RANDOM_HEAP = r"""
import mmap, os, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, n, 1 << 20):
    m[at : at + (1 << 20)] = os.urandom(1 << 20)  # incompressible: the compressed core is as large
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_disk_watchdog_still_guards_a_staged_core_written_once_the_target_runs(tmp_path):
    """A staged zstd core of incompressible memory, sent to the compressor once the target runs: the
    watchdog still sees the disk fill (the writes after the stop tick it) and abandons the dump at the
    reserve, the partial file removed, where without those ticks the core was kept with the reserve
    breached (44 MiB left of a 100 MiB reserve, in the review that found it)."""
    with tmpfs(tmp_path / "small", "450m") as vol:
        child = subprocess.Popen([sys.executable, "-c", RANDOM_HEAP, "400"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
            with pytest.raises(dumplib.InsufficientDiskSpace) as raised:
                dumplib.create_dump(child.pid, vol / "c.core.zst", "full", compress="zstd", min_free=100 << 20,
                                    sidecar=False)
            assert _state(child.pid) in ("S", "R")
        finally:
            child.kill()
            child.wait()
        assert "fell to" in str(raised.value), raised.value
        assert list(vol.iterdir()) == [], list(vol.iterdir())


def test_cancel_dumps_ends_a_staged_core_while_it_is_written_once_the_target_runs(tmp_path, monkeypatch):
    """cancel_dumps() from another thread once the staged bytes are being written (the target running):
    the next tick raises, the dump is cancelled and nothing is kept."""
    import threading

    from dumplib._linux.core.memory import FileSink

    write_staged = FileSink._write_staged
    asked: List[int] = []

    def cancelled_meanwhile(self, stage, size, tick=None):  # type: ignore[no-untyped-def]
        canceller = threading.Thread(target=lambda: asked.append(dumplib.cancel_dumps(wait=0)))
        canceller.start()
        canceller.join()
        return write_staged(self, stage, size, tick)

    monkeypatch.setattr(FileSink, "_write_staged", cancelled_meanwhile)
    with volume("btrfs", tmp_path / "btrfs") as vol:
        child = heap_target(96)
        try:
            with pytest.raises(dumplib.DumpFailed) as raised:
                dumplib.create_dump(child.pid, vol / "x.core", "full", space_check=False)
            assert _state(child.pid) in ("S", "R")
        finally:
            child.kill()
            child.wait()
        assert asked == [1] and raised.value.reason == "cancelled", (asked, raised.value)
        assert list(vol.iterdir()) == [], list(vol.iterdir())


@pytest.mark.parametrize("trigger", ["exit", "signal"])
def test_a_dump_at_a_watched_exit_or_a_handed_over_signal_is_never_staged(tmp_path, trigger):
    """At a watched exit or a handed-over signal the target already waits stopped when the dump begins:
    staging (a populate of the estimate's memory) would be time added to that stop, so nothing is staged
    there (no anonymous mapping of 64 MiB or more appears in this process during the copy), where the
    same target dumped at once is staged (the test's own check that it would see one)."""
    with volume("btrfs", tmp_path / "btrfs") as vol:
        # os._exit: the exit comes with the heap still mapped (the interpreter's own exit unmaps it first)
        child = subprocess.Popen([sys.executable, "-c", HEAP + "import os; os._exit(3)\n", "96"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        seen: Dict[str, Dict[str, object]] = {"at once": {}, "watched": {}}
        try:
            dumplib.create_dump(child.pid, vol / "at-once.core", "full", sidecar=False, space_check=False,
                                progress=staged_seen(vol, seen["at once"]))

            def on_event(e: dumplib.WatchEvent) -> None:
                if e.event == "watching":
                    if trigger == "exit":
                        child.stdin.close()  # type: ignore[union-attr]  # its loop ends: it exits
                    else:
                        os.kill(child.pid, signal.SIGUSR1)

            watched = dumplib.ProcessExit() if trigger == "exit" else dumplib.SignalReceived("USR1")
            results = dumplib.watch(child.pid, watched, path=vol / "watched.core", kind="full", timeout=120,
                                    on_event=on_event, sidecar=False, space_check=False,
                                    progress=staged_seen(vol, seen["watched"]))
        finally:
            child.kill()
            child.wait()
        assert len(results) == 1 and Path(results[0].path).stat().st_size > 96 * MIB
        assert len(seen["at once"]["staged"]) == 1, seen  # type: ignore[arg-type]
        assert seen["watched"]["staged"] == [], seen


def test_a_staged_stream_sent_during_the_stop_writes_nothing_once_its_caller_is_interrupted(outdir, monkeypatch):
    """The target grows 48 MiB past the stream's staged room, so what was staged is sent down the
    compressor during the stop, chunk by chunk, by the copy's worker. A Ctrl-C reaches the caller while
    the first chunk is being sent: the caller gives the copy up, lets the target go, closes and removes
    its output. No chunk may be written once it has returned (the output's descriptor is closed, and
    may have been handed out again to anything): each chunk is a write of its own, made only while the
    caller still waits. Each chunk's write is held until the caller has returned (at most 3 s for the
    first: a caller waits up to WRITE_PATIENCE, made 10 s here, for a write in progress) and counted
    if made after that."""
    from dumplib import _bounded
    from dumplib._linux.backend import LinuxSession
    from dumplib._linux.core.memory import StreamSink

    child = growing(80, 48)
    monkeypatch.setattr(LinuxSession, "plan", plan_then(child, "grow", "grown"))
    returned = threading.Event()
    states: List[str] = []
    late: List[bool] = []  # per chunk written: whether the caller had returned
    send = StreamSink._send

    def send_seen(self, stage, at, n):  # type: ignore[no-untyped-def]
        if not states:
            states.append(_state(child.pid))  # the first chunk: the target is stopped
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
            returned.wait(3)  # a caller that does not wait for this write returns meanwhile
        else:
            returned.wait(10)
        late.append(returned.is_set())
        return send(self, stage, at, n)

    monkeypatch.setattr(StreamSink, "_send", send_seen)
    monkeypatch.setattr(_bounded, "WRITE_PATIENCE", 10.0)  # this test's first write lasts 3 s, in Python
    try:
        with pytest.raises(KeyboardInterrupt):
            dumplib.create_dump(child.pid, outdir / "i.core.zst", "full", compress="zstd", sidecar=False)
        returned.set()
        time.sleep(0.5)  # a worker that goes on sends its next chunk now
        assert states == ["t"], states
        assert late == [False], f"chunks written after the caller returned (True): {late}"
        assert list(outdir.iterdir()) == [], list(outdir.iterdir())
        assert_running_untraced(child.pid)
    finally:
        returned.set()
        child.kill()
        child.wait()
