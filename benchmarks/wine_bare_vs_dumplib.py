"""dumplib.create_dump vs a bare ctypes MiniDumpWriteDump call, under Wine, same target, interleaved.

    python benchmarks/wine_bare_vs_dumplib.py [--runs 5] [--kinds mini,full]

Prints the median seconds of each contender, the ratio dumplib / bare and dumplib's overhead in
milliseconds (the median of the per-run differences, each run pairing one bare call with one
dumplib call made next to it) per kind. dumplib's
figure includes everything it adds: target lookup, checks, owner-only temp file, verification
by reading the dump back, and the rename. Goal (issue #2): ratio <= 1.10 for mini and full.
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from winrig import Rig, windows_path  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kinds", default="mini,full")
    ns = ap.parse_args()
    rig = Rig().setup()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dumplib-bench-") as out, rig.target() as target:
        done = rig.run_python(
            [windows_path(HERE / "winside_bare_vs_dumplib.py"), str(target.pid), windows_path(out), str(ns.runs), ns.kinds],
            timeout=3600,
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(f"{'kind':<6} {'bare s':>8} {'dumplib s':>10} {'ratio':>6} {'overhead ms':>12} {'MB':>7}"
          f"  (median of {ns.runs}, Wine {rig.python_version()})")
    for kind in ns.kinds.split(","):
        runs = {who: [r["seconds"] for r in rows if r["kind"] == kind and r["who"] == who] for who in ("bare", "dumplib")}
        bare, ours = statistics.median(runs["bare"]), statistics.median(runs["dumplib"])
        overhead = statistics.median(o - b for o, b in zip(runs["dumplib"], runs["bare"]))
        size = statistics.median(r["bytes"] for r in rows if r["kind"] == kind and r["who"] == "dumplib")
        print(f"{kind:<6} {bare:>8.3f} {ours:>10.3f} {ours / bare:>6.3f} {overhead * 1e3:>12.0f} {size / 1e6:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
