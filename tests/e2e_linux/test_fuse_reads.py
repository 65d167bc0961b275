"""No read of a target waits on a file system: a real FUSE mount whose daemon stalls every read but the
first page's (fusestall.py, speaking /dev/fuse directly), a target mapping its 64 MiB file with one page
resident, and dumps, estimates and `ps` that must finish while the daemon stalls.

Independent readers: readelf (PT_LOADs), gdb (NT_FILE and memory, after the mount is gone, so it cannot read the
file itself), the target's smaps (what is resident), the daemon's own log (who asked it for what).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import pytest

from helpers import require
from linuxrig import build_source, gdb, have, python_at_pids_limit, run_target

HERE = Path(__file__).resolve().parent
FUSESTALL = HERE / "fusestall.py"
sys.path.insert(0, str(HERE))
from fusestall import FILE_SIZE, PAGE, page_bytes  # noqa: E402

#: Bound on a command that must not wait on the stalled file system (generous: a loaded 2-CPU machine).
COMMAND_SECONDS = 120


class StallingMount:
    """The FUSE daemon's process, its mount point and its log of requests."""

    def __init__(self, path: Path, daemon: "subprocess.Popen[str]", log: Path) -> None:
        self.path, self.daemon, self.log = path, daemon, log
        self.commands: List[int] = []  # pids of the dumplib commands run

    def lines(self) -> List[str]:
        return self.log.read_text().splitlines()

    def asked_by_dumplib(self) -> List[str]:
        """Requests made by a dumplib command run here or a child of one (a snapshot's tracer); held reads
        by anyone. (Other processes of the machine may stat the file: they are not the test's.)"""
        ours = {str(p) for p in self.commands}
        return [ln for ln in self.lines() if "held read" in ln
                or any(f"tgid={p} " in ln + " " or f"ppid={p}" == ln.split()[-1] for p in ours)]

    def release(self) -> None:
        """Answer every held read (and every later one): whatever waits on the mount goes on."""
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGUSR1)

    def freeze(self) -> None:
        """Drop "exe" from the page cache (unmapping it from every process) and hold its later reads."""
        self.daemon.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while "frozen" not in self.lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "frozen" in self.lines(), self.lines()

    def stop(self) -> None:
        self.release()
        if self.daemon.poll() is None:
            self.daemon.terminate()  # it detaches the mount and closes /dev/fuse
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if str(self.path) in Path("/proc/self/mounts").read_text():
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@contextlib.contextmanager
def mounted(tmp_path: Path, exe: Optional[Path] = None) -> Iterator[StallingMount]:
    require(os.geteuid() == 0, "mounting a FUSE file system with mount(2) needs root")
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing (modprobe fuse); no FUSE file system can be mounted")
    path = tmp_path / "mnt"
    path.mkdir()
    log = tmp_path / "fuse.log"
    env = dict(os.environ, FUSESTALL_EXE=str(exe)) if exe else None
    with open(log, "w") as err:
        daemon = subprocess.Popen([sys.executable, str(FUSESTALL), str(path)], stdout=subprocess.PIPE,
                                  stderr=err, text=True, env=env)
    mount = StallingMount(path, daemon, log)
    try:
        assert daemon.stdout is not None
        ready, _, _ = select.select([daemon.stdout], [], [], 30)
        line = daemon.stdout.readline() if ready else ""
        require(line.strip() == "ready", f"the FUSE test file system did not mount: {log.read_text()[-2000:]}")
        yield mount
    finally:
        mount.stop()


@pytest.fixture()
def stalling_mount(tmp_path) -> Iterator[StallingMount]:
    with mounted(tmp_path) as mount:
        yield mount


@pytest.fixture(scope="module")
def fuse_target_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("fusebin"), HERE / "fuse_target.c")


def within(fn: Callable[[], object], seconds: float) -> Tuple[bool, object]:
    """(finished, result) of *fn* run in a thread given *seconds* (a stuck one is abandoned)."""
    box: List[object] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    return (bool(box), box[0] if box else None)


def run_unstalled(mount: StallingMount, *args: str) -> subprocess.CompletedProcess:
    """`python -m dumplib_cli ARGS`, failing (not hanging) if it waits on the stalled mount: the daemon
    is released first, since a process in D state cannot be killed."""
    proc = subprocess.Popen([sys.executable, "-m", "dumplib_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    mount.commands.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=COMMAND_SECONDS)
    except subprocess.TimeoutExpired:
        mount.release()
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"dumplib {' '.join(args)} waited on the stalled file system; its log:\n"
                    + "\n".join(mount.lines()[-20:]) + f"\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def mapping_of(pid: int, path: Path) -> Tuple[int, int, int]:
    """(start, end, resident bytes) of the mapping of *path*, from the target's smaps."""
    text = Path(f"/proc/{pid}/smaps").read_text()
    at = text.index(str(path))
    head = text.rfind("\n", 0, at) + 1
    lo, hi = (int(x, 16) for x in text[head:at].split()[0].split("-"))
    rss = int(re.search(r"\nRss:\s+(\d+) kB", text[at:]).group(1)) * 1024  # type: ignore[union-attr]
    return lo, hi, rss


def mappings_of(pid: int, suffix: str) -> List[Tuple[int, int, int]]:
    """(start, end, resident bytes) of each mapping whose path ends with *suffix*, from smaps."""
    out = []
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path(f"/proc/{pid}/smaps").read_text()):
        head = block.split("\n", 1)[0]
        if head.endswith(suffix):
            lo, hi = (int(x, 16) for x in head.split()[0].split("-"))
            rss = int(re.search(r"\nRss:\s+(\d+) kB", block).group(1)) * 1024  # type: ignore[union-attr]
            out.append((lo, hi, rss))
    return out


def loads(core: Path) -> List[Tuple[int, int, int]]:
    """(address, file size, memory size) of each PT_LOAD, as readelf reads them (its NT_FILE decoding is
    missing from some 64-bit builds: gdb reads NT_FILE)."""
    out = subprocess.run(["readelf", "-lW", str(core)], capture_output=True, text=True, check=True).stdout
    return [(int(f[2], 16), int(f[4], 16), int(f[5], 16)) for f in (ln.split() for ln in out.splitlines())
            if f and f[0] == "LOAD"]


def unharmed(t) -> None:  # type: ignore[no-untyped-def]
    """The target runs untraced, its maps read at once and its own mmap call returns."""
    done, _ = within(lambda: Path(f"/proc/{t.pid}/maps").read_text(), 10)
    assert done, "the target's /proc/PID/maps hangs: something holds its mmap lock"
    done, answer = within(lambda: t.ask("mmap"), 30)
    assert done and answer == "mapped", answer
    status = Path(f"/proc/{t.pid}/status").read_text()
    assert "TracerPid:\t0" in status and re.search(r"State:\t[RS]", status), status


@pytest.mark.parametrize("mode,kind,extra", [("shared", "full", ()), ("private", "full", ()),
                                             ("shared", "full", ("--snapshot",)), ("private", "mini", ())],
                         ids=["shared", "private", "shared-snapshot", "private-mini"])
def test_a_dump_takes_only_the_resident_pages_of_a_stalled_file(stalling_mount, fuse_target_exe, tmp_path,
                                                                 mode, kind, extra):
    require(have("readelf") and have("gdb"), "readelf and gdb are needed to read the core")
    big, cold = stalling_mount.path / "big", stalling_mount.path / "cold"
    out = tmp_path / "out"
    out.mkdir()
    core = out / "f.core"
    with run_target([str(fuse_target_exe), str(big), mode, str(cold)]) as t:
        lo, hi, rss = mapping_of(t.pid, big)
        assert hi - lo == FILE_SIZE and rss == PAGE, (hex(lo), hex(hi), rss)  # one page resident, as set up
        cold_lo, cold_hi, cold_rss = mapping_of(t.pid, cold)
        assert cold_rss == 0
        before = len(stalling_mount.lines())

        # The target's maps stay readable all through the estimate and the dump.
        stop = threading.Event()
        stalls: List[float] = []

        def watch_maps() -> None:
            while not stop.is_set():
                done, _ = within(lambda: Path(f"/proc/{t.pid}/maps").read_text(), 10)
                if not done:
                    stalls.append(time.monotonic())
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_maps, daemon=True)
        watcher.start()
        try:
            est = run_unstalled(stalling_mount, "estimate", str(t.pid), "--kind", kind, "--json")
            done = run_unstalled(stalling_mount, "dump", str(t.pid), str(core), "--kind", kind,
                                 "--max-pause", "5s", "--json", *extra)
        finally:
            stop.set()
            watcher.join(30)
        assert est.returncode == 0, est.stderr
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stalled" not in done.stdout + done.stderr
        assert not stalls, "the target's /proc/PID/maps hung during the estimate or the dump"
        # Neither command asked the file system for anything: no read, no open, no stat of the file.
        asked = stalling_mount.asked_by_dumplib()
        assert asked == [] and len(stalling_mount.lines()) > before - 1, asked
        unharmed(t)

        # The estimate counts the resident page only, not the 64 MiB (smaps says what is resident).
        estimate = json.loads(est.stdout)
        assert estimate["bytes"] < 16 << 20, estimate
        if mode == "shared":
            assert estimate["breakdown"]["shared"] == rss, estimate

        # A full core: one PT_LOAD holds the resident page; the rest of the mapping has none at all,
        # nor has the file never touched (a mini core takes neither: neither is an ELF image).
        inside = [(a, f, m) for a, f, m in loads(core) if a < hi and a + m > lo]
        assert inside == ([(lo, PAGE, PAGE)] if kind == "full" else []), [(hex(a), f, m) for a, f, m in inside]
        assert not [a for a, f, m in loads(core) if a < cold_hi and a + m > cold_lo]

    # With the mount gone gdb cannot read the file itself: it shows what the core holds.
    stalling_mount.stop()
    shown = gdb(str(fuse_target_exe), str(core), f"x/s {lo:#x}", f"x/x {lo + PAGE:#x}",
                f"x/x {lo + FILE_SIZE // 2:#x}", f"x/x {cold_lo:#x}", "info proc mappings")
    if kind == "full":
        assert page_bytes(0)[:32].decode() in shown, shown
    assert shown.count("Cannot access memory") == (3 if kind == "full" else 4), shown
    # NT_FILE (what gdb's mappings list is read from) still names the file, where and from which offset.
    assert re.search(rf"{lo:#x}\s+{hi:#x}\s+{FILE_SIZE:#x}\s+0x0\s+\S*/mnt/big\n", shown), shown


def test_ps_shows_a_question_mark_for_a_process_whose_memory_map_is_stuck(stalling_mount, fuse_target_exe,
                                                                          tmp_path):
    # A name longer than comm's 15 bytes: finding the process's name reads its cmdline too.
    exe = tmp_path / "fuse_stuck_target_long"
    exe.write_bytes(fuse_target_exe.read_bytes())
    exe.chmod(0o700)
    big = stalling_mount.path / "big"
    with run_target([str(exe), str(big), "shared"]) as t:
        lo, _, _ = mapping_of(t.pid, big)
        assert t.ask("churn") == "churning"  # a thread of the target maps and unmaps all the time
        # Another process reads a non-resident page of the target (as dumplib once did): it waits on the
        # daemon in the kernel holding the target's mmap lock; the target's mmap queues behind it, and
        # every reader of its cmdline or smaps behind that.
        reader = subprocess.Popen([sys.executable, "-c",
                                   f"import os; fd = os.open('/proc/{t.pid}/mem', os.O_RDONLY);"
                                   f" os.pread(fd, 8, {lo + 5 * PAGE})"])
        try:
            deadline = time.monotonic() + 60
            stuck = False
            while time.monotonic() < deadline and not stuck:
                stuck, _ = within(lambda: Path(f"/proc/{t.pid}/cmdline").read_bytes(), 2)
                stuck = not stuck
            assert stuck, "the test could not make the target's mmap lock stick: " + "\n".join(stalling_mount.lines())

            text = run_unstalled(stalling_mount, "ps", "fuse_stuck")
            listed = run_unstalled(stalling_mount, "ps", "fuse_stuck", "--json")
            assert text.returncode == 0 and listed.returncode == 0, text.stderr + listed.stderr
            rows = [r for r in json.loads(listed.stdout) if r["pid"] == t.pid]
            assert len(rows) == 1, listed.stdout
            assert rows[0]["full_dump_bytes"] is None and rows[0]["name"].startswith("fuse_stuck_targ"), rows
            line = next(ln for ln in text.stdout.splitlines() if ln.split()[0] == str(t.pid))
            assert line.rstrip().endswith("?"), line
            # A watcher sampling its PSS (smaps_rollup, the mmap lock again) goes on to its timeout.
            watched = run_unstalled(stalling_mount, "watch", str(t.pid), str(tmp_path), "--memory", "1",
                                    "--memory-measure", "pss", "--timeout", "8")
            assert not list(tmp_path.glob("*.core")), watched.stdout + watched.stderr
        finally:
            stalling_mount.release()
            reader.wait(60)
        unharmed(t)


MEMFD_TARGET = r"""
import ctypes, json, mmap, os, sys
fd = os.memfd_create("dumplib-untouched")
os.write(fd, b"DUMPLIB-MEMFD-DATA".ljust(4 * 4096, b"."))  # written through the descriptor only
m = mmap.mmap(fd, 4 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)  # mapped, never touched
print(json.dumps({"pid": os.getpid(), "address": ctypes.addressof(ctypes.c_char.from_buffer(m))}), flush=True)
sys.stdin.read()
"""


def test_a_memory_object_not_mapped_in_yet_is_still_read(tmp_path):
    # memfd (like tmpfs, SysV shm, MAP_SHARED|MAP_ANONYMOUS) is memory, not a file system: its data is
    # stored though the process never touched the mapping (the file-system rule would leave it out).
    require(have("gdb"), "gdb is needed to read the core")
    with run_target([sys.executable, "-c", MEMFD_TARGET]) as t:
        address = int(t.info["address"])
        fd = os.open(f"/proc/{t.pid}/pagemap", os.O_RDONLY)
        try:
            entry = int.from_bytes(os.pread(fd, 8, address // PAGE * 8), "little")
        finally:
            os.close(fd)
        assert not entry >> 63, "the target's page is mapped in: the test proves nothing"
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), str(tmp_path / "m.core"),
                               "--kind", "full"], capture_output=True, text=True, timeout=COMMAND_SECONDS)
        assert done.returncode == 0, done.stderr
    shown = gdb(sys.executable, str(tmp_path / "m.core"), f"x/s {address:#x}")
    assert "DUMPLIB-MEMFD-DATA" in shown, shown


def _idle_in_read(pid: int) -> None:
    """Wait until the target (fuse_target.c) waits in read() of its stdin, past the printf that
    announced it: a target whose program is then dropped and held must be running none of its own code
    (a page of it faulted back in waits on the frozen mount in state D, where no dump can stop it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
        if fields[:2] == ["0", "0x0"]:  # x86-64 read(0, ...)
            return
        time.sleep(0.005)
    pytest.fail(f"target {pid} never waited in read() of its stdin: {Path(f'/proc/{pid}/syscall').read_text()}")


@contextlib.contextmanager
def _released_first(mount: StallingMount) -> Iterator[None]:
    """Release the mount's held reads before a target running from it is killed and waited for: one in D
    state on its own code cannot die until they are answered (a failed assertion hung the suite)."""
    try:
        yield
    finally:
        mount.release()


def test_an_executable_on_a_stalled_mount_is_dumped_without_reading_it(fuse_target_exe, tmp_path):
    # The program itself runs from the mount; its pages are then dropped from the page cache (and so from
    # the process) and every read of it held: the 32-bit check, the ELF header pages and the link_map
    # walk of mini, and a full core must all do without them.
    require(have("readelf"), "readelf is needed to read the core")
    with mounted(tmp_path, exe=fuse_target_exe) as mount:
        with run_target([str(mount.path / "exe"), str(mount.path / "big"), "shared"]) as t, \
                _released_first(mount):
            _idle_in_read(t.pid)
            mount.freeze()
            exe_maps = mappings_of(t.pid, "/mnt/exe")
            cold = [(lo, hi) for lo, hi, rss in exe_maps if rss == 0]
            assert cold, ("nothing of the executable was dropped: the test proves nothing", exe_maps)
            results = [run_unstalled(mount, "estimate", str(t.pid), "--json")]
            for kind in ("mini", "full"):
                results.append(run_unstalled(mount, "dump", str(t.pid), str(tmp_path / f"{kind}.core"), "--kind",
                                             kind, "--max-pause", "5s"))
            assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
            assert mount.asked_by_dumplib() == [], mount.asked_by_dumplib()
            full = loads(tmp_path / "full.core")
            assert not [a for a, f, m in full for lo, hi in cold if a < hi and a + m > lo]
            mount.release()  # the target runs its own code again only once it can be read
            unharmed(t)


def test_a_snapshots_copy_that_meets_a_stalled_page_is_given_up_on_within_the_bound(fuse_target_exe, tmp_path,
                                                                                     monkeypatch):
    """The copy from a snapshot's clone reads pages found resident while the target was stopped; one that
    has left memory since (here: the program's own pages, dropped by the daemon once the clone exists,
    their later reads held) is fetched from the file system by that read. The read is given up on after
    dumplib's bound, as a read of the live target is: TargetRefused memory-map-locked, nothing kept, the
    clone reaped by the target once the mount answers, the target unharmed."""
    import dumplib
    from dumplib._linux import backend

    out = tmp_path / "out"
    out.mkdir()
    with mounted(tmp_path, exe=fuse_target_exe) as mount:
        with run_target([str(mount.path / "exe"), str(mount.path / "big"), "shared"]) as t, _released_first(mount):
            _idle_in_read(t.pid)
            copy_rest = backend._Snapshot.copy_rest
            frozen: List[bool] = []

            def frozen_first(self, *args):  # type: ignore[no-untyped-def]
                if not frozen:  # once: the clone exists and the target runs again
                    frozen.append(True)
                    mount.freeze()
                copy_rest(self, *args)

            monkeypatch.setattr(backend._Snapshot, "copy_rest", frozen_first)

            def dump() -> object:
                try:
                    return dumplib.create_dump(t.pid, out, "full", snapshot=True)
                except dumplib.DumpError as exc:
                    return exc

            # Twice the bound, and the worker's looks, are plenty at load 10; past that the read was not bounded.
            done, got = within(dump, 2 * backend.MM_LOCK_SECONDS + 30)
            held = [ln for ln in mount.lines() if "held read" in ln]
            assert frozen and held, ("no read of the dropped pages was held: the test proves nothing", mount.lines())
            assert done, "the copy from the snapshot waited on the stalled mount"
            assert isinstance(got, dumplib.TargetRefused) and got.reason == "memory-map-locked", got
            assert f"snapshot of process {t.pid}" in str(got), str(got)
            assert list(out.iterdir()) == []
            mount.release()  # the abandoned read, the clone's exit and the target's own code can go on now
            deadline = time.monotonic() + 30
            while _children(t.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _children(t.pid) == [], "the snapshot was left as a child of the target"
            unharmed(t)


def _children(pid: int) -> List[int]:
    """Every process whose parent is *pid*, from every process's status."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            if re.search(rf"\nPPid:\t{pid}\n", text):
                found.append(int(entry))
    return found


#: `python -c` this, then the command's arguments: the dumplib command, with the mount's "exe" frozen
#: (FREEZE_DAEMON, FREEZE_LOG) at FREEZE_AT: "copy", as the live copy begins, or "check", just after the
#: layout, the target stopped, found the first page of the program (FREEZE_PID's mapping of "exe")
#: resident. Pages found resident leave memory just before they are read: the race between the residency
#: check and the read that the kernel's reclaim could make at any time.
RECLAIMED_BEFORE_THE_READ = r"""
import os, runpy, signal, sys, time
from dumplib._linux import backend
from dumplib._linux.core import memory

def freeze():
    os.kill(int(os.environ["FREEZE_DAEMON"]), signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while "frozen" not in open(os.environ["FREEZE_LOG"]).read().split() and time.monotonic() < deadline:
        time.sleep(0.01)

if os.environ["FREEZE_AT"] == "copy":
    copy = backend._copy

    def frozen_first(*args):
        freeze()
        copy(*args)

    backend._copy = frozen_first
else:
    program = [tuple(int(x, 16) for x in line.split()[0].split("-"))
               for line in open(f"/proc/{os.environ['FREEZE_PID']}/maps") if line.rstrip().endswith("/exe")]
    lay_out, resident, stopped = backend._lay_out, memory.Prober.resident, []

    def laid_out(*args):
        stopped.append(True)
        return lay_out(*args)

    def checked(self, address):
        found = resident(self, address)
        if stopped and found and stopped[-1] and any(lo <= address < hi for lo, hi in program):
            stopped.append(False)
            freeze()
        return found

    backend._lay_out, memory.Prober.resident = laid_out, checked
sys.argv = ["dumplib", *sys.argv[1:]]
runpy.run_module("dumplib_cli", run_name="__main__")
"""


@pytest.mark.parametrize("at", ["copy", "check"])
def test_a_page_reclaimed_before_its_read_leaves_dumplib_free_to_exit(fuse_target_exe, tmp_path, at):
    """A resident page of the program (on the stalled mount) is dropped after the residency check and
    before its read (the copy's, or the layout's read of its ELF header), which the daemon then holds:
    once the daemon has taken a read it is waited for even past SIGKILL, so dumplib reads such pages
    through a child. The command ends within its bound (memory-map-locked, nothing kept, the target let
    go) and its process exits, reaped by its parent, while the daemon still holds the read."""
    with mounted(tmp_path, exe=fuse_target_exe) as mount:
        with run_target([str(mount.path / "exe"), str(mount.path / "big"), "shared"]) as t, _released_first(mount):
            _idle_in_read(t.pid)
            env = dict(os.environ, FREEZE_DAEMON=str(mount.daemon.pid), FREEZE_LOG=str(mount.log), FREEZE_AT=at,
                       FREEZE_PID=str(t.pid))
            proc = subprocess.Popen([sys.executable, "-c", RECLAIMED_BEFORE_THE_READ, "dump", str(t.pid),
                                     str(tmp_path / "r.core"), "--kind", "full", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            mount.commands.append(proc.pid)
            try:
                out, err = proc.communicate(timeout=COMMAND_SECONDS)
            except subprocess.TimeoutExpired:
                mount.release()
                proc.kill()
                out, err = proc.communicate()
                pytest.fail("dumplib's process did not exit while a read of a reclaimed page waited on the mount:"
                            f"\n{out}{err}\n" + "\n".join(mount.lines()[-10:]))
            held = [ln for ln in mount.lines() if "held read" in ln]
            assert "frozen" in mount.lines() and held, ("no read of a reclaimed page was held: the test proves"
                                                        " nothing", mount.lines()[-10:], err)
            assert proc.returncode == 11, (proc.returncode, out, err)
            error = json.loads(out)["error"]
            assert error["reason"] == "memory-map-locked", out
            # The read the daemon holds is our own reader child's: the refusal names it by pid.
            named = re.search(r"dumplib's own reader process (\d+) waits in a read", error["message"])
            assert named, error["message"]
            # The very process whose read the daemon holds (its log names the requester).
            requesters = {ln.rsplit(" from ", 1)[1] for ln in held}
            assert requesters == {named.group(1)}, (requesters, error["message"])
            assert not (tmp_path / "r.core").exists()
            mount.release()
            unharmed(t)


FAILED_START = r"""
import json, os, sys
import dumplib
# This interpreter, run again, cannot start: its libpython is looked up first in a directory that holds
# an empty file of that name (LD_LIBRARY_PATH outranks the binary's RUNPATH), so the dynamic loader
# ends it before Python runs (as a failed exec, ENOMEM or a pids limit would).
if sys.argv[3] == "pids":  # or, the fork itself fails: the test puts this process in a full pids cgroup
    print("ready", flush=True)
    sys.stdin.readline()
else:
    os.environ["LD_LIBRARY_PATH"] = sys.argv[3]
fds = lambda: sorted(os.listdir("/proc/self/fd"))
before = fds()
try:
    dumplib.create_dump(int(sys.argv[1]), sys.argv[2], "full", sidecar=False)
    outcome = {"written": True}
except dumplib.DumpError as e:
    outcome = {"type": type(e).__name__, "message": e.message, "reason": getattr(e, "reason", None)}
import gc; gc.collect()
outcome["leaked"] = sorted(set(fds()) - set(before))
print(json.dumps(outcome))
"""


def _dumped_with_a_broken_reader(target_pid: int, core: Path, how: str, room: int = 0) -> dict:  # type: ignore[type-arg]
    """FAILED_START's outcome. *how*: a directory whose empty libpython the reader child's loader meets,
    or "pids": the dumper in a pids cgroup with *room* tasks beyond its own one."""
    args = [str(target_pid), str(core), how]
    if how == "pids":
        return python_at_pids_limit(FAILED_START, args, room, timeout=COMMAND_SECONDS)
    done = subprocess.run([sys.executable, "-c", FAILED_START, *args], capture_output=True, text=True,
                          timeout=COMMAND_SECONDS)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_at_a_pids_limit_a_dump_fails_typed_and_whole_or_is_written_whole(stalling_mount, fuse_target_exe, tmp_path):
    """dumplib in a cgroup at its pids limit (a systemd unit's TasksMax=, a container's pids.max), at every
    limit from no room at all upward until the dump is written: each dump either fails with DumpFailed
    reason no-resources saying what it could not start and what to do, keeping nothing, leaking no
    descriptor and leaving the target running, or is written. Among them, one where the threads start
    and the reader child's fork is refused (EAGAIN): "could not start the process that reads pages"."""
    out = tmp_path / "out"
    out.mkdir()
    said: List[str] = []
    with run_target([str(fuse_target_exe), str(stalling_mount.path / "big"), "shared",
                     str(stalling_mount.path / "cold")]) as t:
        for room in range(12):
            outcome = _dumped_with_a_broken_reader(t.pid, out / "x.core", "pids", room)
            if outcome.get("written"):
                break
            assert outcome.get("type") == "DumpFailed" and outcome["reason"] == "no-resources", (room, outcome)
            assert "raise the pids limit" in outcome["message"].lower(), outcome
            assert outcome["leaked"] == [], outcome
            assert sorted(out.iterdir()) == [], (room, outcome)
            unharmed(t)
            said.append(outcome["message"].split(" (")[0].split(":")[0])
            if "reads pages" in outcome["message"]:
                assert "(Resource temporarily unavailable" in outcome["message"], outcome
        else:
            raise AssertionError(f"never written with up to 11 tasks to spare: {said}")
        assert sorted(p.name for p in out.iterdir()) == ["x.core"], sorted(out.iterdir())  # sidecar=False
        unharmed(t)
    print(f"written with {room} task(s) to spare; before that: {said}")
    assert said and said[0].startswith("could not start a thread"), said  # no room: the first thread is refused
    assert "could not start the process that reads pages of files on FUSE, NFS or CIFS mounts" in said, said
    # The fork's own errno is told (EAGAIN: the limit's); a refused thread comes with none.


def test_a_reader_child_that_cannot_start_fails_the_dump_instead_of_leaving_holes(stalling_mount, fuse_target_exe,
                                                                                 tmp_path):
    """The child reading the pages of files on the stalled mount cannot start (here its dynamic loader
    ends it; a failed exec, ENOMEM or a pids limit do the same): the dump fails and says why, nothing is
    kept, no descriptor is left open. Before, the failure counted as unreadable memory: every such page
    a silent hole. (sys.executable pointing elsewhere no longer models it: only the binary running
    dumplib is ever run, interpreter.py.)"""
    broken = tmp_path / "lib"
    broken.mkdir()
    for needed in subprocess.run(["readelf", "-d", os.path.realpath(sys.executable)], capture_output=True, text=True,
                                 check=True).stdout.splitlines():
        if "(NEEDED)" in needed and "libpython" in needed:
            (broken / needed.split("[")[1].rstrip("]")).write_bytes(b"")
    libc = broken / "libc.so.6"  # a static build needs no libpython: then libc is the one broken
    if not any(p.name.startswith("libpython") for p in broken.iterdir()):
        libc.write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(fuse_target_exe), str(stalling_mount.path / "big"), "shared",
                     str(stalling_mount.path / "cold")]) as t:
        outcome = _dumped_with_a_broken_reader(t.pid, out / "x.core", str(broken))
        assert outcome.get("type") == "DumpFailed", outcome
        # Started and gone at once: "ended" (a fork refused is "could not start": the test above).
        assert "the reader process of this copy ended" in outcome["message"], outcome
        assert outcome["leaked"] == [], outcome
        assert sorted(out.iterdir()) == []
        unharmed(t)


#: The embedded program's dump, every process it starts seen by the interpreter's own audit hook.
EMBEDDED_FUSE_DUMP = r"""
import json, os, sys
started = []
sys.addaudithook(lambda event, args: started.append(str(args[0])) if event == "subprocess.Popen" else None)
import dumplib
args = json.loads(os.environ["DUMPLIB_TEST_ARGS"])
r = dumplib.create_dump(args["pid"], args["out"], "full", sidecar=False)
print(json.dumps({"path": r.path, "started": started}))
"""


def test_a_program_embedding_python_reads_such_pages_in_place_and_starts_no_child(stalling_mount, fuse_target_exe,
                                                                                 embedder, tmp_path):
    """Inside a program that embeds Python the reader child would be that program run with the child's
    arguments (interpreter.py): the pages are read in place instead (the mount answers here), and no
    process is started at all."""
    script = tmp_path / "fuse_dump.py"
    script.write_text(EMBEDDED_FUSE_DUMP)
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(fuse_target_exe), str(stalling_mount.path / "big"), "shared",
                     str(stalling_mount.path / "cold")]) as t:
        done = subprocess.run([str(embedder / "embedder"), str(script)], capture_output=True,
                              text=True, timeout=COMMAND_SECONDS, cwd="/",
                              env=dict({k: v for k, v in os.environ.items() if k not in ("PYTHONEXECUTABLE", "PYTHONHOME")},
                                       PYTHONPATH=os.pathsep.join([str(HERE.parents[1])] + sys.path),
                                       DUMPLIB_TEST_ARGS=json.dumps({"pid": t.pid, "out": str(out / "x.core")})))
        assert done.returncode == 0, done.stdout + done.stderr
        said = json.loads(done.stdout.strip().splitlines()[-1])
        assert said["started"] == [], said
        head = subprocess.run(["readelf", "-h", said["path"]], capture_output=True, text=True, timeout=60)
        assert "CORE (Core file)" in head.stdout, head.stdout + head.stderr
        unharmed(t)
