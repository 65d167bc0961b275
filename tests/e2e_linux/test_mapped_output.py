"""A full dump large enough to be read straight into its mapped output file (core/memory.py
FileSink.prepare, core/mapped.py): the kernel's view of the file while the target is stopped shows it
was sized and mapped before the copy, opened for reading only then; gdb reads the target's bytes from
the core; the kernel's SEEK_DATA says the zero pages are holes; readelf's last segment ends where the
file does; sha256sum agrees with the sidecar. And where it goes wrong: the file truncated by another
process mid-copy (an error, no SIGBUS, nothing left), a read given up on (the reservation given back),
file systems not on the list and small cores (written, write-only)."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

import dumplib
from helpers import require, tmpfs
from linuxrig import gdb, sha256sum
from linuxrig import state as proc_state

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

#: A target holding *MiB* of data pages (no zero pages): enough to be mapped from 64 MiB on. On
#: "shrink", it unmaps a second region of 24 MiB of data.
HEAP = r"""
import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
extra = mmap.mmap(-1, 24 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for region in (m, extra):
    for at in range(0, len(region), 4096):
        region[at : at + 8] = b"HEAPPAGE"
print("ready", flush=True)
for line in sys.stdin:
    extra.close()
    print("shrunk", flush=True)
"""


def heap_target(mib: int) -> "subprocess.Popen[str]":
    child = subprocess.Popen([sys.executable, "-c", HEAP, str(mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _temps(directory: Path) -> List[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".dumplib-") and not p.name.endswith(".json")]


def output_seen(directory: Path, seen: Dict[str, object]) -> Callable[[int, float], None]:
    """A progress callback that records, at its first call with data copied (the target stopped), how
    this process holds the temporary output in *directory*, as the kernel shows it: the access mode of
    the writer's descriptor (/proc/self/fdinfo flags; a sidecar hasher's read-only one left out) and
    whether it is mapped (/proc/self/maps)."""
    def progress(written: int, _elapsed: float) -> None:
        if not written or seen:
            return
        temps = _temps(directory)
        assert len(temps) == 1, temps
        modes = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") != str(temps[0]):
                    continue
                flags = next(ln for ln in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                             if ln.startswith("flags:"))
            except OSError:
                continue
            mode = int(flags.split()[1], 8) & os.O_ACCMODE
            if mode != os.O_RDONLY:
                modes.append(mode)
        seen["modes"] = modes
        maps = Path("/proc/self/maps").read_text().splitlines()
        seen["mapped"] = any(ln.endswith(" " + str(temps[0])) for ln in maps)
        seen["size"] = temps[0].stat().st_size
        # How much of the mapping has its pages already (the kernel's Rss of it): populated before
        # the stop, all of it, where a copy faulting them in one by one would have only what it read.
        smaps, rss, length = Path("/proc/self/smaps").read_text().splitlines(), 0, 0
        for i, ln in enumerate(smaps):
            if ln.endswith(" " + str(temps[0])):
                lo, hi = (int(x, 16) for x in ln.split()[0].split("-"))
                length += hi - lo
                rss += next(int(x.split()[1]) for x in smaps[i + 1:] if x.startswith("Rss:")) * 1024
        seen["rss"], seen["mapping"] = rss, length
    return progress


def room_to_map(directory: Path, pid: int) -> None:
    """Wait until a full core of *pid* written in *directory* would be mapped (core/mapped.py refusal),
    with room for twice it, so that what other processes dirty in the moment before the dump does not
    tip it: their dirty pages count against the writeback rule, and at load they may take all of it,
    so they are written back (sync) first, within a bound; a host that still has no room skips."""
    from dumplib._linux.core import mapped

    size = 2 * dumplib.estimate(pid, "full").bytes
    deadline = time.monotonic() + 120
    while True:
        why = mapped.refusal(str(directory), size)
        if why is None:
            return
        if time.monotonic() > deadline or "writeback" not in why:
            pytest.skip(f"this host would not map a core of {size} bytes now: {why}")
        os.sync()
        time.sleep(0.5)


def _load_offset(core: Path, address: int) -> int:
    """The file offset of the PT_LOAD at *address*, as readelf reads the program headers."""
    out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and int(f[2], 16) == address:
            return int(f[1], 16)
    raise AssertionError(f"no PT_LOAD at {address:#x}:\n{out}")


def _segments_end(core: Path) -> int:
    """Where the core's last program header's bytes end (offset + file size), as readelf reads them."""
    out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    ends = [int(f[1], 16) + int(f[4], 16) for f in (line.split() for line in out.splitlines())
            if f and f[0] in ("LOAD", "NOTE")]
    assert ends, out
    return max(ends)


def test_a_mapped_core_holds_the_targets_bytes_and_its_zero_pages_as_holes(outdir):
    child = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sizes = []
    seen: Dict[str, object] = {}
    look = output_seen(outdir, seen)

    def progress(written: int, elapsed: float) -> None:
        look(written, elapsed)
        state = proc_state(child.pid)
        for p in _temps(outdir):
            sizes.append((state, os.stat(p).st_size))

    try:
        address, n = map(int, child.stdout.readline().split())  # type: ignore[union-attr]
        room_to_map(outdir, child.pid)
        r = dumplib.create_dump(child.pid, outdir / "m.core", "full", progress=progress, min_free=0)
    finally:
        child.kill()
        child.wait()
    core = Path(r.path)
    final = core.stat().st_size
    # Mapped, so opened for reading and writing (the writer's descriptor, as the kernel shows it).
    assert seen["mapped"] and set(seen["modes"]) == {os.O_RDWR}, seen  # mmap holds a dup of it
    # Populated before the stop: at the copy's first progress every page of the mapping is there.
    assert seen["rss"] >= 0.9 * seen["mapping"] > 0, seen  # type: ignore[operator]
    assert final == _segments_end(core), (final, _segments_end(core))
    # While the target was stopped, the file already had (about) its final size: it was sized, and
    # the copy went into its pages, before the stop. Written with pwrite, it grows chunk by chunk.
    stopped = [size for state, size in sizes if state == "t"]
    assert stopped, sizes
    assert stopped[0] >= final * 0.9, (stopped[:3], final)

    out = assert_targets_pages(core, address, n, f"x/8xb {address + DATA + 7 * PAGE}")
    zero_line = [line for line in out.splitlines() if line.startswith(f"{address + DATA + 7 * PAGE:#x}:")]
    assert zero_line and zero_line[0].split(":")[1].split() == ["0x00"] * 8, out
    assert_zero_pages_are_holes(core, address, final)
    assert_sidecar_agrees(r)


def assert_targets_pages(core: Path, address: int, n: int, *more: str) -> str:
    """TARGET's marked data pages and its last page, as gdb reads them from *core* (the TARGET mapping at
    *address*, *n* bytes); gdb's output, with that of the *more* commands run with them."""
    probes = [0, 1, DATA // PAGE // 2, DATA // PAGE - 1]
    out = gdb(sys.executable, str(core), *[f"x/s {address + p * PAGE}" for p in probes],
              f"x/s {address + n - PAGE}", *more)
    for p in probes:
        assert f'"PAGE-{p:010d}-DATA-' in out, (p, out)
    assert '"LAST-PAGE"' in out, out
    return out


def assert_zero_pages_are_holes(core: Path, address: int, final: int) -> None:
    """TARGET's zero pages are holes in *core* (*final* bytes long), the data before them data, as the
    kernel's SEEK_HOLE/SEEK_DATA say."""
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


def assert_sidecar_agrees(r: "dumplib.DumpResult") -> None:
    """The sidecar's sha256, the result's and sha256sum's of the dump are one."""
    sidecar = json.loads(Path(r.path + ".json").read_text())
    assert sidecar["sha256"] == sha256sum(r.path) == r.sha256


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


def plan_then(child: "subprocess.Popen[str]", line: str, answer: str):  # type: ignore[no-untyped-def]
    """LinuxSession.plan, after which *child* is sent *line* and answers *answer* (it shrinks or
    grows): the estimate is then off by what it changed."""
    from dumplib._linux.backend import LinuxSession

    plan = LinuxSession.plan

    def planned_then_changed(self, kind, flags):  # type: ignore[no-untyped-def]
        planned = plan(self, kind, flags)
        child.stdin.write(line + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        assert child.stdout.readline().strip() == answer  # type: ignore[union-attr]
        return planned
    return planned_then_changed


def test_a_mapped_core_sized_to_an_estimate_too_high_is_cut_back_to_its_real_end(outdir, monkeypatch):
    """The file is sized to the plan's estimate before the stop; memory the target let go of between
    the plan and the stop leaves that too high, and the file is cut back to the core's real end: where
    readelf's last segment ends."""
    from dumplib._linux.backend import LinuxSession

    child = heap_target(96)
    room_to_map(outdir, child.pid)  # before the plan shrinks the target
    monkeypatch.setattr(LinuxSession, "plan", plan_then(child, "shrink", "shrunk"))
    seen: Dict[str, object] = {}
    try:
        r = dumplib.create_dump(child.pid, outdir / "s.core", "full", progress=output_seen(outdir, seen),
                                sidecar=False, min_free=0)
    finally:
        child.kill()
        child.wait()
    final = os.stat(r.path).st_size
    assert seen["mapped"], seen
    assert seen["size"] >= final + (20 << 20), (seen, final)  # sized for the 24 MiB let go of
    assert final == _segments_end(Path(r.path)), (final, _segments_end(Path(r.path)))


def test_a_small_full_core_is_written_through_a_write_only_descriptor(outdir):
    """Below MAP_AT_LEAST the core is written: its file is opened write-only (a mapping alone needs it
    readable), as the kernel shows the writer's descriptor."""
    child = heap_target(8)
    seen: Dict[str, object] = {}
    try:
        dumplib.create_dump(child.pid, outdir / "w.core", "full", progress=output_seen(outdir, seen), sidecar=False)
    finally:
        child.kill()
        child.wait()
    assert seen["modes"] == [os.O_WRONLY] and not seen["mapped"], seen


@contextlib.contextmanager
def volume(kind: str, path: Path) -> Iterator[Path]:
    """A fresh file system of *kind* mounted at *path* (root only): a loop image for block file systems."""
    require(os.geteuid() == 0, "mounting a file system needs root")
    if kind == "tmpfs":
        with tmpfs(path, "400M") as mounted:
            yield mounted
        return
    if kind == "ramfs":
        path.mkdir()
        subprocess.run(["mount", "-t", "ramfs", "ramfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)
        return
    require(shutil.which(f"mkfs.{kind}") is not None, f"mkfs.{kind} is not installed")
    image = path.with_name(path.name + ".img")
    subprocess.run(["truncate", "-s", "400M", str(image)], check=True)
    subprocess.run([f"mkfs.{kind}", "-q", "-f", str(image)], check=True, capture_output=True)
    path.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
        image.unlink()


@pytest.mark.parametrize("kind, mapped", [("xfs", True), ("tmpfs", True), ("btrfs", False), ("ramfs", False)])
def test_only_ext4_xfs_and_tmpfs_outputs_are_mapped(tmp_path, kind, mapped):
    """The file-system list (core/mapped.py): on xfs and tmpfs (ext4: the tests above) a core of 64 MiB
    or more is mapped; on btrfs (copy-on-write) and any other (ramfs here) it is not (staged in memory,
    then written: test_staged_output.py), write-only."""
    with volume(kind, tmp_path / kind) as vol:
        child = heap_target(96)
        seen: Dict[str, object] = {}
        try:
            if mapped:
                room_to_map(vol, child.pid)
            r = dumplib.create_dump(child.pid, vol / "f.core", "full", progress=output_seen(vol, seen), sidecar=False,
                                    space_check=False)  # ramfs says it has no free space, and has no limit
        finally:
            child.kill()
            child.wait()
        assert seen["mapped"] is mapped, seen
        assert set(seen["modes"]) == {os.O_RDWR if mapped else os.O_WRONLY}, seen  # type: ignore[arg-type]
        assert os.stat(r.path).st_size == _segments_end(Path(r.path))
        os.unlink(r.path)


#: The end of each cutting dumper below: dumps process argv[1] to argv[2] with its *progress* (or None)
#: and prints the outcome as one JSON line, with what its *cut* list recorded.
DUMP_AND_SAY = r"""
try:
    dumplib.create_dump(pid, out, "full", progress=progress, sidecar=False)
    print(json.dumps({"written": True, "cut": cut}))
except dumplib.DumpError as exc:
    print(json.dumps({"error": type(exc).__name__, "errno": exc.errno, "message": str(exc), "cut": cut}))
"""

#: Its progress callback, at its first call with data copied (the target stopped, the copy under way
#: in the mapped output), has another process truncate the temporary to nothing.
TRUNCATING_DUMPER = r"""
import json, os, subprocess, sys
import dumplib
pid, out = int(sys.argv[1]), sys.argv[2]
directory = os.path.dirname(out)
cut = []
def progress(written, elapsed):
    if written and not cut:
        temps = [n for n in os.listdir(directory) if n.startswith(".dumplib-") and not n.endswith(".json")]
        subprocess.run(["truncate", "-s", "0", os.path.join(directory, temps[0])], check=True)
        cut.append(written)
""" + DUMP_AND_SAY


def cutting_dump(dumper: str, pid: int, out: Path) -> Dict[str, Any]:
    """*dumper* run in a process of its own, its outcome: a SIGBUS would kill that process (-7)."""
    done = subprocess.run([sys.executable, "-c", dumper, str(pid), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["cut"], outcome  # the truncation happened during the dump
    return outcome  # type: ignore[no-any-return]


def test_an_output_truncated_by_another_process_mid_copy_ends_the_dump_with_an_error_and_nothing_left(outdir):
    """The kernel cannot provide the mapped output's pages once another process has truncated the file:
    the copy's reads into them fail (EFAULT), where a touch of them by Python would be a SIGBUS that
    kills dumplib with its temporary left. The dump fails with DumpFailed, nothing is left, the target
    runs untraced, and the dumping process ends normally (a SIGBUS would be -7)."""
    child = heap_target(320)
    try:
        room_to_map(outdir, child.pid)
        outcome = cutting_dump(TRUNCATING_DUMPER, child.pid, outdir / "t.core")
        assert outcome.get("error") == "DumpFailed" and outcome["errno"] == errno.EFAULT, outcome
        assert "output file" in outcome["message"], outcome
        assert list(outdir.iterdir()) == []
        status = Path(f"/proc/{child.pid}/status").read_text()
        assert "TracerPid:\t0" in status, status
        state = proc_state(child.pid)
        assert state not in ("t", "T"), state
    finally:
        child.kill()
        child.wait()


READBACK_TRUNCATED = r"""
import json, os, sys
import dumplib
from dumplib._linux.core import memory
pid, out = int(sys.argv[1]), sys.argv[2]
cut = []
real_punch = memory.FileSink._punch
def punch(self, lo, hi):
    # The read-back (finish()) has read its first chunk of the file: another process (here, the same
    # call on our descriptor) truncates it before the next, a page no touch of the mapping could have.
    if not cut:
        os.ftruncate(self.fd, 0)
        cut.append(True)
    real_punch(self, lo, hi)
memory.FileSink._punch = punch
progress = None
""" + DUMP_AND_SAY


def test_an_output_truncated_while_its_zero_pages_are_looked_for_ends_the_dump_with_an_error(outdir):
    """Once the target runs again, the file is read back to find its zero pages: by preadv, which fails
    on a page the file no longer has, where Python reading the mapping would be a SIGBUS (-7) that
    kills dumplib with its temporary left."""
    child = heap_target(200)
    try:
        room_to_map(outdir, child.pid)
        outcome = cutting_dump(READBACK_TRUNCATED, child.pid, outdir / "r.core")
        assert outcome.get("error") == "DumpFailed" and "cut short" in outcome["message"], outcome
        assert list(outdir.iterdir()) == []
    finally:
        child.kill()
        child.wait()


HOLED = r"""
import ctypes, mmap, sys
m = mmap.mmap(-1, 3 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, 3 << 20, 4096):
    m[at : at + 8] = b"DATAPAGE"
address = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None)
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
assert libc.munmap(address + (1 << 20), 1 << 20) == 0  # the middle MiB: unreadable in /proc/PID/mem
print(address, flush=True)
sys.stdin.read()
"""


def test_a_target_page_that_cannot_be_read_into_the_mapped_output_is_a_hole_not_an_output_error(tmp_path):
    """A read into the mapped output that fails may be the target's fault (an unreadable range) or the
    output's: the page is read again into a buffer of the copier's own to tell which. Here it is the
    target's: the copy goes on, the range is a hole (the kernel's SEEK_DATA), the rest is the data."""
    from dumplib._linux.core.memory import FileSink, MemoryCopier

    child = subprocess.Popen([sys.executable, "-c", HOLED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        address = int(child.stdout.readline())  # type: ignore[union-attr]
        sink = FileSink(fd)
        sink.prepare(3 * MIB)
        assert sink.window(0, PAGE) is not None  # mapped
        copier = MemoryCopier(child.pid, sink, total=3 * MIB)
        try:
            copier.copy(address, address + 3 * MIB, 0, None)
        finally:
            copier.close()
        sink.finish(3 * MIB)
        sink.release()
        assert os.fstat(fd).st_size == 3 * MIB
        assert os.pread(fd, 8, 0) == os.pread(fd, 8, 2 * MIB + 5 * PAGE) == b"DATAPAGE"
        assert os.lseek(fd, MIB, os.SEEK_HOLE) == MIB
        assert os.lseek(fd, MIB, os.SEEK_DATA) == 2 * MIB
    finally:
        os.close(fd)
        child.kill()
        child.wait()


@pytest.fixture(scope="module")
def mmaplock_exe(tmp_path_factory) -> Path:
    from linuxrig import build_c
    from test_stuck_mmap_lock import TARGET_C

    return build_c(tmp_path_factory.mktemp("mmaplock"), "mmaplock", TARGET_C)


def test_a_read_given_up_on_gives_the_mapped_outputs_reservation_back(mmaplock_exe, tmp_path):
    """The copy's read waits on the target's mmap lock (held for good: the FUSE rig of
    test_stuck_mmap_lock) and is given up on with its window of the mapped output still held, so the
    mapping cannot be closed: the file is truncated to nothing when the dump ends, its reserved blocks
    given back now rather than whenever that read returns. When it does, its copy into the truncated
    mapping fails in the kernel, and this process lives on."""
    import signal

    from test_stuck_mmap_lock import left_alone, refused_in_process, rig, unharmed

    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with rig(tmp_path, mmaplock_exe, heap_mib=96) as r:
        room_to_map(out, r.t.pid)
        r.hold()
        sibling = int(r.t.info["sibling"])  # type: ignore[arg-type]
        poked: List[bool] = []

        def progress(written: int, _elapsed: float) -> None:
            if written and not poked:
                os.kill(sibling, signal.SIGUSR1)  # a writer queues behind the held read: the next read waits
                poked.append(True)
                r.wait_stuck()

        refused = refused_in_process(r, r.t.pid, out / "x.core", "full", progress=progress, sidecar=False)
        assert refused.reason == "memory-map-locked", refused
        held = [ln.split()[0] for ln in Path("/proc/self/maps").read_text().splitlines() if "/.dumplib-" in ln]
        assert held, "no window of the mapped output is held: the test proves nothing"
        st = os.stat(f"/proc/self/map_files/{held[0]}")
        assert (st.st_size, st.st_blocks) == (0, 0), (st.st_size, st.st_blocks)
        left_alone(r, out)
        unharmed(r)
