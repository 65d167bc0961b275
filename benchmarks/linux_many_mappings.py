"""Planning and dumping a process with many file mappings: dumplib vs gcore, in one run.

    python benchmarks/linux_many_mappings.py [--mappings 60000] [--runs 3] [--kinds mini,full]

The target (tests/e2e_linux/shapes_mem/shapes.c, built here by gcc) maps the one page of a file N
times (offset 0 each time, so no two mappings merge and every one is a candidate ELF header page:
the worst case for the old planner). For each kind it prints the median seconds of
dumplib's estimate (reads /proc only), of a dump (API, no sidecar: like for like with gcore), the
target's stop inside that dump, and gcore's wall seconds on the same target. Planning used to be
quadratic in file mappings (20 000: 35 s for the estimate and again for the dump; gcore 1.8 s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import dumplib  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mappings", type=int, default=60000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default="mini,full")
    ns = ap.parse_args()
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    if ns.mappings + 100 > limit:
        print(f"vm.max_map_count is {limit}: raise it (sysctl vm.max_map_count=...) for {ns.mappings} mappings")
        return 2
    work = Path(tempfile.mkdtemp(prefix="dumplib-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    try:
        exe = work / "shapes"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(HERE.parent / "tests/e2e_linux/shapes_mem/shapes.c")],
                       check=True)
        page = work / "one-page"
        page.write_bytes(b"\x01" * 4096)
        target = subprocess.Popen([str(exe), "many", str(ns.mappings), str(page)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            pid = json.loads(target.stdout.readline())["pid"]  # type: ignore[union-attr]
            with open(f"/proc/{pid}/maps") as f:
                count = sum(1 for _ in f)
            print(f"target pid {pid}: {count} mappings; median of {ns.runs} interleaved runs")
            print(f"{'kind':<6} {'estimate s':>10} {'dump s':>8} {'stopped s':>9} {'gcore s':>8} {'dump/gcore':>10} {'MB':>7}")
            gcores = []
            for kind in ns.kinds.split(","):
                est, dump, stop, size = [], [], [], 0
                for _ in range(ns.runs):
                    t0 = time.perf_counter()
                    dumplib.estimate(pid, kind)
                    est.append(time.perf_counter() - t0)
                    out = work / "out.core"
                    t0 = time.perf_counter()
                    result = dumplib.create_dump(pid, out, kind, overwrite=True, sidecar=False)
                    dump.append(time.perf_counter() - t0)
                    stop.append(result.stopped_seconds or 0.0)
                    size = result.disk_bytes or 0
                    out.unlink()
                    if len(gcores) < ns.runs:
                        t0 = time.perf_counter()
                        subprocess.run(["gcore", "-o", str(work / "g"), str(pid)], check=True, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                        gcores.append(time.perf_counter() - t0)
                        (work / f"g.{pid}").unlink()
                g = statistics.median(gcores)
                d = statistics.median(dump)
                print(f"{kind:<6} {statistics.median(est):>10.2f} {d:>8.2f} {statistics.median(stop):>9.2f} {g:>8.2f}"
                      f" {d / g:>10.2f} {size / 1e6:>7.1f}")
        finally:
            target.kill()
            target.wait()
    finally:
        subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
