"""dumplib.watch and `dumplib watch` against real processes: each trigger fires after its condition and
not before, with a figure the kernel's own files agree with; count, interval and the rate limit hold;
signals are dumped before they act and then delivered as sent; the target is left running, untraced."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import dumplib
from helpers import leftovers, require
from linuxrig import assert_running_untraced, build_source, gdb, handler_lines, have, proc_status

HERE = Path(__file__).resolve().parent

# A controllable target: one command per stdin line, one answer line each.
PY_TARGET = r"""
import os, sys, threading, time
held = []
print(os.getpid(), flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "burn":
        end = time.monotonic() + float(arg)
        while time.monotonic() < end:
            pass
    elif cmd == "alloc":
        block = bytearray(int(arg) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        held.append(block)
    elif cmd == "threads":
        for _ in range(int(arg)):
            threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
    elif cmd == "fds":
        held.extend(os.open("/dev/null", os.O_RDONLY) for _ in range(int(arg)))
    elif cmd == "exit":
        break
    print("ok", flush=True)
"""


class PyTarget:
    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.name = name

    def ask(self, line: str) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self) -> str:
        assert self.proc.stdout
        return self.proc.stdout.readline().strip()

    def status(self) -> dict:
        return proc_status(self.pid)

    def assert_running_untraced(self) -> None:
        assert_running_untraced(self.pid)


@pytest.fixture()
def unique_python(tmp_path: Path) -> str:
    """A path to this Python under a name no other process on the machine has (comm is the file's name)."""
    name = "dlw" + uuid.uuid4().hex[:8]
    link = tmp_path / name
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


@contextlib.contextmanager
def py_target(exe: str, tmp_path: Path) -> Iterator[PyTarget]:
    script = tmp_path / "target.py"
    script.write_text(PY_TARGET)
    proc = subprocess.Popen([exe, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        yield PyTarget(proc, Path(exe).name)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture()
def target(unique_python: str, tmp_path: Path) -> Iterator[PyTarget]:
    with py_target(unique_python, tmp_path) as t:
        yield t


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, clock ticks


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cores(directory: Path) -> List[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".core")


class Events(list):
    def __call__(self, e: dumplib.WatchEvent) -> None:
        self.append((time.monotonic(), e))

    def of(self, kind: str) -> List[Tuple[float, dumplib.WatchEvent]]:
        return [(t, e) for t, e in self if e.event == kind]


def later(seconds: float, fn) -> threading.Timer:  # type: ignore[no-untyped-def]
    timer = threading.Timer(seconds, fn)
    timer.start()
    return timer


# -- sampled triggers ---------------------------------------------------------------------------------
def test_cpu_above_fires_after_the_burn_held_its_seconds_not_before(target: PyTarget, outdir: Path) -> None:
    events = Events()
    marks = {}
    hz = os.sysconf("SC_CLK_TCK")

    def burn() -> None:
        marks["ticks"] = cpu_ticks(target.pid)
        marks["at"] = time.monotonic()
        target.ask("burn 6")

    def on_event(e: dumplib.WatchEvent) -> None:
        if e.event == "fired":  # the kernel's own count, taken the moment the trigger says it held
            marks["fired_ticks"] = cpu_ticks(target.pid)
            marks["fired_at"] = time.monotonic()
        events(e)

    later(1.5, burn)
    results = dumplib.watch(target.pid, dumplib.CpuAbove(8, seconds=1.0, per_cpu=True), path=outdir,
                            sample_every=0.25, timeout=15, on_event=on_event)
    assert len(results) == 1 and Path(results[0].path).exists() and results[0].pid == target.pid
    (fired_at, fired), = events.of("fired")
    # Not before the burn plus its seconds (one sample period of slack: CPU is averaged over it).
    assert fired_at >= marks["at"] + 1.0 - 0.25 - 0.05, (fired_at - marks["at"])
    assert fired_at <= marks["at"] + 5.0, "fired far too late"
    assert fired.value is not None and fired.value >= 8
    # /proc's figure over the whole burn so far agrees that the process was above the threshold.
    kernel_percent = 100.0 * (marks["fired_ticks"] - marks["ticks"]) / hz / (marks["fired_at"] - marks["at"])
    assert kernel_percent >= 8 * 0.5, kernel_percent
    assert cores(outdir) == [Path(results[0].path)]


def test_cpu_below_fires_only_once_the_burn_ends(target: PyTarget, outdir: Path) -> None:
    target.ask("burn 2.5")
    started = time.monotonic()
    events = Events()
    dumplib.watch(target.pid, dumplib.CpuBelow(2, seconds=1.0, per_cpu=True), path=outdir, sample_every=0.25,
                  timeout=15, on_event=events)
    assert target.answer() == "ok"
    (fired_at, fired), = events.of("fired")
    assert fired_at >= started + 2.5, "fired while the process was still burning"
    assert fired.value is not None and fired.value < 2


def test_memory_above_fires_when_rss_passes_the_limit_with_the_kernels_figure(target: PyTarget,
                                                                             outdir: Path) -> None:
    base = vm_rss(target.pid)
    limit = base + (48 << 20)
    events = Events()
    seen = {}

    def on_event(e: dumplib.WatchEvent) -> None:
        if e.event == "fired":
            seen["rss"] = vm_rss(target.pid)
        events(e)

    later(1.0, lambda: target.ask("alloc 32"))   # below the limit: must not fire
    later(2.5, lambda: target.ask("alloc 32"))   # now above it
    t0 = time.monotonic()
    results = dumplib.watch(target.pid, dumplib.MemoryAbove(limit), path=outdir, sample_every=0.2, timeout=15,
                            on_event=on_event)
    assert len(results) == 1
    (fired_at, fired), = events.of("fired")
    assert fired_at - t0 >= 2.5
    assert fired.value is not None and fired.value >= limit
    assert abs(fired.value - seen["rss"]) <= 2 << 20, (fired.value, seen["rss"])


def test_pss_and_private_are_read_from_smaps_when_asked(target: PyTarget, outdir: Path) -> None:
    target.ask("alloc 32")
    assert target.answer() == "ok"
    events = Events()
    dumplib.watch(target.pid, dumplib.MemoryAbove(16 << 20, measure="private"), path=outdir, sample_every=0.2,
                  timeout=10, on_event=events)
    (_, fired), = events.of("fired")
    with open(f"/proc/{target.pid}/smaps_rollup") as f:
        rollup = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f) if v.strip().endswith("kB")}
    private = rollup["Private_Clean"] + rollup["Private_Dirty"]
    assert fired.value is not None and abs(fired.value - private) <= 2 << 20


def test_threads_and_fds_fire_with_the_counts_proc_shows(target: PyTarget, outdir: Path) -> None:
    seen = {}
    events = Events()

    def on_event(e: dumplib.WatchEvent) -> None:
        if e.event == "fired":
            seen[e.trigger] = (len(os.listdir(f"/proc/{target.pid}/task")), len(os.listdir(f"/proc/{target.pid}/fd")))
        events(e)

    later(1.0, lambda: target.ask("threads 6"))
    t0 = time.monotonic()
    assert len(dumplib.watch(target.pid, dumplib.ThreadsAbove(7), path=outdir, sample_every=0.2, timeout=15,
                             on_event=on_event)) == 1
    assert events.of("fired")[0][0] - t0 >= 1.0
    later(1.0, lambda: target.ask("fds 40"))
    t0 = time.monotonic()
    assert len(dumplib.watch(target.pid, dumplib.HandlesAbove(43), path=outdir, sample_every=0.2, timeout=15,
                             on_event=on_event)) == 1
    assert events.of("fired")[1][0] - t0 >= 1.0
    fired = {e.trigger: e.value for _, e in events.of("fired")}
    # The python target has one thread and three fds of its own (stdin, stdout, stderr) to start with.
    assert fired["threads at or above 7"] == seen["threads at or above 7"][0] == 7
    assert fired["handles at or above 43"] == seen["handles at or above 43"][1] >= 43


def test_count_and_interval_are_honoured(target: PyTarget, outdir: Path) -> None:
    events = Events()
    results = dumplib.watch(target.pid, dumplib.ThreadsAbove(1), count=3, interval=1.5, path=outdir,
                            sample_every=0.1, timeout=60, on_event=events)
    assert len(results) == 3 == len(cores(outdir))
    # It returned because the count was reached, not at its timeout with the count reached long before.
    assert [e.event for _, e in events][-1] == "done" and not events.of("timeout")
    made = sorted(os.stat(r.path).st_mtime for r in results)
    gaps = [b - a for a, b in zip(made, made[1:])]
    assert all(g >= 1.5 - 0.05 for g in gaps), gaps
    target.assert_running_untraced()


def test_rate_limit_holds_over_every_process_of_a_name(unique_python: str, tmp_path: Path, outdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(py_target(unique_python, tmp_path)) for _ in range(4)]
        events = Events()
        results = dumplib.watch(all=targets[0].name, triggers=dumplib.ThreadsAbove(1), max_dumps_per=(2, 60),
                                path=outdir, sample_every=0.2, timeout=3, on_event=events)
        assert len(results) == 2 == len(cores(outdir))
        assert {e.pid for _, e in events.of("watching")} == {t.pid for t in targets}
        assert len(events.of("rate-limited")) >= 2
        for t in targets:
            t.assert_running_untraced()


def test_every_process_of_a_name_includes_ones_started_later(unique_python: str, tmp_path: Path,
                                                            outdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(py_target(unique_python, tmp_path))
        later_ones: List[PyTarget] = []
        later(1.0, lambda: later_ones.append(stack.enter_context(py_target(unique_python, tmp_path))))
        results = dumplib.watch(all=first.name, triggers=dumplib.ThreadsAbove(1), path=outdir, sample_every=0.2,
                                timeout=4)
        assert sorted(r.pid for r in results) == sorted([first.pid] + [t.pid for t in later_ones])
        assert len({r.path for r in results}) == 2


def test_wait_for_watches_the_process_once_it_starts(unique_python: str, tmp_path: Path, outdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        started: List[PyTarget] = []
        starter = later(1.0, lambda: started.append(stack.enter_context(py_target(unique_python, tmp_path))))
        results = dumplib.watch(wait_for=Path(unique_python).name, triggers=dumplib.ThreadsAbove(1), path=outdir,
                                sample_every=0.2, timeout=10)
        starter.join(10)  # the watcher may find the process before the starter has read its first line
        assert [r.pid for r in results] == [started[0].pid]


def test_launch_starts_and_watches_the_command(tmp_path: Path, outdir: Path) -> None:
    script = tmp_path / "spawn.py"
    script.write_text("import threading, time\n"
                      "for _ in range(5): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
                      "time.sleep(30)\n")
    results = dumplib.watch(launch=[sys.executable, str(script)], triggers=dumplib.ThreadsAbove(6), path=outdir,
                            sample_every=0.2, timeout=15)
    assert len(results) == 1
    os.kill(results[0].pid, signal.SIGKILL)


def test_a_refused_dump_is_reported_and_watching_goes_on(target: PyTarget, outdir: Path) -> None:
    events = Events()
    results = dumplib.watch(target.pid, dumplib.ThreadsAbove(1), interval=0.5, path=outdir, sample_every=0.1,
                            timeout=2.5, on_event=events, min_free=1 << 60)
    assert results == [] and cores(outdir) == [] and leftovers(outdir) == []
    refused = events.of("refused")
    assert len(refused) >= 2, "watching stopped at the first refusal"
    assert refused[0][1].error and refused[0][1].error["type"] == "InsufficientDiskSpace"
    assert events.of("timeout")
    with pytest.raises(dumplib.InsufficientDiskSpace):
        dumplib.watch(target.pid, dumplib.ThreadsAbove(1), path=outdir, timeout=5, min_free=1 << 60,
                      stop_on_refusal=True)
    target.assert_running_untraced()


def test_the_watch_ends_when_the_target_exits(target: PyTarget, outdir: Path) -> None:
    later(0.5, lambda: target.ask("exit"))
    events = Events()
    t0 = time.monotonic()
    results = dumplib.watch(target.pid, dumplib.ThreadsAbove(50), path=outdir, sample_every=0.1, timeout=20,
                            on_event=events)
    assert results == [] and events.of("exited") and time.monotonic() - t0 < 5


# -- signals --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signal_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("sigbin"), HERE / "signal_target.c", name="dlw-signals")


@contextlib.contextmanager
def signal_target(exe: Path, *args: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def state_of(pid: int) -> Tuple[str, str]:
    status = dict(line.rstrip("\n").split(":\t", 1) for line in open(f"/proc/{pid}/status") if ":\t" in line)
    return status["State"], status["TracerPid"]


def test_signal_is_dumped_before_it_acts_then_delivered_with_its_original_siginfo(signal_exe: Path,
                                                                                  tmp_path: Path,
                                                                                  outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        later(1.0, lambda: os.kill(proc.pid, signal.SIGTERM))
        results = dumplib.watch(proc.pid, dumplib.SignalReceived(["TERM"]), path=outdir, kind="full", timeout=15)
        assert len(results) == 1
        # The memory was read before the handler ran (the handler may run before the dump is placed:
        # the process is let go once its memory is read, test_handover_release.py).
        core = Path(results[0].path).read_bytes()
        assert f"HANDLER-NOT-RUN-{proc.pid}".encode() in core
        assert f"HANDLER-HAS-RUN-{proc.pid}".encode() not in core
        # Delivered once, as sent: SIGTERM, SI_USER (0), from this test's pid, not the watcher's re-send.
        assert handler_lines(side, 1) == [f"signo=15 code=0 pid={os.getpid()}\n"]
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)
        assert proc.poll() is None


def test_each_signal_of_a_count_is_dumped_and_delivered_once(signal_exe: Path, tmp_path: Path,
                                                             outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        later(0.8, lambda: os.kill(proc.pid, signal.SIGTERM))
        later(1.8, lambda: os.kill(proc.pid, signal.SIGTERM))
        results = dumplib.watch(proc.pid, dumplib.SignalReceived("TERM"), count=2, interval=0, path=outdir,
                                timeout=15)
        assert len(results) == 2 == len(cores(outdir))
        deadline = time.monotonic() + 5
        while (not side.exists() or side.read_text().count("\n") < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert side.read_text() == f"signo=15 code=0 pid={os.getpid()}\n" * 2


def test_launch_with_signals_and_samples_keeps_every_signal_as_sent(signal_exe: Path, tmp_path: Path,
                                                                     outdir: Path) -> None:
    """Sampled dumps of a process the signal watcher holds go through the same hand-over; a signal
    arriving meanwhile is re-queued with its own siginfo, never the watcher's.

    Each SIGTERM is sent once the one before has reached the handler: two sent while the process is
    stopped for a dump would be one pending signal (the kernel keeps one of each), on a loaded machine
    that made three lines of four."""
    side = tmp_path / "handler.txt"
    pids: List[int] = []
    senders: List[threading.Thread] = []
    gaps = (0.95, 0.05, 0.05, 0.9)

    def send_each() -> None:
        for n, gap in enumerate(gaps, 1):
            time.sleep(gap)
            os.kill(pids[0], signal.SIGTERM)
            handler_lines(side, n, within=15)

    def on_event(e: dumplib.WatchEvent) -> None:
        if e.event == "watching":
            pids.append(e.pid)  # type: ignore[arg-type]
            senders.append(threading.Thread(target=send_each, daemon=True))
            senders[0].start()

    results = dumplib.watch(launch=[str(signal_exe), str(side)], triggers=[dumplib.SignalReceived("TERM"),
                            dumplib.ThreadsAbove(2)], count=12, interval=0.3, sample_every=0.5, path=outdir,
                            timeout=5, on_event=on_event)
    try:
        assert results and all(r.pid == pids[0] for r in results)
        senders[0].join(60)
        assert handler_lines(side, len(gaps)) == [f"signo=15 code=0 pid={os.getpid()}\n"] * len(gaps)
        state, tracer = state_of(pids[0])
        assert tracer == "0" and state[0] in "RS"
    finally:
        os.kill(pids[0], signal.SIGKILL)


def test_a_refused_signal_dump_still_delivers_the_signal_and_frees_the_target(signal_exe: Path, tmp_path: Path,
                                                                              outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        events = Events()
        later(0.8, lambda: os.kill(proc.pid, signal.SIGTERM))
        results = dumplib.watch(proc.pid, dumplib.SignalReceived("TERM"), path=outdir, timeout=3, min_free=1 << 60,
                                on_event=events)
        assert results == [] and cores(outdir) == [] and leftovers(outdir) == []
        assert len(events.of("refused")) == 1
        assert handler_lines(side, 1) == [f"signo=15 code=0 pid={os.getpid()}\n"]
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)


def test_unwatched_signals_pass_through_untouched(signal_exe: Path, tmp_path: Path, outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        later(1.0, lambda: os.kill(proc.pid, signal.SIGUSR1))
        results = dumplib.watch(proc.pid, dumplib.SignalReceived("TERM"), path=outdir, timeout=2.5)
        assert results == []
        assert handler_lines(side, 1) == [f"signo=10 code=0 pid={os.getpid()}\n"]
        assert state_of(proc.pid)[1] == "0"


def test_sigsegv_is_dumped_at_the_faulting_line_then_the_program_dies_of_it(signal_exe: Path,
                                                                            outdir: Path) -> None:
    require(have("gdb"), "gdb is not installed")
    with signal_target(signal_exe, "--segv") as proc:
        assert proc.stdin is not None
        later(1.0, lambda: (proc.stdin.write("go\n"), proc.stdin.flush()))
        results = dumplib.watch(proc.pid, dumplib.SignalReceived("SEGV"), path=outdir, kind="full", timeout=15)
        assert proc.wait(10) == -signal.SIGSEGV
    assert len(results) == 1
    out = gdb(str(signal_exe), results[0].path, "bt")
    line = next(i for i, text in enumerate((HERE / "signal_target.c").read_text().splitlines(), 1) if "CRASH-LINE" in text)
    assert "#0" in out and "crash_here" in out.split("#1")[0] and f"signal_target.c:{line}" in out, out


def test_ctrl_c_on_the_command_leaves_the_target_running_and_untraced(signal_exe: Path, tmp_path: Path,
                                                                      outdir: Path) -> None:
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "TERM", "--json"], stdout=subprocess.PIPE, text=True)
        assert cli.stdout is not None
        first = json.loads(cli.stdout.readline())
        assert first["event"] == "watching"
        tracer = state_of(proc.pid)[1]
        assert os.path.exists(f"/proc/{cli.pid}/task/{tracer}"), "the watcher's thread is not the tracer"
        cli.send_signal(signal.SIGINT)
        rest = cli.communicate(timeout=30)[0]
        assert cli.returncode == 130
        assert json.loads(rest.splitlines()[-1])["event"] == "stopped"
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)
        os.kill(proc.pid, signal.SIGTERM)  # and it still gets its signals, once, as sent
        assert handler_lines(side, 1) == [f"signo=15 code=0 pid={os.getpid()}\n"]


def test_a_watcher_killed_with_sigkill_leaves_the_target_running_untraced(signal_exe: Path, outdir: Path) -> None:
    with signal_target(signal_exe, "/dev/null") as proc:
        cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "TERM", "--json"], stdout=subprocess.PIPE, text=True)
        assert cli.stdout is not None
        json.loads(cli.stdout.readline())
        cli.kill()
        cli.wait(10)
        deadline = time.monotonic() + 5
        while state_of(proc.pid)[1] != "0" and time.monotonic() < deadline:
            time.sleep(0.02)
        state, tracer = state_of(proc.pid)
        assert tracer == "0" and state[0] in "RS", (state, tracer)


# -- the command ----------------------------------------------------------------------------------------
def test_exec_gets_the_result_json_on_stdin_and_the_path_in_the_environment(target: PyTarget, tmp_path: Path,
                                                                            outdir: Path) -> None:
    got = tmp_path / "got"
    hook = f"cat > {got}.json; printf %s \"$DUMPLIB_DUMP_PATH\" > {got}.path"
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "watch", str(target.pid), "-o", str(outdir),
                           "--threads", "1", "--sample-every", "0.2", "--timeout", "20", "--exec", hook, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in lines][:3] == ["watching", "fired", "dumped"]
    dumped = next(e for e in lines if e["event"] == "dumped")
    result = json.loads((tmp_path / "got.json").read_text())
    assert result == dumped["result"]
    assert (tmp_path / "got.path").read_text() == result["path"] and Path(result["path"]).exists()
    assert lines[1]["value"] == len(os.listdir(f"/proc/{target.pid}/task"))


def test_dump_all_writes_one_file_per_process(unique_python: str, tmp_path: Path, outdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(py_target(unique_python, tmp_path)) for _ in range(3)]
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", "--all", targets[0].name, str(outdir),
                               "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        pids = sorted(json.loads(line)["pid"] for line in done.stdout.splitlines())
        assert pids == sorted(t.pid for t in targets)
        assert len(cores(outdir)) == 3


def test_dump_all_to_a_fixed_file_name_is_refused_before_any_process_is_dumped(unique_python: str, tmp_path: Path,
                                                                              outdir: Path) -> None:
    """Every dump would get that one name: the first written, the second DumpExists (exit 6). Refused up
    front instead, as watch refuses it; {pid} in the name, or a directory, gives each its own."""
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(py_target(unique_python, tmp_path)) for _ in range(2)]
        name = targets[0].name
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", "--all", name, str(outdir / "x.core"),
                               "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (done.stdout, done.stderr)
        err = json.loads(done.stdout)["error"]
        assert err["type"] == "InvalidArgument" and "put {pid} in the file name" in err["message"], err
        with pytest.raises(dumplib.InvalidArgument, match="would name dumps of every process of a name alike"):
            dumplib.dump_all(name, outdir / "x.core", "mini")
        assert list(outdir.iterdir()) == []
        for t in targets:
            assert_running_untraced(t.pid)
        got = dumplib.dump_all(name, str(outdir) + "/x_{pid}.core", "mini", sidecar=False)
        assert sorted(os.path.basename(r.path) for r in got) == sorted(f"x_{t.pid}.core" for t in targets)  # type: ignore[union-attr]


def test_the_python_example_in_docs_watch_runs(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import re

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (HERE.parents[1] / "docs" / "watch.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/watch.md", "exec"), {})


def test_triggers_this_platform_cannot_serve_are_refused_before_anything_is_touched(target: PyTarget,
                                                                                    outdir: Path) -> None:
    with pytest.raises(dumplib.InvalidArgument):
        dumplib.watch(target.pid, dumplib.ExceptionRaised([0xC0000005]), path=outdir, timeout=5)
    target.assert_running_untraced()
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "watch", str(target.pid), "--exception", "any",
                           "--timeout", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ExceptionRaised is Windows only" in done.stderr
    target.assert_running_untraced()


def test_a_terminal_gets_a_live_status_line_and_a_pipe_does_not(target: PyTarget, outdir: Path) -> None:
    import pty

    args = [sys.executable, "-m", "dumplib_cli", "watch", str(target.pid), "-o", str(outdir), "--threads", "50",
            "--sample-every", "0.2", "--timeout", "1.5"]
    master, slave = pty.openpty()
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert done.returncode == 0
    threads = len(os.listdir(f"/proc/{target.pid}/task"))
    assert f"\rpid {target.pid}: cpu ".encode() in seen and f"threads {threads},".encode() in seen, seen
    piped = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert "\r" not in piped.stderr and f"pid {target.pid}: cpu" not in piped.stderr


def test_a_hand_over_that_fails_half_way_lets_every_thread_go(signal_exe: Path, tmp_path: Path, outdir: Path,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Fault injection: the other threads are stopped, then the hand-over fails before the dump.
    Every thread must run on, untraced, and the signal must still arrive as sent; the failure is
    reported for that process and the watch goes on (a DumpFailed can pass)."""
    from dumplib._linux import signalwatch

    real = signalwatch.SignalWatcher._interrupt_others

    def stops_then_fails(self, keep):  # type: ignore[no-untyped-def]
        real(self, keep)
        raise dumplib.DumpFailed("injected failure after every other thread stopped")

    monkeypatch.setattr(signalwatch.SignalWatcher, "_interrupt_others", stops_then_fails)
    side = tmp_path / "handler.txt"
    with signal_target(signal_exe, str(side)) as proc:
        later(0.8, lambda: os.kill(proc.pid, signal.SIGTERM))
        events = Events()
        delivered_while_watching = []

        def on_event(e: dumplib.WatchEvent) -> None:
            events(e)
            if e.event == "timeout":  # let go at once: before the watcher lets go of everything at its end
                deadline = time.monotonic() + 4
                while not side.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                delivered_while_watching.append(side.exists())

        results = dumplib.watch(proc.pid, dumplib.SignalReceived("TERM"), path=outdir, timeout=6, on_event=on_event)
        assert results == [] and [e.message for _, e in events.of("failed")] == [
            "injected failure after every other thread stopped"]
        assert delivered_while_watching == [True] and events.of("timeout")
        assert handler_lines(side, 1) == [f"signo=15 code=0 pid={os.getpid()}\n"]
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{tid}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            assert status["TracerPid"] == "0" and status["State"][0] in "RS", (tid, status["State"])
        assert cores(outdir) == []


def test_dump_all_with_a_target_as_well_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", "1", str(tmp_path), "--all", "python3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a TARGET too" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
