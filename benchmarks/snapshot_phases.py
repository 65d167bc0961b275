"""Where a snapshot's stop goes, phase by phase, in-process (Linux, root).

    PYTHONPATH=$PWD python benchmarks/snapshot_phases.py [--runs 5] [--mib 2048]

Times, with wrappers around dumplib's own steps (private names: this is a measuring tool, not an
API), each snapshot dump of a C target holding MIB MiB (tests/e2e_linux/target.c --heap --ticker):
stall (the longest gap of the target's 1 ms ticker), stopped (DumpResult.stopped_seconds), and the
steps seen from dumplib's side: seize (the helper's start and stop of every thread), layout (smaps,
or /proc/PID/maps where the read made just before the stop holds (snapshot/guess.py), selection,
notes and residency, with the target stopped), guess (that read, target running), layout_after (the
rest of the layout from the clone once the target runs, its smaps check too: not in the stop), smaps
(the plan's smaps read, and the stop's where it reads one), the policy checks, clone (the helper's
injected clone(), a pipe round trip included), early (memory read before resume) and resume.
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
    ns = ap.parse_args()
    for owner, name, label in [(remote.RemoteStoppedProcess, "__enter__", "seize"), (backend, "_stopped_layout", "layout"),
                               (backend, "_lay_out_from_clone", "layout_after"),
                               (backend, "_smaps", "smaps"), (backend, "_notes", "notes"),
                               (policy, "obstacle", "obstacle"), (policy, "find_syscall", "find_syscall"),
                               (remote.RemoteStoppedProcess, "take_snapshot", "clone"),
                               (remote.RemoteStoppedProcess, "resume_target", "resume"),
                               (backend._Snapshot, "read_before_resume", "early")]:
        timed(owner, name, label)
    if hasattr(backend, "_guess_before_stop"):  # the smaps read made before the stop (snapshot/guess.py)
        timed(backend, "_guess_before_stop", "guess")
    work = Path(tempfile.mkdtemp(prefix="dumplib-phases-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    exe = build_target(work)
    print(f"load {os.getloadavg()[0]:.1f}; ms per step")
    with run_target([str(exe), "--heap", str(ns.mib), "--ticker"]) as t:
        for run in range(ns.runs):
            SPANS.clear()
            t.ask("gap")
            out = work / "out.core"
            result = dumplib.create_dump(t.pid, str(out), "full", snapshot=True, overwrite=True, sidecar=False)
            stall = int(t.ask("gap")) / 1e6
            steps = " ".join(f"{k}={sum(b - a for a, b in v) * 1000:.1f}" for k, v in SPANS.items())
            print(f"run {run}: stall {stall:.3f} s, stopped {result.stopped_seconds:.3f} s; {steps}", flush=True)
            out.unlink()
    print(f"load {os.getloadavg()[0]:.1f}")
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
