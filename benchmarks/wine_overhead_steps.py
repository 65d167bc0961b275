"""dumplib's own time in create_dump under Wine, step by step, beside MiniDumpWriteDump's.

    python benchmarks/wine_overhead_steps.py [--runs 5] [--kinds mini,full]

wine_bare_vs_dumplib.py compares whole calls; on a loaded machine MiniDumpWriteDump alone varies
by more than dumplib adds, so its overhead column can come out negative or at +1.6 s from one
run to the next. Here each step is timed inside the same call (see winside_overhead_steps.py), and
dumplib's overhead is the call's time minus its own MiniDumpWriteDump. The first run of each
kind pays the imports (psutil's above all) and is shown apart.
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
    with tempfile.TemporaryDirectory(prefix="dumplib-steps-") as out, rig.target() as target:
        done = rig.run_python(
            [windows_path(HERE / "winside_overhead_steps.py"), str(target.pid), windows_path(out), str(ns.runs),
             ns.kinds], timeout=3600)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(f"Wine {rig.python_version()}, median of {ns.runs - 1} warm runs (the first, cold, run apart), ms")
    for kind in ns.kinds.split(","):
        cold, *warm = [r for r in rows if r["kind"] == kind]
        names = list(cold["steps"])
        print(f"\n{kind:<6}{'step':<42} {'warm ms':>9} {'cold ms':>9}")
        for name in ["total"] + names + ["dumplib's own (total - MiniDumpWriteDump)"]:
            def value(r):
                if name == "total":
                    return r["total"]
                if name.startswith("dumplib's own"):
                    return r["total"] - r["steps"]["MiniDumpWriteDump"]
                return r["steps"].get(name, 0.0)
            med = statistics.median(value(r) for r in warm) if warm else float("nan")
            print(f"{'':<6}{name:<42} {med * 1e3:>9.1f} {value(cold) * 1e3:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
