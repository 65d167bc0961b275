"""The watcher's own cost and its trigger latency (a benchmark script, not a test).

    python benchmarks/watch_overhead.py [--seconds 30]

Prints, for a watcher at the default 1 s sampling interval: its CPU use in percent of one core
(the difference between a long and a short run, so interpreter start-up is not counted) while
watching one process, one process with a signal trigger (its tracer thread) beside the sampling,
a signal trigger alone (`watch PID --signal`), and every process of a name (5 processes); then the delay from a condition becoming true in the target
(CLOCK_MONOTONIC is system-wide) to the watcher firing and starting the dump.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]

WATCHER = r"""
import sys, dumplib
mode, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
never = dumplib.MemoryAbove(1 << 50)
if mode == "one":
    dumplib.watch(int(target), never, timeout=seconds)
elif mode == "signal":
    dumplib.watch(int(target), [never, dumplib.SignalReceived("USR2")], timeout=seconds)
elif mode == "signal-only":  # `dumplib watch PID --signal USR2`: no sampling, only the tracer thread
    dumplib.watch(int(target), dumplib.SignalReceived("USR2"), timeout=seconds)
else:
    dumplib.watch(all=target, triggers=never, timeout=seconds)
"""

LATENCY_TARGET = r"""
import sys, threading, time
print("ready", flush=True)
sys.stdin.readline()
time.sleep(float(sys.argv[1]))
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print(time.monotonic(), flush=True)
time.sleep(60)
"""


def cpu_seconds(args: List[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.environ.get("WATCH_REPO", str(REPO)))  # WATCH_REPO: another checkout
    proc = subprocess.Popen([sys.executable, "-c", WATCHER, *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def overhead(mode: str, target: str, seconds: float) -> float:
    short = min(cpu_seconds([mode, target, "2"]) for _ in range(3))
    long = cpu_seconds([mode, target, str(seconds)])
    return 100.0 * (long - short) / (seconds - 2)


def latency(runs: int) -> List[float]:
    sys.path.insert(0, str(REPO))
    import dumplib

    out = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(runs):
            t = subprocess.Popen([sys.executable, "-c", LATENCY_TARGET, str(0.3 + 0.137 * i)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert t.stdout and t.stdin
            t.stdout.readline()
            fired = []
            t.stdin.write("go\n")
            t.stdin.flush()
            dumplib.watch(t.pid, dumplib.ThreadsAbove(2), path=d, timeout=10,
                          on_event=lambda e: fired.append(time.monotonic()) if e.event == "fired" else None)
            became_true = float(t.stdout.readline())
            out.append(fired[0] - became_true)
            t.kill()
            t.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    name = "dlb" + uuid.uuid4().hex[:8]
    link = Path(tempfile.mkdtemp()) / name
    link.symlink_to(os.path.realpath(sys.executable))
    procs = [subprocess.Popen([str(link), "-c", "import time; time.sleep(3600)"]) for _ in range(5)]
    try:
        print(f"watching one process:             {overhead('one', str(procs[0].pid), a.seconds):.3f}% of one core")
        print(f"one process + SignalReceived:     {overhead('signal', str(procs[0].pid), a.seconds):.3f}% of one core")
        print(f"SignalReceived alone (--signal):  {overhead('signal-only', str(procs[0].pid), a.seconds):.3f}% of one core")
        print(f"every process of a name (5):      {overhead('all', name, a.seconds):.3f}% of one core")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lat = latency(a.runs)
    print(f"condition true -> fired (1 s sampling), {a.runs} runs: median {statistics.median(lat) * 1000:.0f} ms,"
          f" max {max(lat) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
