"""dumplib `full` vs gcore vs a raw C copy, interleaved in one run, on live targets.

    python benchmarks/linux_vs_gcore.py [--runs 5] [--sizes 200,2048] [--python]

For each target it prints the median wall seconds, the target's longest stall (a 1 ms ticker
thread inside the target reports its largest gap), and bytes on disk (st_blocks), with ratios
against gcore and the raw bound. dumplib is timed in-process (the API: as used by default, i.e.
with the sidecar and its sha256; without the sidecar, which is like for like with gcore and the raw
copy; and with `compress="zstd"`) and as the `dumplib` command (adds interpreter start-up). Targets pre-touch their heap; contenders are interleaved
because this VM returns freed memory to the host.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import dumplib  # noqa: E402
from dumplib._backend import get_backend  # noqa: E402
from linuxrig import build_target, run_target  # noqa: E402

PY_TICKER_TARGET = r"""
import json, os, sys, threading, time
blob = [bytes([i % 251 + 1]) * 1000 for i in range(200_000)]  # ~200 MB of Python objects
gap = [0.0]
last = [time.monotonic()]
def tick():
    while True:
        time.sleep(0.001); now = time.monotonic(); gap[0] = max(gap[0], now - last[0]); last[0] = now
threading.Thread(target=tick, daemon=True).start()
print(json.dumps({"pid": os.getpid()}), flush=True)
for line in sys.stdin:  # count a gap still open: the ticker may not have woken since the stop ended
    print(int(max(gap[0], time.monotonic() - last[0]) * 1e6), flush=True); gap[0] = 0.0
"""


def disk_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="200,2048", help="heap MiB of the C targets")
    ap.add_argument("--python", action="store_true", help="also a Python target (~200 MB of objects)")
    ns = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dumplib-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    exe = build_target(work)
    raw = work / "rawcopy"
    subprocess.run(["gcc", "-O2", "-o", str(raw), str(HERE / "rawcopy.c")], check=True)
    targets = [(f"C, {m} MiB heap", [str(exe), "--heap", m, "--ticker"]) for m in ns.sizes.split(",")]
    if ns.python:
        targets.append(("Python, 200 MB objects", [sys.executable, "-c", PY_TICKER_TARGET]))
    print(f"median of {ns.runs} interleaved runs; stall = longest gap seen by a 1 ms ticker in the target")
    print(f"{'target':<24} {'contender':<15} {'wall s':>7} {'stall s':>8} {'disk MB':>8} {'wall/gcore':>10} {'wall/raw':>8} {'disk/gcore':>10}")
    for label, argv in targets:
        with run_target(argv) as t:
            t.ask("gap")
            plan = get_backend().plan(dumplib.resolve_target(t.pid), dumplib.DumpKind.FULL, None)
            ranges = "".join(f"{s.start:x} {s.end:x}\n" for s in plan.detail.segments if s.dump_start == s.start)
            out = str(work / "out")

            def api() -> None:
                dumplib.create_dump(t.pid, out, "full", overwrite=True)

            def api_bare() -> None:  # like for like with gcore and the raw copy: neither hashes its output
                dumplib.create_dump(t.pid, out, "full", overwrite=True, sidecar=False)

            def api_zstd() -> None:
                dumplib.create_dump(t.pid, out, "full", overwrite=True, compress="zstd")

            def cli() -> None:
                subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), out, "-k", "full", "--overwrite"],
                               check=True, stdout=subprocess.DEVNULL)

            def gcore() -> None:
                subprocess.run(["gcore", "-o", out + ".g", str(t.pid)], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                os.replace(f"{out}.g.{t.pid}", out)

            def rawcopy() -> None:
                subprocess.run([str(raw), str(t.pid), out], input=ranges, text=True, check=True)

            contenders: Dict[str, Callable[[], None]] = {
                "dumplib API": api, "API no sidecar": api_bare, "API zstd": api_zstd, "dumplib CLI": cli,
                "gcore": gcore, "raw C copy": rawcopy,
            }
            rows: Dict[str, List[tuple]] = {k: [] for k in contenders}
            names = list(contenders)
            for i in range(ns.runs):
                for name in names[i % len(names):] + names[: i % len(names)]:
                    t.ask("gap")
                    start = time.perf_counter()
                    contenders[name]()
                    wall = time.perf_counter() - start
                    stall = int(t.ask("gap")) / 1e6
                    rows[name].append((wall, stall, disk_bytes(out)))
                    os.remove(out)
                    if os.path.exists(out + ".json"):
                        os.remove(out + ".json")
            med = {k: tuple(statistics.median(r[j] for r in v) for j in range(3)) for k, v in rows.items()}
            g, r = med["gcore"], med["raw C copy"]
            for name, (wall, stall, disk) in med.items():
                print(f"{label:<24} {name:<15} {wall:>7.3f} {stall:>8.3f} {disk / 1e6:>8.1f} {wall / g[0]:>10.2f}"
                      f" {wall / r[0]:>8.2f} {disk / g[2]:>10.2f}")
    subprocess.run(["rm", "-rf", str(work)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
