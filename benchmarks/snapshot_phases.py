"""Where a snapshot's stop goes, phase by phase, in-process (Linux, root).

    PYTHONPATH=$PWD python benchmarks/snapshot_phases.py [--runs 5] [--mib 2048] [--own-session]

Times, with wrappers around dumplib's own steps (private names: this is a measuring tool, not an
API), each snapshot dump of a C target holding MIB MiB (tests/e2e_linux/target.c --heap --ticker):
stall (the longest gap of the target's 1 ms ticker), stopped (DumpResult.stopped_seconds), and the
steps seen from dumplib's side: seize (the helper's start and stop of every thread), layout (smaps,
or /proc/PID/maps where the read made just before the stop holds (snapshot/guess.py), selection,
notes and residency, with the target stopped), guess (that read, target running), layout_after (the
rest of the layout from the clone once the target runs, its smaps check too: not in the stop), smaps
(the plan's smaps read, and the stop's where it reads one), the policy checks, clone (the helper's
injected clone(), a pipe round trip included, and the target's release where nothing is left to
read from it: resume is then ~0), early (memory read before resume) and resume; and
clone_cpu / clone_wait, the kernel's count (schedstat) of the time the target's threads ran and
waited for a CPU during that call, which its stopped threads take no part in (where the target is
let go with the clone's making, its first moments of running count too). --own-session: the
target in a session (so an autogroup) of its own, as a service is, not in the benchmark's.
docs/benchmarks.md quotes it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))
import dumplib  # noqa: E402
from dumplib._linux import backend  # noqa: E402
from dumplib._linux.snapshot import policy, remote  # noqa: E402
from linuxrig import build_target, run_target  # noqa: E402

SPANS: Dict[str, List[Tuple[float, float]]] = {}
#: The kernel's own count for the target's threads over each injected clone() (schedstat: time run,
#: time waited on a run queue), in ms: all but the calling thread are stopped then, so it is that call's.
CLONE_SCHED: List[Tuple[float, float]] = []


def schedstat(pid: int) -> Tuple[int, int]:
    """The sums over process *pid*'s threads of /proc/PID/task/TID/schedstat's first two fields (ns)."""
    ran = waited = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran, waited


def counted(owner: object, name: str) -> None:
    """Wrap *owner.name* (take_snapshot) to add the target's schedstat over each call to CLONE_SCHED."""
    original = getattr(owner, name)

    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        before = schedstat(self.pid)
        try:
            return original(self, *args, **kwargs)
        finally:
            after = schedstat(self.pid)
            CLONE_SCHED.append(((after[0] - before[0]) / 1e6, (after[1] - before[1]) / 1e6))

    setattr(owner, name, wrapper)


def timed(owner: object, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            SPANS.setdefault(label, []).append((start, time.monotonic()))

    setattr(owner, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=2048)
    ap.add_argument("--own-session", action="store_true", help="start the target with setsid()")
    ns = ap.parse_args()
    for owner, name, label in [(remote.RemoteStoppedProcess, "__enter__", "seize"), (backend, "_stopped_layout", "layout"),
                               (backend, "_lay_out_from_clone", "layout_after"),
                               (backend, "_smaps", "smaps"), (backend, "_notes", "notes"),
                               (policy, "obstacle", "obstacle"), (policy, "find_syscall", "find_syscall"),
                               (remote.RemoteStoppedProcess, "take_snapshot", "clone"),
                               (remote.RemoteStoppedProcess, "resume_target", "resume"),
                               (backend._Snapshot, "read_before_resume", "early")]:
        timed(owner, name, label)
    counted(remote.RemoteStoppedProcess, "take_snapshot")  # around the phase timer: its reads are not in clone
    if hasattr(backend, "_guess_before_stop"):  # the smaps read made before the stop (snapshot/guess.py)
        timed(backend, "_guess_before_stop", "guess")
    work = Path(tempfile.mkdtemp(prefix="dumplib-phases-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    exe = build_target(work)
    print(f"load {os.getloadavg()[0]:.1f}; ms per step")
    with run_target([str(exe), "--heap", str(ns.mib), "--ticker"], preexec=os.setsid if ns.own_session else None) as t:
        for run in range(ns.runs):
            SPANS.clear()
            CLONE_SCHED.clear()
            t.ask("gap")
            out = work / "out.core"
            result = dumplib.create_dump(t.pid, str(out), "full", snapshot=True, overwrite=True, sidecar=False)
            stall = int(t.ask("gap")) / 1e6
            steps = " ".join(f"{k}={sum(b - a for a, b in v) * 1000:.1f}" for k, v in SPANS.items())
            sched = " ".join(f"clone_cpu={ran:.1f} clone_wait={waited:.1f}" for ran, waited in CLONE_SCHED)
            print(f"run {run}: stall {stall:.3f} s, stopped {result.stopped_seconds:.3f} s; {steps} {sched}", flush=True)
            out.unlink()
    print(f"load {os.getloadavg()[0]:.1f}")
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
