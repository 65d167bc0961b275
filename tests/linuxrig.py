"""Real Linux targets and independent readers (gdb, readelf, eu-stack, lldb) for the Linux tests."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

HERE = Path(__file__).resolve().parent
TARGET_C = HERE / "e2e_linux" / "target.c"


def build_target(directory: Path) -> Path:
    """Compile the C target (with debug info) into *directory*; binaries are never committed."""
    exe = directory / "dumplib-target"
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-o", str(exe), str(TARGET_C)], check=True)
    return exe


class Target:
    def __init__(self, proc: subprocess.Popen, info: Dict[str, object]) -> None:
        self.proc = proc
        self.info = info
        self.pid = int(info["pid"])  # type: ignore[arg-type]
        self.marker = str(info.get("marker", "")).encode()
        self.marker_address = int(info.get("marker_address", 0))  # type: ignore[arg-type]
        self.threads = int(info.get("threads", 1))  # type: ignore[arg-type]

    def ask(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def status(self) -> Dict[str, str]:
        return proc_status(self.pid)

    def assert_running_untraced(self) -> None:
        assert_running_untraced(self.pid)

    def waiting_switches(self) -> int:
        """The context switches of the main thread, once it waits for input (blocked in read(0)). Equal
        before and after a call, they say that call never interrupted it: a ptrace stop (seize and
        interrupt) or any signal wakes a thread blocked in read, and the kernel counts the switch. No
        clock is involved, so a loaded machine cannot blur it, as a ticker's gap can (a refused dump's
        51.6 ms "stall" at load 10 was the ticker waiting for a CPU)."""
        deadline = time.monotonic() + 20
        while True:
            status = proc_status(self.pid)
            # Asleep (S) as well as in read: a thread stopped inside read still shows the call.
            if status["State"][0] == "S" and waiting_in_read(self.pid, 0):
                return int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"])
            assert time.monotonic() < deadline, (f"process {self.pid} never went back to reading its input:"
                                                 f" state {status['State']}, {_syscall_of(self.pid)}")
            time.sleep(0.001)


def waiting_in_read(tid: int, fd: int) -> bool:
    """Thread *tid* is in read(*fd*, ...), as /proc/TID/syscall shows it (x86_64's call number 0)."""
    fields = _syscall_of(tid).split()
    return len(fields) > 1 and fields[0] == "0" and int(fields[1], 16) == fd


def _syscall_of(tid: int) -> str:
    try:
        return Path(f"/proc/{tid}/syscall").read_text().strip()
    except OSError as exc:
        return f"/proc/{tid}/syscall unreadable: {exc}"


def proc_status(pid: int) -> Dict[str, str]:
    """/proc/PID/status as the kernel says it (names may be any bytes: shown escaped)."""
    out = {}
    with open(f"/proc/{pid}/status", errors="backslashreplace") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def state(pid: int) -> str:
    """Process *pid*'s state letter as /proc/PID/stat gives it (t: stopped by a tracer)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def mapping_rss(start: int) -> int:
    """The kernel's Rss of this process's mapping starting at *start*, in bytes (/proc/self/smaps)."""
    return int(_smaps_field(start, "Rss:").split()[0]) * 1024


def mapping_vmflags(start: int) -> "set[str]":
    """The kernel's VmFlags of this process's mapping starting at *start* (/proc/self/smaps)."""
    return set(_smaps_field(start, "VmFlags:").split())


def _smaps_field(start: int, field: str) -> str:
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split(" ", 1)[0]
        if "-" in head and ":" not in head and int(head.split("-")[0], 16) == start:
            for x in lines[i + 1:]:
                if x.startswith(field):
                    return x[len(field):]
                if "-" in x.split(" ", 1)[0] and ":" not in x.split(" ", 1)[0]:
                    break
    raise AssertionError(f"no {field} of a mapping at {start:#x}")


def thread_facts(tid: int) -> "tuple[int, Optional[int]]":
    """(voluntary context switches, system call number or None) of this process's thread *tid*, as
    the kernel says (/proc/self/task/TID/status and syscall)."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    switches = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("voluntary_ctxt_switches")))
    call = Path(f"/proc/self/task/{tid}/syscall").read_text().split()[0]
    return switches, int(call) if call.lstrip("-").isdigit() else None


def sha256sum(path: "os.PathLike[str] | str") -> str:
    """coreutils' sha256sum of *path*: a reader independent of dumplib's hashing."""
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def assert_running_untraced(pid: int) -> None:
    st = proc_status(pid)
    assert st["TracerPid"] == "0", st["TracerPid"]
    assert st["State"][0] in "RS", st["State"]  # not stopped (T/t), not a zombie


@contextlib.contextmanager
def run_target(argv: List[str], env: Optional[Dict[str, str]] = None, preexec=None) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, preexec_fn=preexec)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target {argv} did not start")
        yield Target(proc, json.loads(line))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


PY_TARGET = r"""
import json, os, sys, threading, time
marker = ("DUMPLIB-PY-MARKER-%d" % os.getpid()).encode()
blob = bytearray(200 << 20) if "--heap" in sys.argv else b""
for i in range(0, len(blob), 4096): blob[i] = 1
def py_worker_sleeps():
    while True: time.sleep(100)
threading.Thread(target=py_worker_sleeps, daemon=True).start()
# a bytes object's characters start 32 bytes into it (ob_sval) in CPython 3.x on 64-bit
print(json.dumps({"pid": os.getpid(), "marker": marker.decode(), "marker_address": id(marker) + 32, "threads": 2}), flush=True)
sys.stdin.read()
"""


def unfollowable(platform: object) -> object:
    """*platform* as Windows' is to the writer: a write that cannot be followed (``streams`` False), so the
    finished dump is read again for its sidecar and a compressed or remote dump is written raw first."""
    class Unfollowable:
        streams = False

        def __getattr__(self, name: str) -> object:
            return getattr(platform, name)

    return Unfollowable()


def gdb(exe: str, core: str, *commands: str, timeout: float = 120) -> str:
    args = ["gdb", "-nx", "-batch", "-q"]
    for c in commands:
        args += ["-ex", c]
    done = subprocess.run(args + [exe, core], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def dumplib_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumplib_cli", *args], capture_output=True, text=True, timeout=timeout)


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """`python -m dumplib_cli ARGS` with extra subprocess options (a wrapper command, env, preexec_fn)."""
    wrapper = kwargs.pop("wrapper", [])
    return subprocess.run([*wrapper, sys.executable, "-m", "dumplib_cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def build_source(directory: Path, source: Path, *flags: str, name: Optional[str] = None) -> Path:
    """Compile the test target *source* (a .c file in the tree) into *directory*, named *name* or after
    it, with debug info; a missing gcc fails under CI (helpers.require). Binaries are never committed."""
    from helpers import require

    require(have("gcc"), f"gcc is not installed; {source.name} cannot be built")
    exe = directory / (name or source.stem)
    subprocess.run(["gcc", "-g", "-O0", "-pthread", *flags, "-o", str(exe), str(source)], check=True)
    return exe


def build_c(directory: Path, name: str, source: str, *flags: str) -> Path:
    """Compile *source* (C text) into *directory*/*name*; binaries are never committed."""
    src = directory / f"{name}.c"
    src.write_text(source)
    exe = directory / name
    subprocess.run(["gcc", "-g", "-O0", "-pthread", *flags, "-o", str(exe), str(src)], check=True)
    return exe


# A thread that puts a known value in all 256 bits of ymm15 and then only makes raw nanosleep
# system calls, so nothing (no libc, no dynamic linker) can clobber it. The upper 128 bits live only
# in the XSAVE area: a core without NT_X86_XSTATE cannot show them.
YMM15 = (0x1111A001, 0x2222A002, 0x3333A003, 0x4444A004, 0x5555A005, 0x6666A006, 0x7777A007, 0x7888A008)
AVX_TARGET_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static const unsigned pattern[8] __attribute__((aligned(32))) = {%s};
__attribute__((noinline)) void *thread_holds_ymm15(void *arg) {
    struct timespec ts = {1, 0};
    __asm__ volatile(
        "vmovdqu (%%0), %%%%ymm15\n"
        "1:\n"
        "mov $35, %%%%eax\n"
        "mov %%1, %%%%rdi\n"
        "xor %%%%esi, %%%%esi\n"
        "syscall\n"
        "jmp 1b\n"
        :: "r"(pattern), "r"(&ts) : "rax", "rdi", "rsi", "rcx", "r11", "memory");
    return arg;
}
int main(void) {
    int avx = __builtin_cpu_supports("avx");
    pthread_t t;
    if (avx) pthread_create(&t, NULL, thread_holds_ymm15, NULL);
    printf("{\"pid\": %%d, \"avx\": %%s, \"threads\": %%d}\n", (int)getpid(), avx ? "true" : "false", avx ? 2 : 1);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {}
    return 0;
}
""" % ", ".join(hex(v) for v in YMM15)

# A Python target whose heap is random bytes: memory no compressor can shrink.
PY_RANDOM_HEAP = r"""
import json, os, sys
blob = os.urandom(int(sys.argv[1]) << 20)
print(json.dumps({"pid": os.getpid(), "threads": 1}), flush=True)
sys.stdin.read()
"""


def run_in_pty(argv: List[str], timeout: float = 300) -> "tuple[int, bytes, bytes]":
    """Run *argv* with stderr on a real pseudo-terminal (stdout a pipe): (exit code, terminal bytes, stdout)."""
    import os
    import pty
    import select
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every follower end is closed, the child has exited
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert proc.stdout is not None
        out = proc.stdout.read()
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), bytes(seen), out
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


#: The unprivileged user tests run as (a process of another user, or one without CAP_SYS_PTRACE).
NOBODY = 65534


def as_nobody() -> None:
    """preexec_fn: become uid/gid 65534 with no supplementary groups."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@contextlib.contextmanager
def kernel_cores(directory: Path) -> Iterator[Path]:
    """While held, the kernel writes the core of any crashing process to DIRECTORY/core.PID (root only:
    kernel.core_pattern is machine-wide, so it is put back whatever happens). Start the crasher with
    preexec=unlimited_core."""
    pattern_file = "/proc/sys/kernel/core_pattern"
    with open(pattern_file) as f:
        old = f.read()
    directory.mkdir(exist_ok=True)
    try:
        with open(pattern_file, "w") as f:
            f.write(str(directory / "core.%p"))
        yield directory
    finally:
        with open(pattern_file, "w") as f:
            f.write(old)


def unlimited_core() -> None:
    """preexec for a process whose kernel core is wanted: RLIMIT_CORE unlimited."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class DirectoryEvents:
    """inotify on one directory, read after the fact in the order the kernel saw them: what a watcher of
    the directory could have seen at each moment of a dump (which names appeared, which were written to).
    Consecutive identical events are merged by the kernel, so a long write costs a handful of entries."""

    IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x8, 0x40, 0x80
    IN_CREATE, IN_DELETE, IN_Q_OVERFLOW = 0x100, 0x200, 0x4000
    NAMES = {0x2: "modify", 0x8: "close_write", 0x40: "moved_from", 0x80: "moved_to", 0x100: "create",
             0x200: "delete"}

    def __init__(self, directory: "os.PathLike[str] | str") -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(0o4000 | 0o2000000)  # IN_NONBLOCK | IN_CLOEXEC
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = sum(self.NAMES)
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")

    def read(self) -> List["tuple[str, str]"]:
        """Every event so far as (what, name), oldest first; a queue overflow fails loudly."""
        import struct

        out: List["tuple[str, str]"] = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return out
            at = 0
            while at < len(buf):
                _wd, mask, _cookie, size = struct.unpack_from("iIII", buf, at)
                name = buf[at + 16: at + 16 + size].rstrip(b"\0").decode("utf-8", "surrogateescape")
                at += 16 + size
                if mask & self.IN_Q_OVERFLOW:
                    raise AssertionError("inotify queue overflowed: events were lost")
                out.extend((what, name) for bit, what in self.NAMES.items() if mask & bit)

    def close(self) -> None:
        os.close(self.fd)


def handler_lines(path: "os.PathLike[str] | str", n: int, within: float = 10.0) -> List[str]:
    """A signal handler's record file once it holds *n* complete lines (or what it holds at the deadline).

    The handler creates the file before it writes its line, so the file's existence alone says nothing:
    reading as soon as it exists races with the write."""
    import time

    deadline = time.monotonic() + within
    text = ""
    while True:
        text = Path(path).read_text() if os.path.exists(path) else ""
        if text.count("\n") >= n or time.monotonic() > deadline:
            return text.splitlines(keepends=True)
        time.sleep(0.02)


@contextlib.contextmanager
def pids_cgroup_v1(pid: int, room: int = 0) -> Iterator[Path]:
    """A cgroup v1 pids cgroup holding *pid*, allowing *room* more tasks than it has: fork and clone fail."""
    from helpers import require

    require(os.geteuid() == 0, "making a pids cgroup needs root")
    root = Path("/sys/fs/cgroup/pids")
    require((root / "cgroup.procs").exists(), "no cgroup v1 pids controller here")
    group = root / f"dumplib-test-{pid}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "pids.max").write_text(str(int((group / "pids.current").read_text()) + room))
        yield group
    finally:
        for p in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(p)
        group.rmdir()


def python_at_pids_limit(script: str, args: List[str], room: int, timeout: float = 120) -> Dict[str, object]:
    """`python -c SCRIPT ARGS` at_pids_limit."""
    return at_pids_limit(subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), room, timeout)


def at_pids_limit(proc: "subprocess.Popen[str]", room: int, timeout: float = 120,
                  on_ready: "Optional[Callable[[subprocess.Popen[str]], None]]" = None) -> Dict[str, object]:
    """*proc* (text pipes), which prints "ready" and waits for a line: then given to *on_ready* (if any),
    moved into a pids cgroup with *room* tasks beyond its own (pids_cgroup_v1) and told "go". Its last
    stdout line, as JSON; a non-zero exit (a traceback: RuntimeError "can't start new thread") fails the
    caller. Killed on the way out if it still runs."""
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        if on_ready is not None:
            on_ready(proc)
        with pids_cgroup_v1(proc.pid, room=room):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


#: The signals that end the command (its handlers' set); by name, since this module is imported by unit
#: tests that also run inside Windows python, whose signal module has no SIGHUP or SIGQUIT.
ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                       if hasattr(signal, name))


def signal_defaults(ignored: "tuple[int, ...]" = ()) -> "Callable[[], None]":
    """A preexec_fn: the ending signals at their default in a child, whatever this test run inherited (a
    job started with `&` gets SIGINT and SIGQUIT ignored; a run under nohup, SIGHUP: a command keeps an
    ignored signal ignored, by design), but those in *ignored*. For a test that sends them."""
    def preexec() -> None:
        for sig in ENDING_SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    return preexec
