"""Snapshot dumps on Linux: the target is stopped only while a copy-on-write child is made, and never notices.

The target (snapshot_target.c) has threads blocked in nanosleep, read on a pipe, a futex (condition
variable), epoll_wait and accept, a busy thread whose counter dates the core, a SIGCHLD handler and a
thread looping on waitpid(-1). Everything is checked from outside: the target's own report of what
each call returned, /proc (children, PPid, TracerPid, State, the blocked call's registers in
/proc/TID/syscall, SigBlk), gdb on the core, and the core's bytes read through its program headers.
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import dumplib
from dumplib._linux.backend import STOP_NICE
from helpers import require
from linuxrig import build_source, dumplib_cli, gdb, have, pids_cgroup_v1, proc_status

pytestmark = pytest.mark.linux

HERE = Path(__file__).resolve().parent
#: Slack on timing comparisons: two cores shared with other work.
SLACK = 0.25
WORKERS = ("s-sleeper", "s-pipe", "s-cond", "s-epoll", "s-accept")
FUNCTIONS = {"s-sleeper": "snap_sleeper", "s-pipe": "snap_pipe_reader", "s-cond": "snap_cond_waiter",
             "s-epoll": "snap_epoll_waiter", "s-accept": "snap_acceptor", "s-busy": "snap_busy",
             "s-reaper": "snap_reaper", "s-ticker": "snap_ticker"}
RESTART_SYSCALL = 219
#: struct user_regs_struct (x86-64), as NT_PRSTATUS holds it.
USER_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
             "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")
#: What solo_target's spin loop keeps in these registers (solo_target.c).
SPIN_REGS = {"rbx": 0x1111111111111111, "rdx": 0x2222222222222222, "rsi": 0x3333333333333333,
             "rdi": 0x4444444444444444, "r8": 0x5555555555555555, "r9": 0x6666666666666666,
             "r10": 0x7777777777777777, "r11": 0x7888888888888888, "r12": 0x7999999999999999,
             "r13": 0x7AAAAAAAAAAAAAAA, "r14": 0x7BBBBBBBBBBBBBBB}


def _compile(tmp_path_factory, name: str) -> Path:
    return build_source(tmp_path_factory.mktemp(name), HERE / f"{name}.c")


@pytest.fixture(scope="session")
def snap_exe(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory, "snapshot_target")


@pytest.fixture(scope="session")
def solo_exe(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory, "solo_target")


@pytest.fixture(scope="session")
def seccomp_exe(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory, "seccomp_target")


# -- the target, seen from outside ----------------------------------------------------------------------
class Snap:
    def __init__(self, proc: subprocess.Popen, exe: Path) -> None:
        self.proc = proc
        self.exe = exe
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the snapshot target did not start"
        self.info = json.loads(line)
        self.pid = int(self.info["pid"])

    def ask(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def tids(self) -> Dict[str, int]:
        """Thread name -> tid (the workers name themselves)."""
        out = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with open(f"/proc/{self.pid}/task/{tid}/comm") as f:
                out[f.read().strip()] = int(tid)
        return out


@contextlib.contextmanager
def snapshot_target(exe: Path, *args: str) -> Iterator[Snap]:
    proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield Snap(proc, exe)
    finally:
        proc.kill()
        proc.wait()


def blocked_call(pid: int, tid: int) -> Optional[Tuple[int, int, int, int]]:
    """(syscall nr, first argument, sp, pc) of a thread asleep in a system call, per the kernel; None otherwise."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) != 9 or not fields[0].isdigit():  # "running", or -1 (stopped outside a call)
        return None
    return int(fields[0]), int(fields[1], 16), int(fields[7], 16), int(fields[8], 16)


def expected_call(snap: Snap, name: str, call: Tuple[int, int, int, int], *, after: bool = False) -> bool:
    """Whether *call* is the one worker *name* blocks in (after a stop, nanosleep is restart_syscall)."""
    nr, arg0 = call[0], call[1]
    info = snap.info
    if name == "s-sleeper":
        return nr == 230 or nr == 35 or (after and nr == RESTART_SYSCALL)
    if name == "s-pipe":
        return nr in (0, 17) and arg0 == info["pipe_read"]
    if name == "s-cond":
        return nr == 202 and info["cond_address"] <= arg0 < info["cond_address"] + 48
    if name == "s-epoll":
        return nr in (232, 281, 441) and arg0 == info["epfd"]
    if name == "s-accept":
        return nr in (43, 288) and arg0 == info["listen_fd"]
    raise AssertionError(name)


Call = Tuple[int, int, int, int]


def wait_until_blocked(snap: Snap, *, after: bool = False, timeout: float = 15.0) -> Dict[str, Call]:
    """Every worker asleep in its own call; returns their (nr, arg0, sp, pc) as /proc shows them."""
    tids = snap.tids()
    deadline = time.monotonic() + timeout
    # After the dump the sleeper may have slept its time out already; the others wait for the test.
    names = [n for n in WORKERS if not (after and n == "s-sleeper")]
    while True:
        calls = {name: blocked_call(snap.pid, tids[name]) for name in names}
        if all(c is not None and expected_call(snap, n, c, after=after) for n, c in calls.items()):
            return calls  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"the workers are not blocked in their calls: {calls}")
        time.sleep(0.005)


def sig_blocked(pid: int, tid: int) -> int:
    return int(proc_status_of(pid, tid)["SigBlk"], 16)


def stable_masks(pid: int, tids: List[int]) -> Dict[int, int]:
    """Each thread's SigBlk once two reads 50 ms apart agree (within 10 s): a thread glibc is still
    starting runs with every signal blocked until it takes its creator's mask, and a mask read in that
    moment is not the one the dump must keep (seen once: all blocked before, 0 after)."""
    deadline = time.monotonic() + 10
    last = {tid: sig_blocked(pid, tid) for tid in tids}
    while True:
        time.sleep(0.05)
        now = {tid: sig_blocked(pid, tid) for tid in tids}
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def proc_status_of(pid: int, tid: int) -> Dict[str, str]:
    with open(f"/proc/{pid}/task/{tid}/status", errors="backslashreplace") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def processes() -> Iterator[Tuple[int, Dict[str, str], Optional[str]]]:
    """(pid, status, exe) of every process now (exe None where unreadable, e.g. a zombie)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = proc_status(int(entry))
        except OSError:
            continue
        try:
            exe: Optional[str] = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            exe = None
        yield int(entry), st, exe


def strangers(snap: Snap) -> List[Tuple[int, str, str]]:
    """Processes other than the target that are its children or run its program: (pid, State, PPid)."""
    exe = os.path.realpath(snap.exe)
    return [(pid, st["State"], st["PPid"]) for pid, st, path in processes()
            if pid != snap.pid and (st.get("PPid") == str(snap.pid) or path == exe)]


def stalled_snapshot_dump(snap: Snap, *flags: str, stderr: object = subprocess.DEVNULL
                          ) -> Tuple[subprocess.Popen, int]:
    """`dumplib dump PID - -k full --snapshot FLAGS` writing into a pipe nobody reads yet, once its
    snapshot child exists: (the dumper, the pipe's read end). The write stalls on the pipe while the
    child holds the memory."""
    read_end, write_end = os.pipe()
    dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(snap.pid), "-", "-k", "full",
                               "--snapshot", *flags], stdout=write_end, stderr=stderr, text=True)
    os.close(write_end)
    deadline = time.monotonic() + 60
    try:
        while not strangers(snap):
            assert dumper.poll() is None, f"the dumper ended ({dumper.returncode}) before a snapshot was seen"
            assert time.monotonic() < deadline, "no snapshot child appeared"
            time.sleep(0.01)
    except BaseException:
        dumper.kill()
        dumper.wait()
        os.close(read_end)
        raise
    return dumper, read_end


def children_of(pid: int) -> List[int]:
    out: List[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def wait_left_alone(snap: Snap, timeout: float = 10.0) -> None:
    """After dumplib was killed: its snapshot tracer process (which outlives it) lets the target go,
    kills the snapshot and has the target reap it, on its own. Wait (bounded) until nothing of the
    dump is left: no child or copy of the target, no thread traced or stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not strangers(snap):
                assert_free(snap)
                return
        except AssertionError:
            pass
        time.sleep(0.02)
    assert strangers(snap) == [], f"{timeout:g} s after dumplib was killed, the target still has {strangers(snap)}"
    assert_free(snap)


def assert_free(snap: Snap) -> None:
    """No thread of the target is traced or stopped; it is not a zombie."""
    for tid in os.listdir(f"/proc/{snap.pid}/task"):
        st = proc_status_of(snap.pid, int(tid))
        assert st["TracerPid"] == "0", (tid, st["Name"], st["TracerPid"])
        assert st["State"][0] not in "tTZX", (tid, st["Name"], st["State"])


# -- the core, read through its own headers -------------------------------------------------------------
class Core:
    """An ELF core's PT_LOAD bytes and NT_PRSTATUS notes, parsed here from the ELF and kernel layouts."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        d = self.data
        assert d[:4] == b"\x7fELF" and struct.unpack_from("<H", d, 16)[0] == 4, "not an ELF core"
        phoff, = struct.unpack_from("<Q", d, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", d, 0x36)
        if phnum == 0xFFFF:
            shoff, = struct.unpack_from("<Q", d, 0x28)
            phnum, = struct.unpack_from("<I", d, shoff + 44)
        self.loads: List[Tuple[int, int, int]] = []  # (vaddr, offset, filesz)
        self.threads: Dict[int, Dict[str, int]] = {}
        for i in range(phnum):
            p_type, _, off, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", d, phoff + i * phentsize)
            if p_type == 1:
                self.loads.append((vaddr, off, filesz))
            elif p_type == 4:
                self._notes(off, filesz)

    def _notes(self, off: int, size: int) -> None:
        end = off + size
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", self.data, off)
            desc = off + 12 + (namesz + 3) // 4 * 4
            if ntype == 1 and descsz >= 336:  # NT_PRSTATUS: sighold @24, pid @32, regs @112
                regs = struct.unpack_from("<27Q", self.data, desc + 112)
                pid, = struct.unpack_from("<i", self.data, desc + 32)
                self.threads[pid] = {"sighold": struct.unpack_from("<Q", self.data, desc + 24)[0],
                                     "rip": regs[16], "rsp": regs[19], "orig_rax": regs[15], "rax": regs[10],
                                     **{name: regs[i] for i, name in enumerate(USER_REGS)}}
            off = desc + (descsz + 3) // 4 * 4

    def read(self, address: int, length: int) -> Optional[bytes]:
        for vaddr, off, filesz in self.loads:
            if vaddr <= address and address + length <= vaddr + filesz:
                return bytes(self.data[off + address - vaddr: off + address - vaddr + length])
        return None

    def cstring(self, address: int) -> Optional[bytes]:
        raw = self.read(address, 64)
        return raw.split(b"\0")[0] if raw is not None else None

    def u64(self, address: int) -> Optional[int]:
        raw = self.read(address, 8)
        return struct.unpack("<Q", raw)[0] if raw is not None else None

    def contains(self, needle: bytes) -> bool:
        return any(self.data.find(needle, off, off + filesz) >= 0 for _, off, filesz in self.loads)


# -- one round: arm, wait until blocked, dump, wake, report ---------------------------------------------
@dataclass
class Round:
    number: int
    sleep_ms: int
    tids: Dict[str, int]
    before: Dict[str, Tuple[int, int, int, int]]
    sigblk: Dict[int, int]
    result: Dict[str, object]
    core: Core
    report: Dict[str, object]
    strangers_after: List[Tuple[int, str, str]] = field(default_factory=list)
    children_after: List[int] = field(default_factory=list)
    blocked_after: Dict[str, Tuple[int, int, int, int]] = field(default_factory=dict)
    payloads: Dict[str, str] = field(default_factory=dict)
    sigblk_after: Dict[int, int] = field(default_factory=dict)
    pid: int = 0
    #: The dump returned before the sleeper's time was up: it surely slept through the stop.
    sleeper_asleep_at_stop: bool = True


Dumper = Callable[[int, Path], Dict[str, object]]


def api_dump(snapshot: "bool | str" = True, **options: object) -> Dumper:
    def run(pid: int, out: Path) -> Dict[str, object]:
        result = dumplib.create_dump(pid, str(out), "full", snapshot=snapshot, **options)  # type: ignore[arg-type]
        return result.to_dict()
    return run


def cli_dump(*flags: str) -> Dumper:
    def run(pid: int, out: Path) -> Dict[str, object]:
        done = dumplib_cli("dump", str(pid), str(out), "-k", "full", *flags, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    return run


def wake_everyone(snap: Snap, number: int) -> Dict[str, str]:
    """Give every blocked call what it waits for, from outside; returns what each should receive."""
    payloads = {"s-pipe": f"pipe-data-{number}-xyzzy", "s-epoll": f"E{number}", "s-accept": f"conn-{number}"}
    fd = os.open(f"/proc/{snap.pid}/fd/{snap.info['pipe_write']}", os.O_WRONLY)
    try:
        os.write(fd, payloads["s-pipe"].encode())
    finally:
        os.close(fd)
    fd = os.open(f"/proc/{snap.pid}/fd/{snap.info['epoll_write']}", os.O_WRONLY)
    try:
        os.write(fd, payloads["s-epoll"].encode())
    finally:
        os.close(fd)
    with socket.create_connection(("127.0.0.1", int(snap.info["port"])), timeout=10) as s:
        s.sendall(payloads["s-accept"].encode())
    assert snap.ask("wake") == "woken"
    return payloads


def snapshot_round(snap: Snap, outdir: Path, number: int, sleep_ms: int, dump: Dumper) -> Round:
    armed_at = time.monotonic()
    assert snap.ask(f"arm {number} {sleep_ms}") == "armed"
    tids = snap.tids()
    before = wait_until_blocked(snap)
    deadline = time.monotonic() + 10
    while True:  # the main thread, its answer given, goes back to wait for the test's next line
        main = blocked_call(snap.pid, snap.pid)
        if main is not None and main[:2] == (0, 0):
            break
        assert time.monotonic() < deadline, f"the main thread does not wait in read(0): {main}"
        time.sleep(0.005)
    before["main"] = main
    sigblk = stable_masks(snap.pid, list(tids.values()))
    out = outdir / f"round-{number}.core"
    result = dump(snap.pid, out)
    rnd = Round(number, sleep_ms, tids, before, sigblk, result, Core(str(result["path"])), {})
    rnd.sleeper_asleep_at_stop = time.monotonic() < armed_at + sleep_ms / 1000
    rnd.pid = snap.pid
    # Before anything wakes them: the target is free, childless, and its calls are still waiting.
    rnd.strangers_after = strangers(snap)
    rnd.sigblk_after = {tid: sig_blocked(snap.pid, tid) for tid in tids.values()}
    rnd.children_after = children_of(snap.pid)
    assert_free(snap)
    rnd.blocked_after = wait_until_blocked(snap, after=True, timeout=5.0)
    rnd.payloads = wake_everyone(snap, number)
    rnd.report = json.loads(snap.ask("report"))
    return rnd


# -- the claims, one function each, so each test names what it proves -----------------------------------
def check_calls_completed(rnd: Round) -> None:
    rep = rnd.report
    workers = dict(zip(WORKERS, rep["workers"]))  # type: ignore[arg-type]
    assert rep["woke"] == len(WORKERS), rep
    for i, name in enumerate(WORKERS):
        w = workers[name]
        assert w["errno"] == 7000 + i, f"{name}: errno changed across the snapshot: {w}"
        assert w["mask_ok"] == 1, f"{name}: its signal mask changed across the snapshot: {w}"
    sleeper = workers["s-sleeper"]
    assert sleeper["rc"] == 0 and sleeper["elapsed_ns"] >= rnd.sleep_ms * 1_000_000, \
        f"nanosleep did not sleep its full {rnd.sleep_ms} ms: {sleeper}"
    pipe = workers["s-pipe"]
    assert pipe["rc"] == len(rnd.payloads["s-pipe"]) and pipe["data"] == rnd.payloads["s-pipe"], pipe
    assert workers["s-cond"]["rc"] == 0, workers["s-cond"]
    assert workers["s-epoll"]["rc"] == 1 and workers["s-epoll"]["data"] == rnd.payloads["s-epoll"], workers["s-epoll"]
    assert workers["s-accept"]["rc"] >= 0 and workers["s-accept"]["data"] == rnd.payloads["s-accept"], \
        workers["s-accept"]


def check_still_blocked_after(rnd: Round) -> None:
    """Right after the dump each call is waiting again in the same call (the sleeper maybe restarted)."""
    for name in rnd.blocked_after:
        if name != "s-sleeper":
            assert rnd.blocked_after[name][:2] == rnd.before[name][:2], \
                (name, rnd.before[name], rnd.blocked_after[name])


def check_never_noticed(rnd: Round) -> None:
    """No SIGCHLD, nothing for waitpid(-1, WNOHANG), no child or copy of the target left behind."""
    rep = rnd.report
    assert rep["sigchld"] == 0, \
        f"the target's SIGCHLD handler ran {rep['sigchld']} times (from pid {rep['sigchld_pid']})"
    assert rep["reaped"] == [], f"the target's waitpid(-1, WNOHANG) loop reaped {rep['reaped']}"
    assert rep["saw_child"] == 0, f"the target's waitpid(-1, WNOHANG) loop saw a child {rep['saw_child']} times"
    assert rnd.children_after == [], f"the target has children after the dump: {rnd.children_after}"
    assert rnd.strangers_after == [], f"child or copy of the target left after the dump: {rnd.strangers_after}"


def check_wall_loop_never_reaped(rnd: Round) -> None:
    """waitpid(-1, __WALL|WNOHANG) waits for clone children too (exit signal 0 hides nothing from it): it
    must still never get the snapshot, which would be a pid the program never made."""
    reaped = [pid for pid, _ in rnd.report["reaped_wall"]]
    assert reaped == [], f"the target's waitpid(-1, __WALL|WNOHANG) loop reaped {reaped}: the snapshot child"


def check_masks_unchanged(rnd: Round) -> None:
    """Every thread's signal mask (SigBlk, per the kernel) is what it was before the dump, the one that
    made the clone() included (busy or idle threads have no check of their own)."""
    changed = {tid: (hex(before), hex(rnd.sigblk_after.get(tid, -1))) for tid, before in rnd.sigblk.items()
               if rnd.sigblk_after.get(tid) != before}
    assert not changed, f"signal masks changed by the snapshot (tid: before, after): {changed}"


def check_notes_are_the_real_threads(rnd: Round) -> None:
    """One NT_PRSTATUS per real thread (by tid), with the registers the kernel shows for its blocked call."""
    core = rnd.core
    assert sorted(core.threads) == sorted(rnd.tids.values()), (sorted(core.threads), rnd.tids)
    for name in WORKERS + ("main",):
        if name == "s-sleeper" and not rnd.sleeper_asleep_at_stop:
            continue  # the sleep may have ended before the stop (a slow start of the command)
        regs = core.threads[rnd.tids[name] if name != "main" else rnd.pid]
        nr, _, sp, pc = rnd.before[name]
        assert regs["rsp"] == sp, f"{name}: core rsp {regs['rsp']:#x}, the kernel said {sp:#x}"
        assert regs["rip"] in (pc, pc - 2), f"{name}: core rip {regs['rip']:#x}, the kernel said {pc:#x}"
        assert regs["orig_rax"] == nr, f"{name}: core orig_rax {regs['orig_rax']}, blocked in {nr}"


def check_signal_masks_in_notes(rnd: Round) -> None:
    """pr_sighold of each thread's NT_PRSTATUS is that thread's mask (SigBlk), as in the kernel's own core."""
    for tid, blocked in rnd.sigblk.items():
        held = rnd.core.threads[tid]["sighold"]
        assert held == blocked, f"thread {tid}: pr_sighold {held:#x} in the core, SigBlk {blocked:#x} in /proc"


def check_instant(rnd: Round, snap: Snap) -> None:
    """The core is the memory of one instant: the stop. Before-markers in, after-markers out."""
    core, info, rep = rnd.core, snap.info, rnd.report
    assert core.cstring(info["before_address"]) == f"DUMPLIB-BEFORE-{snap.pid}-{rnd.number}".encode()
    counter = core.u64(info["live_address"])
    assert counter is not None, "the busy thread's counter is not in the core"
    assert 0 < counter < rep["counter"], (counter, rep["counter"])
    # The busy thread was stopped when the core's memory was taken: its value ends an off-CPU stretch.
    ends = [n for n, _ in rep["gaps"] if n in (counter, counter + 1)]  # type: ignore[union-attr]
    assert ends, (f"the core's counter {counter} is not where the busy thread was stopped (it ran on: memory"
                  f" read after the target resumed?); stretches: {rep['gaps'][:20]}")
    written_after = f"DUMPLIB-AFTER-{snap.pid}-{ends[0]}".encode()
    assert not core.contains(written_after), f"{written_after!r}, written after the target resumed, is in the core"


def check_dontfork_memory(rnd: Round, snap: Snap) -> None:
    """MADV_DONTFORK / MADV_WIPEONFORK memory is absent or zero in a child: it must come from the stopped target."""
    core, info = rnd.core, snap.info
    counter = core.u64(info["live_address"])
    assert counter is not None
    for what, key in (("DONTFORK", "dontfork_address"), ("WIPEONFORK", "wipeonfork_address")):
        marker = core.cstring(info[key])
        assert marker == f"DUMPLIB-{what}-{snap.pid}-{rnd.number}".encode(), \
            f"MADV_{what} memory in the core: {marker!r}"
        value = core.u64(info[key] + 64)
        # Written right after the counter in the same loop: at the instant of the stop it is one behind at most.
        assert value in (counter, counter - 1), \
            f"MADV_{what} counter {value} is not of the snapshot's instant ({counter})"


def shared_warning(rnd: Round) -> List[str]:
    return [w for w in rnd.result["warnings"] if "shared" in w.lower()]  # type: ignore[union-attr]


def check_shared_memory(rnd: Round, snap: Snap) -> None:
    """MAP_SHARED memory is the same pages in the child, so it changes once the target runs: the core holds
    it as at the snapshot's instant (read before the target resumed), or the result says it does not."""
    core, info = rnd.core, snap.info
    counter = core.u64(info["live_address"])
    assert counter is not None
    marker = core.cstring(info["shared_address"])
    assert marker == f"DUMPLIB-SHARED-{snap.pid}-{rnd.number}".encode(), f"MAP_SHARED memory in the core: {marker!r}"
    value = core.u64(info["shared_address"] + 64)
    if value not in (counter, counter - 1):
        assert shared_warning(rnd), (f"MAP_SHARED counter {value} is not of the snapshot's instant ({counter}) and"
                                     f" no warning says so: {rnd.result['warnings']}")


def check_result(rnd: Round) -> None:
    res = rnd.result
    assert res["snapshot"] is True, res
    assert isinstance(res["stopped_seconds"], float) and 0 < res["stopped_seconds"] < 5.0, res
    assert isinstance(res["snapshot_bytes"], int) and res["snapshot_bytes"] >= 0, res


def check_sidecar(rnd: Round) -> None:
    res = rnd.result
    assert res["sidecar"], res
    data = json.loads(Path(str(res["sidecar"])).read_text())
    assert data["snapshot"] is True
    assert data["snapshot_bytes"] == res["snapshot_bytes"]
    assert data["stopped_seconds"] == pytest.approx(res["stopped_seconds"], abs=1e-3)


def check_with_gdb(rnd: Round, snap: Snap) -> None:
    """gdb sees every real thread (by LWP), each blocked one inside its own function, and its registers."""
    out = gdb(str(snap.exe), str(rnd.result["path"]), "info threads", "thread apply all bt",
              "thread apply all info registers rip rsp")
    sections = re.split(r"\nThread \d+ \(", out)
    by_lwp: Dict[int, str] = {}
    for sec in sections[1:]:
        m = re.search(r"LWP (\d+)\)", sec.split("\n", 1)[0])
        if m:
            by_lwp[int(m.group(1))] = by_lwp.get(int(m.group(1)), "") + sec
    assert set(by_lwp) == set(rnd.tids.values()), (sorted(by_lwp), rnd.tids, out[-3000:])
    for name in WORKERS:
        function = FUNCTIONS[name]
        assert function in by_lwp[rnd.tids[name]], f"gdb's backtrace of {name} does not name {function}:\n{out}"
    for name in WORKERS:
        sec = by_lwp[rnd.tids[name]]
        if name == "s-sleeper" and not rnd.sleeper_asleep_at_stop:
            continue  # its sleep ended before the stop (a slow start under load): it waits elsewhere now
        rsp = re.search(r"^rsp\s+(0x[0-9a-f]+)", sec, re.M)
        assert rsp and int(rsp.group(1), 16) == rnd.before[name][2], (name, sec)
        assert re.search(r"^rip\s+0x[0-9a-f]+", sec, re.M), (name, sec)


def check_with_eu_stack(rnd: Round, snap: Snap) -> None:
    """elfutils, a second unwinder: every real thread by tid, each blocked one inside its own function."""
    require(have("eu-stack"), "eu-stack is not installed (apt-get install elfutils)")
    done = subprocess.run(["eu-stack", "--core", str(rnd.result["path"]), "-e", str(snap.exe)],
                          capture_output=True, text=True, timeout=120)
    stacks = {int(m.group(1)): m.group(2) for m in re.finditer(r"^TID (\d+):\n(.*?)(?=^TID |\Z)",
                                                               done.stdout, re.M | re.S)}
    assert set(stacks) == set(rnd.tids.values()), (sorted(stacks), rnd.tids, done.stderr[-2000:])
    for name in WORKERS:
        assert FUNCTIONS[name] in stacks[rnd.tids[name]], f"eu-stack: {name}:\n{stacks[rnd.tids[name]]}"


def check_all(rnd: Round, snap: Snap) -> None:
    check_result(rnd)
    check_never_noticed(rnd)
    check_still_blocked_after(rnd)
    check_calls_completed(rnd)
    check_masks_unchanged(rnd)
    check_notes_are_the_real_threads(rnd)
    check_instant(rnd, snap)
    check_dontfork_memory(rnd, snap)
    check_shared_memory(rnd, snap)


# -- tests ----------------------------------------------------------------------------------------------
def test_blocked_calls_complete_as_if_nothing_happened_and_gdb_sees_the_real_threads(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 1, 3000, api_dump(True))
        check_result(rnd)
        check_sidecar(rnd)
        check_never_noticed(rnd)
        check_still_blocked_after(rnd)
        check_calls_completed(rnd)
        check_masks_unchanged(rnd)
        check_notes_are_the_real_threads(rnd)
        check_with_gdb(rnd, snap)
        check_with_eu_stack(rnd, snap)
        assert_free(snap)


@pytest.mark.parametrize("kind", ["mini", "miniplus", "triage"])
def test_smaller_kinds_from_a_snapshot_keep_every_threads_backtrace(snap_exe, outdir, kind):
    """The smaller kinds take stacks (not the heap) around each thread's stack pointer: taken from the
    snapshot, they are still the real threads' stacks."""
    with snapshot_target(snap_exe, "--heap", "32") as snap:
        def dump(pid: int, out: Path) -> Dict[str, object]:
            return dumplib.create_dump(pid, str(out), kind, snapshot=True).to_dict()
        rnd = snapshot_round(snap, outdir, 1, 2000, dump)
        check_result(rnd)
        check_never_noticed(rnd)
        check_calls_completed(rnd)
        check_notes_are_the_real_threads(rnd)
        check_with_gdb(rnd, snap)


def test_core_holds_the_instant_of_the_snapshot_not_what_the_target_wrote_after(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 7, 500, api_dump(True))
        check_result(rnd)
        check_instant(rnd, snap)


def test_dontfork_and_wipeonfork_memory_is_in_the_core_as_at_the_snapshot(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 3, 500, api_dump(True))
        check_result(rnd)
        check_dontfork_memory(rnd, snap)


def test_small_shared_memory_is_read_at_the_snapshots_instant(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 2, 500, api_dump(True))
        check_result(rnd)
        check_shared_memory(rnd, snap)
        assert not shared_warning(rnd), rnd.result["warnings"]


def test_large_shared_memory_read_after_resume_is_marked_in_the_result_and_the_sidecar(snap_exe, outdir):
    """More MAP_SHARED memory than is worth holding the target for is read after it resumes: then the
    result's warnings and the sidecar (the issue: "mark it in the sidecar") say so."""
    with snapshot_target(snap_exe, "--shared", "96") as snap:
        rnd = snapshot_round(snap, outdir, 1, 500, api_dump(True))
        check_result(rnd)
        check_calls_completed(rnd)
        check_shared_memory(rnd, snap)
        assert shared_warning(rnd), f"96 MiB of MAP_SHARED memory and no warning: {rnd.result['warnings']}"
        data = json.loads(Path(str(rnd.result["sidecar"])).read_text())
        said = json.dumps({k: v for k, v in data.items() if k not in ("command_line", "process_name", "dump")})
        assert "shared" in said.lower(), f"the sidecar does not mark the shared memory read after resume:\n{said}"


def test_snapshot_bytes_is_what_the_target_rewrote_while_the_snapshot_lived(snap_exe, tmp_path):
    """The cost a snapshot reports is real: the target rewrites its 64 MiB heap while dumplib still holds
    the snapshot (its stream stalled on a full pipe), each page is copied, and snapshot_bytes says at
    least that much; the streamed core still holds the heap as it was at the snapshot's instant."""
    with snapshot_target(snap_exe, "--heap", "64") as snap:
        heap = int(snap.info["heap_address"])
        dumper, read_end = stalled_snapshot_dump(snap, "--json", stderr=subprocess.PIPE)
        streamed = tmp_path / "streamed.core"
        try:
            with open(streamed, "wb") as out, os.fdopen(read_end, "rb") as stream:
                # The first MiB (the header and notes) is taken at once, then the stream stalls: the
                # target must run (test_a_stalled_stream_does_not_hold_the_target_stopped), the snapshot live.
                while out.tell() < 1 << 20:
                    out.write(stream.read((1 << 20) - out.tell()))
                answer = snap.ask("scribble").split()
                assert answer[0] == "scribbled", answer
                rewritten = int(answer[1])
                assert strangers(snap), "the snapshot was gone before the target rewrote its heap"
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    out.write(chunk)
            _, err = dumper.communicate(timeout=120)
        finally:
            if dumper.poll() is None:
                dumper.kill()
                dumper.wait()
        assert dumper.returncode == 0, err
        result = json.loads(err.strip().splitlines()[-1])
        assert result["snapshot"] is True, result
        assert result["snapshot_bytes"] >= 0.9 * rewritten, \
            f"the target rewrote {rewritten} bytes while the snapshot lived;" \
            f" snapshot_bytes says {result['snapshot_bytes']}"
        assert result["snapshot_bytes"] <= rewritten + (64 << 20), result["snapshot_bytes"]
        core = Core(str(streamed))
        page_100 = bytes([((4096 * 100) >> 6) & 0xFF | 1])  # as snapshot_target.c fills it
        assert core.read(heap, 1) == b"\x01" and core.read(heap + 4096 * 100, 1) == page_100, \
            "the streamed core does not hold the heap as it was at the snapshot"
        assert_free(snap)


def test_a_stalled_stream_does_not_hold_the_target_stopped(snap_exe):
    """`dumplib dump P - --snapshot | slow-reader`: nothing the output does may keep the target stopped
    once the snapshot exists, not even the core's header and notes (they are larger than a pipe holds)."""
    with snapshot_target(snap_exe, "--heap", "64") as snap:
        dumper, read_end = stalled_snapshot_dump(snap, "--max-pause", "10s")
        try:
            deadline = time.monotonic() + 3.0
            while True:
                states = {tid: proc_status_of(snap.pid, int(tid))["State"]
                          for tid in os.listdir(f"/proc/{snap.pid}/task")}
                stopped = {tid: st for tid, st in states.items() if st[0] in "tT"}
                if not stopped:
                    break
                assert time.monotonic() < deadline, (f"3 s after the snapshot was made, with nobody reading the"
                                                     f" stream, the target is still stopped: {stopped}")
                time.sleep(0.02)
        finally:
            dumper.kill()
            dumper.wait()
            os.close(read_end)
        wait_left_alone(snap)


def test_target_exiting_while_its_snapshot_is_read_leaves_a_whole_core_and_no_orphan(snap_exe, tmp_path):
    """The snapshot holds the memory, so a target that exits during the write (a crash right after the
    stop) still gets its whole core; the snapshot, now an orphan of the exited target, is not left behind."""
    with snapshot_target(snap_exe, "--heap", "64") as snap:
        exe = snap.exe
        dumper, read_end = stalled_snapshot_dump(snap, "--json", stderr=subprocess.PIPE)
        streamed = tmp_path / "exited.core"
        try:
            with open(streamed, "wb") as out, os.fdopen(read_end, "rb") as stream:
                while out.tell() < 1 << 20:
                    out.write(stream.read((1 << 20) - out.tell()))
                left = strangers(snap)
                snap.proc.kill()  # the target dies while its snapshot is being read
                snap.proc.wait()
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    out.write(chunk)
            _, err = dumper.communicate(timeout=120)
        finally:
            if dumper.poll() is None:
                dumper.kill()
                dumper.wait()
        deadline = time.monotonic() + 10
        alive = left
        while time.monotonic() < deadline:
            alive = [p for p, _, _ in left if os.path.exists(f"/proc/{p}") and proc_status(p)["State"][0] != "Z"]
            if not alive:
                break
            time.sleep(0.05)
        assert not alive, f"the snapshot {alive} lives on after its target and dumplib are gone"
        assert dumper.returncode == 0, err
        assert json.loads(err.strip().splitlines()[-1])["snapshot"] is True
        out = gdb(str(exe), str(streamed), "info threads", "thread apply all bt")
        for function in WORKERS:
            assert FUNCTIONS[function] in out, out[-3000:]


def test_snapshot_of_a_process_whose_main_thread_called_pthread_exit(tmp_path_factory, tmp_path, outdir):
    """The leader is a zombie (it cannot make the clone()); a live thread does, and the target runs on."""
    exe = build_source(tmp_path_factory.mktemp("pausebin"), HERE / "shapes_pause" / "pause_target.c")
    heartbeat = tmp_path / "heartbeat"
    proc = subprocess.Popen([str(exe), str(heartbeat), "--pthread-exit"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        pid = int(info["pid"])
        deadline = time.monotonic() + 10
        while proc_status_of(pid, pid)["State"][0] != "Z":
            assert time.monotonic() < deadline, "the main thread did not exit"
            time.sleep(0.01)
        res = dumplib.create_dump(pid, str(outdir / "z.core"), "full", snapshot=True)
        assert res.snapshot is True
        core = Core(res.path)
        assert core.read(int(info["marker_address"]), len(info["marker"])) == info["marker"].encode()
        beat = heartbeat.read_bytes()
        time.sleep(0.1)
        assert heartbeat.read_bytes() != beat, "the target does not run after the snapshot"
        for tid in os.listdir(f"/proc/{pid}/task"):
            st = proc_status_of(pid, int(tid))
            assert st["TracerPid"] == "0" and st["State"][0] in "RSZ", (tid, st["State"], st["TracerPid"])
        assert children_of(pid) == [], children_of(pid)
    finally:
        proc.kill()
        proc.wait()


def test_waitpid_wall_loop_never_reaps_the_snapshot_child(snap_exe, outdir):
    """waitpid(-1, __WALL|WNOHANG) waits for clone children too (exit signal 0 hides nothing from it): it
    must never collect the snapshot, a pid the program never made. Several rounds: it is a race."""
    with snapshot_target(snap_exe, "--heap", "16") as snap:
        for number in range(1, 6):
            rnd = snapshot_round(snap, outdir, number, 300, api_dump(True, sidecar=False))
            check_result(rnd)
            check_never_noticed(rnd)
            check_wall_loop_never_reaped(rnd)


def test_stopped_seconds_is_the_pause_the_target_saw_and_far_below_a_normal_dumps(snap_exe, outdir):
    with snapshot_target(snap_exe, "--heap", "384") as snap:
        normal = snapshot_round(snap, outdir, 1, 200, api_dump(False))
        snap_rnd = snapshot_round(snap, outdir, 2, 200, api_dump(True))
    check_result(snap_rnd)
    assert normal.result["snapshot"] is False
    n_stop, s_stop = normal.result["stopped_seconds"], snap_rnd.result["stopped_seconds"]
    n_seen, s_seen = normal.report["max_gap_us"] / 1e6, snap_rnd.report["max_gap_us"] / 1e6  # type: ignore[operator]
    # What dumplib reports agrees with the pauses the target's own 1 ms ticker saw. A snapshot stops the
    # target twice (the clone, then the reaping) and reports both; the ticker's longest gap is one of them.
    assert s_seen - SLACK <= s_stop <= 2 * s_seen + SLACK, \
        f"snapshot: stopped_seconds {s_stop:.3f}, the target's longest pause {s_seen:.3f}"
    assert abs(n_seen - n_stop) <= SLACK + 0.5 * n_stop, f"normal: stopped_seconds {n_stop:.3f}, seen {n_seen:.3f}"
    assert s_stop < n_stop and s_seen < n_seen, (f"a snapshot stopped the target {s_stop:.3f} s (seen {s_seen:.3f}),"
                                                 f" a normal dump {n_stop:.3f} s (seen {n_seen:.3f})")
    assert s_stop < 2.0


def test_fifty_snapshots_in_a_row_every_one_correct(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        for number in range(1, 51):
            rnd = snapshot_round(snap, outdir, number, 500, api_dump(True, sidecar=False))
            try:
                check_all(rnd, snap)
                if number % 5 == 0:  # gdb takes ~0.3 s: every fifth round
                    check_with_gdb(rnd, snap)
            except AssertionError as e:
                raise AssertionError(f"round {number}: {e}") from e
            os.remove(str(rnd.result["path"]))
        assert_free(snap)


def test_api_auto_takes_a_snapshot_where_one_can_be_taken(snap_exe, outdir):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 1, 500, api_dump("auto"))
        check_all(rnd, snap)
        assert rnd.result["warnings"] == [], rnd.result["warnings"]


@pytest.mark.parametrize("flag", ["--snapshot", "--snapshot=auto"])
def test_cli_snapshot_flag_takes_a_snapshot(snap_exe, outdir, flag):
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 1, 3000, cli_dump(flag))  # the sleep outlasts the command's start-up
        check_all(rnd, snap)
        check_sidecar(rnd)


def test_core_notes_carry_each_threads_own_signal_mask(snap_exe, outdir):
    """Every worker blocks its own signals (SIGUSR2 and a real-time signal of its own): the core says so
    per thread, from the threads themselves, not from the snapshot child (which has one thread)."""
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 1, 500, api_dump(True))
        check_result(rnd)
        assert len(set(rnd.sigblk.values())) > len(WORKERS), rnd.sigblk
        check_signal_masks_in_notes(rnd)


def vdso_bytes(pid: int) -> Tuple[int, bytes]:
    """The [vdso] of process *pid*: its address and its bytes, read through /proc/PID/mem."""
    with open(f"/proc/{pid}/maps") as f:
        line = next(line for line in f if line.rstrip().endswith("[vdso]"))
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(lo)
        return lo, mem.read(hi - lo)


def test_the_whole_vdso_is_in_the_core_so_gdb_unwinds_a_thread_stopped_inside_it(snap_exe, outdir):
    """The snapshot's clone() runs at a syscall instruction of [vdso], and a busy thread calling
    clock_gettime is often stopped inside it: the core must hold all of [vdso] (its ELF image, with the
    unwind tables gdb needs), byte for byte, and gdb must unwind the busy thread to its own function."""
    with snapshot_target(snap_exe) as snap:
        rnd = snapshot_round(snap, outdir, 1, 500, api_dump(True))
        check_result(rnd)
        lo, image = vdso_bytes(snap.pid)
        assert image[:4] == b"\x7fELF"
        stored = rnd.core.read(lo, len(image))
        assert stored == image, (f"[vdso] ({len(image)} bytes at {lo:#x}) is not whole in the core: "
                                 + ", ".join(f"{v:#x}+{n:#x}" for v, _, n in rnd.core.loads if v == lo))
        out = gdb(str(snap.exe), str(rnd.result["path"]), "thread apply all bt")
        busy = out.split(f"(LWP {rnd.tids['s-busy']})):", 1)[-1].split("\nThread ", 1)[0]
        assert "snap_busy" in busy, f"gdb cannot unwind the busy thread to snap_busy:\n{busy}"


# -- one thread: the snapshot's clone() is made in the middle of each kind of call ------------------------
#: call -> (system call numbers it may wait in, ms, what it must return: (rc, errno) and the least time).
#: The timed calls wait 5 s: the dump must stop the thread while it is still in the call, and at load 10
#: on two CPUs the dump's start (its helper's interpreter, the smaps read before the stop) took over the
#: 2 s they had waited before (the poll case failed so: the call had returned before the stop).
SOLO = {
    "nanosleep": ({230, 35}, 5000, (0, 4242), 5.0),      # -ERESTART_RESTARTBLOCK: restart_syscall
    "futex": ({202}, 5000, (-1, 110), 5.0),              # timed wait: restart block too; ETIMEDOUT at its time
    "poll": ({7, 271}, 5000, (0, 4242), 5.0),            # timeout restarted with what is left
    "read": ({0}, 0, None, 0.0),                         # -ERESTARTSYS: re-entered as is
    "accept": ({43, 288}, 0, None, 0.0),
    "pause": ({34, 130, 271}, 0, (-1, 4), 0.0),          # -ERESTARTNOHAND: EINTR only once a handler ran
    # User mode: every register exactly as it was. It spins until SIGUSR1, sent once the dump is over: a
    # timed spin (1.5 s) could end before a slow snapshot on a loaded machine, which then found the
    # thread out of the loop.
    "spin": (set(), 60000, (0, 4242), 0.3),
}


def function_range(exe: Path, pid: int, name: str) -> Tuple[int, int]:
    """[start, end) of function *name* of *exe* as loaded in process *pid* (nm -S, plus the load base)."""
    require(have("nm"), "nm is not installed (apt-get install binutils)")
    line = next(l for l in subprocess.run(["nm", "-S", str(exe)], capture_output=True, text=True, check=True)
                .stdout.splitlines() if l.split()[-1] == name)
    offset, size = int(line.split()[0], 16), int(line.split()[1], 16)
    with open(f"/proc/{pid}/maps") as f:
        base = min(int(l.split("-")[0], 16) for l in f if l.rstrip().endswith(str(exe)))
    return base + offset, base + offset + size


def check_spin_registers_in_core(snap: Snap, core: Core) -> None:
    """The core holds the registers the thread had when stopped, not those of the clone() it was made to
    run: stopped in the spin loop, it holds the loop's known values."""
    regs = core.threads[snap.pid]
    assert regs["orig_rax"] == (1 << 64) - 1, f"the core shows a system call ({regs['orig_rax']}) in a user-mode loop"
    lo, hi = function_range(snap.exe, snap.pid, "solo_spin_chunk")
    if lo <= regs["rip"] < hi and regs["rbx"] == SPIN_REGS["rbx"]:  # inside the loop (not its first loads)
        wrong = {k: hex(regs[k]) for k, v in SPIN_REGS.items() if regs[k] != v}
        assert not wrong, f"the core's registers are not the spinning thread's: {wrong}"


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of the target's stdout, or AssertionError after *timeout* (a call that never completes)."""
    import select
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"the target did not answer within {timeout} s"
    return proc.stdout.readline()


@pytest.mark.parametrize("call", list(SOLO))
def test_one_thread_snapshotted_in_the_middle_of_a_call_completes_it_as_the_kernel_would(solo_exe, outdir, call):
    """A one-thread target: the clone() must be injected into the very thread that is in *call*, so each
    way a call is restarted (or user code resumed with every register) is tried."""
    numbers, ms, expect, least = SOLO[call]
    with snapshot_target(solo_exe, call, str(ms)) as snap:
        deadline = time.monotonic() + 10
        if call == "spin":
            time.sleep(0.3)  # well inside the spin loop
            assert proc_status(snap.pid)["State"][0] == "R"
        else:
            while True:
                got = blocked_call(snap.pid, snap.pid)
                if got is not None and got[0] in numbers:
                    break
                assert time.monotonic() < deadline, f"not blocked in {call}: {got}"
                time.sleep(0.005)
            before = got
        res = dumplib.create_dump(snap.pid, str(outdir / "solo.core"), "full", snapshot=True)
        assert res.snapshot is True
        left = strangers(snap)
        assert left == [] and children_of(snap.pid) == [], f"child or copy of the target left after the dump: {left}"
        assert_free(snap)
        core = Core(res.path)
        assert list(core.threads) == [snap.pid]
        if call == "spin":
            check_spin_registers_in_core(snap, core)
        else:
            regs = core.threads[snap.pid]
            assert regs["rsp"] == before[2] and regs["rip"] in (before[3], before[3] - 2), (regs, before)
            assert regs["orig_rax"] == before[0], (regs, before)
        if call == "read":
            assert snap.proc.stdin is not None
            snap.proc.stdin.write("line-of-data\n")
            snap.proc.stdin.flush()
            expect = (len("line-of-data\n"), 4242)
        elif call == "accept":
            with socket.create_connection(("127.0.0.1", int(snap.info["port"])), timeout=10) as s:
                s.sendall(b"hello-accept")
            expect = (int(snap.info["listen_fd"]) + 1, 4242)
        elif call == "pause":
            time.sleep(0.1)
            os.kill(snap.pid, signal.SIGUSR1)
        elif call == "spin":
            os.kill(snap.pid, signal.SIGUSR1)  # the spin ends, the target reports
        rep = json.loads(read_line(snap.proc, 30))
        assert (rep["rc"], rep["errno"]) == expect, \
            f"{call} returned {rep} after the snapshot; expected rc, errno {expect}"
        assert rep["elapsed_ns"] >= least * 1e9, f"{call} did not wait its full {least} s: {rep}"
        assert rep["mask_ok"] == 1, f"the thread's signal mask changed across the snapshot: {rep}"
        assert rep["sigchld"] == 0 and rep["waitpid"] == -1, f"the target saw a child: {rep}"
        if call == "read":
            assert rep["data"] == "line-of-data?", rep
        if call == "accept":
            assert rep["data"] == "hello-accept", rep
        if call == "pause":
            assert rep["sigusr1"] == 1, rep
        if call == "spin":
            assert rep["sigusr1"] == 1, f"the spin ended other than by the one SIGUSR1 sent: {rep}"
            assert rep["spins"] > 0 and rep["bad"] == 0, \
                f"{rep['bad']} times a register was not what the thread put there"
        assert_free(snap)


def test_no_signal_is_lost_or_doubled_by_snapshots_taken_while_signals_arrive(solo_exe, outdir):
    """Real-time signals queue, so each one sent must run the handler exactly once: 400 are sent while
    snapshot dumps of the one thread that receives them (and makes every clone()) are taken back to back."""
    sent = 400
    with snapshot_target(solo_exe, "spin", "60000") as snap:  # spins until SIGUSR1
        time.sleep(0.2)
        # Another process sends them, so that neither this one's dumps nor its GIL pace the sender.
        sender = subprocess.Popen([sys.executable, "-c", "import os, sys, time\nfor _ in range(int(sys.argv[2])):\n"
                                   "    os.kill(int(sys.argv[1]), int(sys.argv[3])); time.sleep(0.004)",
                                   str(snap.pid), str(sent), str(int(signal.SIGRTMIN) + 1)])
        dumps = snapshots = 0
        try:
            while sender.poll() is None or snapshots < 2:
                # auto: a thread stopped on its way to a signal cannot make the clone(), and with one
                # thread and a signal every 4 ms that happens; such a dump is a normal one.
                res = dumplib.create_dump(snap.pid, str(outdir / f"s{dumps}.core"), "full", snapshot="auto",
                                          sidecar=False)
                os.remove(res.path)
                dumps += 1
                snapshots += res.snapshot
        finally:
            sender.wait(timeout=60)
        assert sender.returncode == 0
        assert_free(snap)
        time.sleep(0.1)  # the last signals sent are delivered
        os.kill(snap.pid, signal.SIGUSR1)  # the spin ends, the target reports
        rep = json.loads(read_line(snap.proc, 30))
        assert rep["rt"] == sent, (f"{sent} real-time signals sent during {dumps} dumps ({snapshots} snapshots),"
                                   f" the handler ran {rep['rt']} times")
        assert rep["bad"] == 0 and rep["sigchld"] == 0, rep


@contextlib.contextmanager
def memcg_v1(limit_above_usage: int, pid: int) -> Iterator[Path]:
    """A cgroup v1 memory cgroup (the only memory controller this machine has), below our own, holding
    *pid*, limited to its current usage plus *limit_above_usage* bytes."""
    require(os.geteuid() == 0, "making a memory cgroup needs root")
    with open("/proc/self/cgroup") as f:
        ours = next((line.strip().split(":", 2)[2] for line in f if line.split(":")[1] == "memory"), None)
    require(ours is not None and os.path.isdir(f"/sys/fs/cgroup/memory{ours}"),
            "no cgroup v1 memory controller here")
    group = Path(f"/sys/fs/cgroup/memory{ours.rstrip('/')}/dumplib-snaptest-{pid}")
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        time.sleep(0.1)
        usage = int((group / "memory.usage_in_bytes").read_text())
        (group / "memory.limit_in_bytes").write_text(str(usage + limit_above_usage))
        yield group
    finally:
        parent = group.parent / "cgroup.procs"
        for p in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                parent.write_text(p)
        group.rmdir()


@pytest.mark.parametrize("snapshot", [True, "auto"])
def test_a_memory_cgroup_without_room_for_the_snapshot_is_never_pushed_into_oom(snap_exe, outdir, snapshot):
    """The target's memory cgroup (v1 here) has 32 MiB left and it holds 128 MiB it may rewrite while the
    snapshot lives (each page then charged twice): no snapshot may be taken (True refuses, auto falls
    back), and nothing in the cgroup hits its limit."""
    with snapshot_target(snap_exe, "--heap", "128") as snap:
        with memcg_v1(32 << 20, snap.pid) as group:
            if snapshot is True:
                with pytest.raises(dumplib.TargetRefused) as caught:
                    dumplib.create_dump(snap.pid, str(outdir / "cg.core"), "full", snapshot=True)
                assert caught.value.reason == "snapshot-unavailable"
            else:
                res = dumplib.create_dump(snap.pid, str(outdir / "cg.core"), "full", snapshot="auto")
                assert res.snapshot is False and res.warnings, (res.snapshot, res.warnings)
            assert snap.proc.poll() is None, "the target was killed"
            assert int((group / "memory.failcnt").read_text()) == 0, "the cgroup hit its memory limit"
            assert_free(snap)
            assert strangers(snap) == []


@pytest.mark.parametrize("snapshot", [True, "auto"])
def test_a_target_stopped_by_sigstop_gets_no_snapshot_and_stays_stopped(snap_exe, outdir, snapshot):
    """A stopped process gains nothing from a snapshot (it is not running): True refuses, auto dumps it
    normally; either way it is left as it was, stopped (T), untraced, with no child."""
    def every_thread_stopped_untraced() -> List[Tuple[str, str, str]]:
        """The threads not (yet) in the stop, untraced: (tid, state, tracer)."""
        out = []
        for tid in os.listdir(f"/proc/{snap.pid}/task"):
            st = proc_status_of(snap.pid, int(tid))
            if st["State"][0] != "T" or st["TracerPid"] != "0":
                out.append((tid, st["State"], st["TracerPid"]))
        return out

    def settled(patience: float = 10.0) -> List[Tuple[str, str, str]]:
        # Every thread, not the first only: at load 10 one was still on its way into the group-stop (R) when
        # the dump began (the loaded CI). A thread let go by a tracer goes back into the stop from the
        # kernel, without returning to the program, but it is R until it has had a CPU to get there.
        deadline = time.monotonic() + patience
        while every_thread_stopped_untraced() and time.monotonic() < deadline:
            time.sleep(0.01)
        return every_thread_stopped_untraced()

    with snapshot_target(snap_exe) as snap:
        os.kill(snap.pid, signal.SIGSTOP)
        assert settled() == []
        try:
            if snapshot is True:
                with pytest.raises(dumplib.TargetRefused) as caught:
                    dumplib.create_dump(snap.pid, str(outdir / "st.core"), "full", snapshot=True)
                assert caught.value.reason == "snapshot-unavailable"
            else:
                res = dumplib.create_dump(snap.pid, str(outdir / "st.core"), "full", snapshot="auto")
                assert res.snapshot is False and res.warnings, (res.snapshot, res.warnings)
            assert settled() == []  # left as it was: stopped, untraced
            assert strangers(snap) == [] and children_of(snap.pid) == []
        finally:
            os.kill(snap.pid, signal.SIGCONT)
        assert snap.ask("wake") == "woken"  # it runs again


# -- where no snapshot can be taken ----------------------------------------------------------------------
@contextlib.contextmanager
def seccomp_target(exe: Path, mode: str) -> Iterator[Snap]:
    with snapshot_target(exe, mode) as snap:
        assert proc_status(snap.pid)["Seccomp"] == "2"
        yield snap


def assert_unharmed(snap: Snap) -> None:
    assert snap.proc.poll() is None, f"the target died: exit {snap.proc.returncode}"
    first = int(snap.ask("ping").split()[1])
    time.sleep(0.05)
    assert int(snap.ask("ping").split()[1]) > first, "the target's worker does not run"
    assert_free(snap)
    assert strangers(snap) == []


@pytest.mark.parametrize("mode", ["eperm", "kill"])
def test_seccomp_forbidding_clone_snapshot_true_refuses_and_the_target_lives(seccomp_exe, outdir, mode):
    with seccomp_target(seccomp_exe, mode) as snap:
        with pytest.raises(dumplib.TargetRefused) as caught:
            dumplib.create_dump(snap.pid, str(outdir / "x.core"), "full", snapshot=True)
        assert caught.value.reason == "snapshot-unavailable"
        assert os.listdir(outdir) == []
        assert_unharmed(snap)


@pytest.mark.parametrize("mode", ["eperm", "kill"])
def test_seccomp_forbidding_clone_auto_falls_back_to_a_normal_dump(seccomp_exe, outdir, mode):
    with seccomp_target(seccomp_exe, mode) as snap:
        res = dumplib.create_dump(snap.pid, str(outdir / "x.core"), "full", snapshot="auto")
        assert_unharmed(snap)
        assert res.snapshot is False and res.snapshot_bytes is None
        assert res.warnings and any("snapshot" in w for w in res.warnings), res.warnings
        out = gdb(str(snap.exe), res.path, "info threads", "thread apply all bt")
        for function in ("seccomp_worker_ticks", "seccomp_worker_sleeps", "main"):
            assert function in out, out
        assert len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP)", out, re.M)) == 3, out
        assert json.loads(Path(str(res.sidecar)).read_text())["snapshot"] is False


def test_seccomp_filter_that_allows_clone_gets_its_snapshot(seccomp_exe, outdir):
    """A container-like filter (fork, vfork and mount refused, clone allowed) does not stop a snapshot."""
    with seccomp_target(seccomp_exe, "other") as snap:
        res = dumplib.create_dump(snap.pid, str(outdir / "x.core"), "full", snapshot=True)
        assert res.snapshot is True
        assert_unharmed(snap)
        assert len(Core(res.path).threads) == 3


def test_cli_snapshot_on_a_seccomp_target_exits_11_and_auto_warns(seccomp_exe, outdir):
    with seccomp_target(seccomp_exe, "kill") as snap:
        refused = dumplib_cli("dump", str(snap.pid), str(outdir), "-k", "full", "--snapshot", "--json")
        assert refused.returncode == 11, (refused.returncode, refused.stdout, refused.stderr)
        assert "snapshot-unavailable" in refused.stdout + refused.stderr
        fallback = dumplib_cli("dump", str(snap.pid), str(outdir), "-k", "full", "--snapshot=auto", "--json")
        assert fallback.returncode == 0, fallback.stderr
        result = json.loads(fallback.stdout)
        assert result["snapshot"] is False and result["warnings"], result
        assert_unharmed(snap)


@pytest.mark.parametrize("call", ["nanosleep", "read", "spin"])
def test_a_clone_that_fails_puts_the_thread_back_exactly(solo_exe, outdir, call):
    """A pids cgroup at its limit makes the injected clone() fail (EAGAIN): snapshot=True refuses, and the
    thread it was tried in completes its call as if nothing had happened, at its own priority (the call
    ran at the stop's, raised: snapshot/clone.py)."""
    numbers, ms, expect, least = SOLO[call]
    with snapshot_target(solo_exe, call, str(ms)) as snap:
        own_nice = os.getpriority(os.PRIO_PROCESS, snap.pid)
        # The call is raised to the stop's nice (an absolute value): a target already there tests nothing.
        assert own_nice > STOP_NICE, f"the target runs at nice {own_nice}: the call would not be raised"
        with pids_cgroup_v1(snap.pid):
            if call == "spin":
                time.sleep(0.3)
            else:
                deadline = time.monotonic() + 10
                while (got := blocked_call(snap.pid, snap.pid)) is None or got[0] not in numbers:
                    assert time.monotonic() < deadline, f"not blocked in {call}: {got}"
                    time.sleep(0.005)
            with pytest.raises(dumplib.TargetRefused) as caught:
                dumplib.create_dump(snap.pid, str(outdir / "p.core"), "full", snapshot=True)
            assert caught.value.reason == "snapshot-unavailable"
            assert "clone" in str(caught.value), caught.value  # the clone() was made, and failed
            assert_free(snap)
            assert os.getpriority(os.PRIO_PROCESS, snap.pid) == own_nice, "the failed call left its priority raised"
            if call == "read":
                assert snap.proc.stdin is not None
                snap.proc.stdin.write("line-of-data\n")
                snap.proc.stdin.flush()
                expect = (len("line-of-data\n"), 4242)
            elif call == "spin":
                os.kill(snap.pid, signal.SIGUSR1)  # the spin ends, the target reports
            rep = json.loads(read_line(snap.proc, 30))
        assert (rep["rc"], rep["errno"]) == expect, f"{call} returned {rep} after a failed clone(); expected {expect}"
        assert rep["elapsed_ns"] >= least * 1e9 and rep["mask_ok"] == 1 and rep["bad"] == 0, rep
        assert rep["sigchld"] == 0 and rep["waitpid"] == -1, rep


@pytest.fixture(scope="session")
def uffd_exe(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory, "uffd_target")


@pytest.mark.parametrize("snapshot", [True, "auto"])
def test_userfaultfd_with_fork_events_never_kills_or_hangs_the_target(uffd_exe, outdir, snapshot):
    """With UFFD_FEATURE_EVENT_FORK a fork waits in the kernel until the process's own manager thread reads
    the fork event, and the manager then sees a fork it never made: no snapshot can be taken unnoticed
    (/proc/PID/fdinfo shows the userfaultfd's features). True refuses and auto falls back (or a snapshot
    is taken without the manager ever seeing a fork); the target lives, unstopped, its manager serving faults."""
    require(os.geteuid() == 0, "userfaultfd for this test needs root (vm.unprivileged_userfaultfd)")
    with snapshot_target(uffd_exe) as snap:
        try:
            res = dumplib.create_dump(snap.pid, str(outdir / "u.core"), "full", snapshot=snapshot)
            taken = res.snapshot
            assert snapshot == "auto" or taken, res
        except dumplib.TargetRefused as exc:
            assert snapshot is True and exc.reason == "snapshot-unavailable", exc
            taken = False
        assert snap.proc.poll() is None, f"the target died: exit {snap.proc.returncode}"
        assert_free(snap)
        forks, faults, ticks = (int(x) for x in snap.ask("ping").split()[1:])
        assert forks == 0, f"the target's userfaultfd manager saw {forks} fork event(s): the snapshot's clone()"
        assert snap.ask("touch") == "touched 85", "the manager no longer serves the target's page faults"
        time.sleep(0.05)
        assert int(snap.ask("ping").split()[3]) > ticks, "the target's worker does not run"
        assert strangers(snap) == [] and children_of(snap.pid) == [], strangers(snap)
        if not taken and snapshot == "auto":
            assert res.warnings, res


# -- the dumper killed while the snapshot child lives -----------------------------------------------------
@pytest.mark.parametrize("when", ["head", "memory"])
def test_dumper_sigkilled_while_the_snapshot_child_lives_leaves_no_orphan_and_the_target_runs(snap_exe, outdir, when):
    """*when*: "head", nothing read (dumplib blocked on the header and notes); "memory", the first MiB
    read (dumplib blocked copying memory from the snapshot, the target running)."""
    with snapshot_target(snap_exe, "--heap", "64") as snap:
        assert snap.ask("arm 1 2000") == "armed"
        wait_until_blocked(snap)
        # stdout is a pipe nobody reads: the write stops after 64 KiB, while the child holds the memory.
        dumper, read_end = stalled_snapshot_dump(snap)
        try:
            got = 0
            while when == "memory" and got < 1 << 20:
                got += len(os.read(read_end, (1 << 20) - got))
            time.sleep(0.2)
            seen = strangers(snap)
            dumper.send_signal(signal.SIGKILL)
            dumper.wait(timeout=30)
        finally:
            if dumper.poll() is None:
                dumper.kill()
                dumper.wait()
            os.close(read_end)
        # Nothing the dumper made may live on: a child left stopped holds the target's memory forever,
        # and one let go would run the target's code a second time.
        assert seen, "no snapshot child was seen during the dump"
        wait_left_alone(snap)  # not even a zombie: the tracer process outlives dumplib and reaps it
        # The target runs on: its blocked calls complete as if nothing happened.
        payloads = wake_everyone(snap, 1)
        report = json.loads(snap.ask("report"))
        rnd = Round(1, 2000, snap.tids(), {}, {}, {}, None, report, payloads=payloads)  # type: ignore[arg-type]
        check_calls_completed(rnd)
        assert report["sigchld"] == 0, report
        # Whatever became of the child (the target's __WALL loop may have collected it), it was killed
        # (PTRACE_O_EXITKILL), never let go to run on from the clone() it was made in and die of that.
        for pid, status in report["reaped_wall"] + report["reaped"]:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                f"the snapshot child {pid} ended with wait status {status:#x}, not SIGKILL: it ran after dumplib died"
