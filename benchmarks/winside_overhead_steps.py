"""Runs inside Windows python.exe (see wine_overhead_steps.py): where create_dump's time goes, per step.

Prints one JSON line per run: {"kind", "total", "steps": {step: seconds}}. Each step is timed by
wrapping the function the pipeline calls, in the same call, so MiniDumpWriteDump's own time (which
varies by ±0.5 s from one call to the next under a loaded Wine) is taken out of dumplib's overhead
instead of being compared across calls.
"""
import functools
import json
import os
import sys
import time

import dumplib
from dumplib import api, outputs
from dumplib._windows import backend, dbghelp, writer

pid, outdir, runs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
kinds = sys.argv[4].split(",")
steps = {}


def timed(owner, name, label):
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            steps[label] = steps.get(label, 0.0) + time.perf_counter() - began

    setattr(owner, name, wrapper)


# What the pipeline calls, by the names it looks them up with at call time.
timed(dbghelp, "MiniDumpWriteDump", "MiniDumpWriteDump")
timed(api, "resolve_target", "resolve target")
timed(backend.WindowsPlatform, "open", "open target")
timed(backend.WindowsSession, "plan", "plan (memory walk)")
timed(writer.WriteMonitor, "__enter__", "monitor start")
timed(writer.WriteMonitor, "__exit__", "monitor stop (join)")
timed(backend, "check_dump", "verify (read back)")
timed(outputs.PlainFile, "_place", "sidecar + placing")

for i in range(runs):
    for kind in kinds:
        path = os.path.join(outdir, f"steps-{kind}-{i}.dmp")
        steps.clear()
        began = time.perf_counter()
        dumplib.create_dump(pid, path, kind)
        total = time.perf_counter() - began
        for p in (path, path + ".json"):
            os.remove(p)
        print(json.dumps({"kind": kind, "run": i, "total": total, "steps": dict(steps)}), flush=True)
