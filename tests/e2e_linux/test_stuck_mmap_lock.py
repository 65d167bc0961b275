"""A target whose mmap lock is held for good: every estimate and dump ends within its bound with
TargetRefused "memory-map-locked", the target runs on untraced, nothing is kept, and dumplib's process
exits (its parent gets the exit status).

The real thing, on the FUSE rig of test_fuse_reads (fusestall.py speaks /dev/fuse; a 64 MiB file whose
reads past the first page are held): another process reads a page of the target's mapping of that file
through /proc/PID/mem and waits in the kernel holding the target's mmap lock for read; then something
queues for it as a writer (a thread of the target calling mmap, or a process sharing its memory,
CLONE_VM, which no stop of the target's threads holds back), and from then on every reader of the
target's smaps, pagemap, memory or command line waits. The daemon is released at the end of every
test, failed or not, so no process in D state outlives it.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

from helpers import require
from linuxrig import Target, build_c, run_target
from test_fuse_reads import StallingMount, mapping_of, mounted, within

import dumplib
from dumplib._linux import backend

PAGE = 4096
#: dumplib's bound on one read waiting for the lock (MM_LOCK_SECONDS), and what a command may take on
#: top of it on a loaded 2-CPU machine (start-up, the bitness check, the refusal's own reads).
BOUND = backend.MM_LOCK_SECONDS
SLACK = 60.0
#: A command that has not ended by then waits on the lock: the test fails (after releasing the daemon).
COMMAND_SECONDS = BOUND + SLACK + 60

TARGET_C = r"""
/* mmaplock PATH HEAP_MIB: maps PATH (64 MiB on the stalling FUSE mount) shared and touches its
 * first page only; fills HEAP_MIB of heap; starts a sibling process sharing its memory (CLONE_VM, not a
 * thread: dumplib's stop does not hold it) that maps and unmaps a page on each SIGUSR1, writing "mapped"
 * once its mmap returned. Prints one JSON line, then serves stdin:
 *   mmap   maps and unmaps a page, then prints "mapped" (its mmap lock is free)
 *   churn  starts a thread that maps and unmaps a page every millisecond, then prints "churning" */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile char sink;
static volatile sig_atomic_t poked;

static void on_poke(int sig) { (void)sig; poked = 1; }

/* Shares the target's memory (and so its TLS: raw system calls only, nothing of stdio). */
static int sibling(void *arg) {
    (void)arg;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigset_t usr1, none;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_poke;
    sigaction(SIGUSR1, &sa, NULL);
    for (;;) {
        while (!poked)
            sigsuspend(&none);
        poked = 0;
        void *p = (void *)syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        syscall(SYS_munmap, p, 4096);
        syscall(SYS_write, 2, "mapped\n", 7);
    }
    return 0;
}

static void *churn(void *arg) {
    (void)arg;
    for (;;) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED)
            munmap(p, 4096);
        usleep(1000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return 1;
    char *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return 1;
    sink = map[0]; /* the first page only: the file system answers it */
    size_t heap = (size_t)atol(argv[2]) << 20;
    unsigned char *h = malloc(heap ? heap : 1);
    for (size_t i = 0; i < heap; i += 4096)
        memset(h + i, (int)(i >> 12) | 1, 64);
    char *stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int sib = clone(sibling, stack + (1 << 16), CLONE_VM | SIGCHLD, NULL);
    if (sib < 0)
        return 1;
    printf("{\"pid\": %d, \"sibling\": %d, \"address\": %lu, \"size\": %ld, \"heap\": %lu}\n", getpid(), sib,
           (unsigned long)map, (long)st.st_size, (unsigned long)h);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "mmap", 4) == 0) {
            void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED)
                munmap(p, 4096);
            printf("mapped\n");
        } else if (strncmp(line, "churn", 5) == 0) {
            pthread_t t;
            pthread_create(&t, NULL, churn, NULL);
            printf("churning\n");
        }
        fflush(stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def target_exe(tmp_path_factory) -> Path:
    # A name shorter than comm's 15 bytes: finding it reads no command line (that read is bounded on its
    # own, and once it is stuck every later read of the process fails at once: the dump's own bounds
    # would go untested).
    return build_c(tmp_path_factory.mktemp("mmaplock"), "mmaplock", TARGET_C)


class Rig:
    """The mount, the target, and the reader holding its mmap lock."""

    def __init__(self, mount: StallingMount, target: Target) -> None:
        self.mount, self.t = mount, target
        self.holder: Optional["subprocess.Popen[bytes]"] = None
        self.sentinel: Optional[threading.Thread] = None

    def hold(self) -> None:
        """Another process reads a page of the target's FUSE mapping that is not resident: it waits on the
        daemon in the kernel holding the target's mmap lock for read (readers alone still pass)."""
        lo, _, _ = mapping_of(self.t.pid, self.mount.path / "big")
        self.holder = subprocess.Popen([sys.executable, "-c", f"import os; fd = os.open('/proc/{self.t.pid}/mem',"
                                        f" os.O_RDONLY); os.pread(fd, 8, {lo + 5 * PAGE})"])
        deadline = time.monotonic() + 60
        while not any("held read" in ln for ln in self.mount.lines()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any("held read" in ln for ln in self.mount.lines()), self.mount.lines()

    def stuck(self) -> bool:
        """Whether a read of the target's command line (it takes the mmap lock) hangs. The first read seen
        hanging for 2 s is kept waiting (the sentinel): while it still waits, the lock has not been free
        since it queued, and any later read would wait too, so it answers at once, for the whole span."""
        if self.sentinel is None or not self.sentinel.is_alive():
            probe = threading.Thread(target=_read_quietly, args=(f"/proc/{self.t.pid}/cmdline",), daemon=True)
            probe.start()
            probe.join(2)
            self.sentinel = probe
        return self.sentinel.is_alive()

    def wait_stuck(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stuck():
            assert time.monotonic() < deadline, ("the test could not make the target's mmap lock stick: "
                                                 + "\n".join(self.mount.lines()))
            time.sleep(0.05)

    def release(self) -> None:
        self.mount.release()
        if self.holder is not None:
            self.holder.wait(60)


def _read_quietly(path: str) -> None:
    """A probe's read: once the test has killed the target, the read that waited ends in ESRCH, which is
    not the test's business (raised in the thread, pytest reported it as a warning)."""
    try:
        Path(path).read_bytes()
    except OSError:
        pass


@contextlib.contextmanager
def rig(tmp_path: Path, exe: Path, heap_mib: int = 8) -> Iterator[Rig]:
    with mounted(tmp_path) as mount:
        with run_target([str(exe), str(mount.path / "big"), str(heap_mib)]) as t:
            r = Rig(mount, t)
            try:
                yield r
            finally:
                r.release()  # before the target is killed: nothing of it may stay in D state


@contextlib.contextmanager
def stuck_rig(tmp_path: Path, exe: Path) -> Iterator[Rig]:
    """The lock held, and a thread of the target queued behind it as a writer: stuck from the start."""
    with rig(tmp_path, exe) as r:
        assert r.t.ask("churn") == "churning"  # first: its thread's stack is an mmap too
        r.hold()
        r.wait_stuck()
        yield r


def run_dumplib(*args: str, rig_: Rig) -> Tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of `python -m dumplib_cli ARGS`; a command still running
    after COMMAND_SECONDS waits on the lock: the daemon is released and the test fails."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "dumplib_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=COMMAND_SECONDS)
    except subprocess.TimeoutExpired:
        rig_.release()
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"dumplib {' '.join(args)} did not end within {COMMAND_SECONDS:g} s with the target's mmap"
                    f" lock held:\n{err}")
    return proc.returncode, out, err, time.monotonic() - started


def refusal(out: str, err: str) -> dict:
    """The --json error object, from whichever stream carried it."""
    for text in (out, err):
        for line in text.splitlines():
            if line.startswith("{") and '"error"' in line:
                return json.loads(line)["error"]
    raise AssertionError(f"no --json error in:\n{out}\n{err}")


def refused_in_process(r: Rig, *args, **kwargs) -> "dumplib.TargetRefused":  # type: ignore[no-untyped-def]
    """The TargetRefused of dumplib.create_dump(*args, **kwargs) in this process; a call still running
    after COMMAND_SECONDS waits on the lock: the daemon is released (so it returns) and the test fails."""
    def call() -> BaseException:
        try:
            dumplib.create_dump(*args, **kwargs)
        except BaseException as exc:  # noqa: B036 - the test inspects it
            return exc
        return AssertionError("the dump was written")

    done, error = within(call, COMMAND_SECONDS)
    if not done:
        r.release()
        pytest.fail(f"create_dump did not end within {COMMAND_SECONDS:g} s with the target's mmap lock held")
    assert isinstance(error, dumplib.TargetRefused), repr(error)
    return error


def left_alone(r: Rig, directory: Optional[Path] = None) -> None:
    """Nothing kept in *directory* (no dump, no temporary); the target neither stopped nor traced."""
    if directory is not None:
        assert sorted(p.name for p in directory.iterdir()) == [], list(directory.iterdir())
    status = Path(f"/proc/{r.t.pid}/status").read_text()
    assert "TracerPid:\t0" in status, status
    for task in Path(f"/proc/{r.t.pid}/task").iterdir():
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state not in ("t", "T"), f"thread {task.name} is left stopped ({state})"


def unharmed(r: Rig) -> None:
    """Once the daemon answers: the target's maps read at once and its own mmap returns."""
    r.release()
    done, answer = within(lambda: r.t.ask("mmap"), 60)
    assert done and answer == "mapped", answer
    status = Path(f"/proc/{r.t.pid}/status").read_text()
    assert "TracerPid:\t0" in status, status


COMMANDS = {
    "estimate-mini": ("estimate", "{pid}", "--kind", "mini"),
    "estimate-full": ("estimate", "{pid}", "--kind", "full"),
    "dump-mini": ("dump", "{pid}", "{out}", "--kind", "mini"),
    "dump-full": ("dump", "{pid}", "{out}", "--kind", "full"),
    "dump-full-snapshot": ("dump", "{pid}", "{out}", "--kind", "full", "--snapshot"),
    "dump-full-snapshot-auto": ("dump", "{pid}", "{out}", "--kind", "full", "--snapshot=auto"),
    "dump-miniplus-stdout": ("dump", "{pid}", "-", "--kind", "miniplus"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_process_whose_memory_map_is_stuck_is_refused_within_the_bound(target_exe, tmp_path, command):
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with stuck_rig(tmp_path, target_exe) as r:
        args = [a.format(pid=r.t.pid, out=out) for a in COMMANDS[command]] + ["--json"]
        code, stdout, stderr, seconds = run_dumplib(*args, rig_=r)
        error = refusal(stdout, stderr)
        assert code == 11 and error["type"] == "TargetRefused", (code, stdout, stderr)
        assert error["reason"] == "memory-map-locked" and error["pid"] == r.t.pid, error
        assert error["tids"] and error["tid"] == error["tids"][0] and error["state"] == "D", error  # its churn thread
        assert seconds < BOUND + SLACK, seconds
        left_alone(r, out)
        assert r.stuck(), "the lock came free during the test: it proves nothing"
        unharmed(r)


def test_watch_goes_on_past_a_process_whose_memory_map_is_stuck(target_exe, tmp_path):
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with stuck_rig(tmp_path, target_exe) as r:
        # A memory trigger that holds at once: each sampled dump is refused, and the watch goes on to its timeout.
        code, stdout, stderr, seconds = run_dumplib("watch", str(r.t.pid), str(out), "--memory", "1", "-n", "5",
                                                    "--interval", "1", "--timeout", "12", rig_=r)
        assert "memory-map-locked" in stdout + stderr or "memory map is locked" in stdout + stderr, stdout + stderr
        assert code == 0, (code, stdout, stderr)
        assert seconds < 12 + BOUND + SLACK, seconds
        left_alone(r, out)
        unharmed(r)


def _states(pid: int) -> List[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return out


def _stopped(pid: int) -> bool:
    return any(s in ("t", "T") for s in _states(pid))


def test_max_pause_lets_the_target_go_while_the_copy_waits_on_the_lock_and_the_command_then_ends(target_exe, tmp_path):
    """The lock sticks mid-copy, the target stopped: the copy waits on it in the kernel; at --max-pause the
    target is let go all the same, and the command ends at the read's bound. The core is under 64 MiB,
    so it goes down stdout during the stop (a larger one is staged in memory and sent once the target
    runs: test_staged_output.py has its stuck read)."""
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    with rig(tmp_path, target_exe, heap_mib=40) as r:
        r.hold()  # readers alone pass: the dump starts, stops the target and begins the copy
        sibling = int(r.t.info["sibling"])  # type: ignore[arg-type]
        proc = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(r.t.pid), "-", "--kind", "full",
                                 "--max-pause", "2s", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        events: dict = {}
        received = [0]

        def drain() -> None:  # the reader of '-' keeps reading: the copy waits on the lock, not on the pipe
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(1 << 16)  # type: ignore[attr-defined]
                if not chunk:
                    return
                before = received[0]
                received[0] += len(chunk)
                if before < 8 << 20 <= received[0]:
                    events["poked"] = time.monotonic()
                    os.kill(sibling, signal.SIGUSR1)  # 8 MiB copied: a writer now queues behind the held read

        def watch_target() -> None:
            while proc.poll() is None:
                if "poked" in events and "let_go" not in events and not _stopped(r.t.pid):
                    events["let_go"] = time.monotonic()
                time.sleep(0.01)

        threads = [threading.Thread(target=drain, daemon=True), threading.Thread(target=watch_target, daemon=True)]
        for th in threads:
            th.start()
        try:
            assert proc.wait(COMMAND_SECONDS) is not None
        except subprocess.TimeoutExpired:
            r.release()
            proc.kill()
            pytest.fail("the dump did not end with the target's mmap lock held mid-copy")
        ended = time.monotonic()
        for th in threads:
            th.join(30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert "poked" in events, f"the copy never reached 8 MiB: {received[0]} bytes\n{err}"
        assert r.stuck(), "the writer did not stick behind the held read: the test proves nothing"
        error = refusal("", err)
        assert proc.returncode == 11 and error["reason"] == "memory-map-locked", (proc.returncode, err)
        # Let go at max_pause (2 s after the stop), before the command gave up on the read (5 s after it began).
        assert "let_go" in events and events["let_go"] < ended, events
        assert ended - events["poked"] < BOUND + SLACK, ended - events["poked"]
        left_alone(r)
        unharmed(r)


def test_a_lock_stuck_mid_copy_to_a_file_keeps_nothing_and_lets_the_target_go(target_exe, tmp_path):
    """In-process (the API), the copy to a file meeting the lock: the sibling is made to queue behind the
    held read from the dump's own progress callback, so the copy is surely under way."""
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with rig(tmp_path, target_exe, heap_mib=64) as r:
        r.hold()
        sibling = int(r.t.info["sibling"])  # type: ignore[arg-type]
        poked: List[float] = []

        def progress(written: int, _elapsed: float) -> None:
            if written and not poked:
                os.kill(sibling, signal.SIGUSR1)
                poked.append(time.monotonic())
                r.wait_stuck()  # the next read of the copy will wait on the lock

        refused = refused_in_process(r, r.t.pid, out / "x.core", "full", progress=progress, sidecar=False)
        assert refused.reason == "memory-map-locked", refused
        assert poked and time.monotonic() - poked[0] < BOUND + SLACK
        assert "let go" in refused.message
        left_alone(r, out)
        unharmed(r)


def test_a_lock_stuck_once_the_target_is_stopped_is_given_up_on_before_any_copy(target_exe, tmp_path, monkeypatch):
    """The lock sticks between the stop and the copy, while the core's notes are gathered (the command
    line, read through the lock): the read is given up on, the target let go, nothing kept."""
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with rig(tmp_path, target_exe) as r:
        r.hold()
        sibling = int(r.t.info["sibling"])  # type: ignore[arg-type]
        real_notes = backend._notes

        def notes_once_the_lock_sticks(*args, **kwargs):  # type: ignore[no-untyped-def]
            os.kill(sibling, signal.SIGUSR1)
            r.wait_stuck()
            return real_notes(*args, **kwargs)  # reads /proc/PID/cmdline: waits on the lock

        monkeypatch.setattr(backend, "_notes", notes_once_the_lock_sticks)
        refused = refused_in_process(r, r.t.pid, out / "x.core", "mini", sidecar=False)
        assert refused.reason == "memory-map-locked", refused
        assert "let go" in refused.message
        left_alone(r, out)
        unharmed(r)


READS_IN_A_CHILD = r"""
import sys, time
from dumplib._linux import backend
from dumplib._linux.core.memory import MemoryCopier, MemoryReader, StreamSink
pid, heap, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def read():
    if how == "small":
        MemoryReader(pid)(heap, 64)  # the link_map walk's, the thread areas' and the syscall search's reads
    else:
        copier = MemoryCopier(pid, StreamSink(lambda data: None), total=1 << 20)
        copier.copy(heap, heap + (1 << 20), 0, None)  # the copy's reads, no pagemap read before them

try:
    backend._bounded_reads(pid, read)
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "reason", None), flush=True)
"""


@pytest.mark.parametrize("how", ["small", "copy"])
def test_a_read_of_the_targets_memory_given_up_on_leaves_dumplib_free_to_exit(target_exe, tmp_path, how):
    """dumplib's reads of a target's memory wait killably (/proc/PID/mem): the worker given up on dies with
    the process, whose parent gets its exit status at once. (A thread stuck in process_vm_readv, which
    waits for the lock unkillably, keeps its process a zombie nobody can reap until the lock is free.)"""
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    with stuck_rig(tmp_path, target_exe) as r:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-c", READS_IN_A_CHILD, str(r.t.pid), str(r.t.info["heap"]), how],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = child.communicate(timeout=COMMAND_SECONDS)
        except subprocess.TimeoutExpired:
            r.release()
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the process that gave up on a read of the target's memory did not exit (its exit"
                        f" status never came):\n{out}{err}")
        assert child.returncode == 0 and out.split() == ["TargetRefused", "memory-map-locked"], (out, err)
        assert time.monotonic() - started < BOUND + SLACK
        left_alone(r)
        unharmed(r)


def _children(pid: int) -> List[int]:
    return sorted(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@pytest.mark.parametrize("mode", ["always", "auto"])
def test_no_snapshot_is_injected_while_a_read_holds_the_lock_and_the_target_lives_on(target_exe, tmp_path, mode):
    """A read stuck on the mount holds the lock for reading, and nothing queues behind it: every read of
    the dump passes, but the clone() a snapshot injects needs the lock for writing and would wait inside
    the target, where no wait can be called off (let go at last, the thread would return from the call
    with the injected registers and die). The lock is probed first: no snapshot (auto: a dump without
    one), and the target runs on, with no child left behind by the probe."""
    require(os.path.exists("/dev/fuse"), "/dev/fuse is missing: no FUSE file system can be mounted")
    out = tmp_path / "out"
    out.mkdir()
    with rig(tmp_path, target_exe) as r:
        r.hold()
        assert not r.stuck()  # readers alone pass
        children = _children(r.t.pid)  # its CLONE_VM sibling
        flag = "--snapshot" if mode == "always" else "--snapshot=auto"
        code, stdout, stderr, seconds = run_dumplib("dump", str(r.t.pid), str(out / "s.core"), "--kind", "full", flag,
                                                    "--json", rig_=r)
        assert seconds < BOUND + SLACK, seconds
        if mode == "always":
            error = refusal(stdout, stderr)
            assert code == 11 and error["reason"] == "snapshot-unavailable", (code, stdout, stderr)
            assert "mmap lock is held" in error["message"], error
            left_alone(r, out)
        else:
            assert code == 0, (code, stdout, stderr)
            result = json.loads(stdout)
            assert result["snapshot"] is False and any("mmap lock is held" in w for w in result["warnings"]), result
            assert (out / "s.core").exists()
            left_alone(r)
        assert _children(r.t.pid) == children  # the probe's process was reaped
        unharmed(r)  # the stuck read answered: the target is whole and its own mmap returns
        assert _children(r.t.pid) == children
