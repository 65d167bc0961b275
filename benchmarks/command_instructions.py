"""Instructions the one-shot `dumplib dump PID OUT -k mini` of a small process executes (valgrind's callgrind).

    python benchmarks/command_instructions.py [--baseline CHECKOUT] [--runs 2] [--no-site]

Load-independent, where command_vs_gcore.py's milliseconds move with the machine's load. Counted for the
whole process (every thread), beside a bare `python -c pass`, for this checkout and optionally another.
valgrind 3.19 (Debian 12) lacks pidfd_open (syscall 434): the command runs with os.pidfd_open stood in
for by a pipe's read end (never ready, as a live process's pidfd is); the rest runs as the console script
runs it (cli/app.py's main(), which ends the process with os._exit). --no-site: `python -S`, no
site-packages (what an installed dumplib pays without this venv's editable-install finder, whose
imports of re, enum, pathlib... are then dumplib's). Bytecode is compiled first.
"""
from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from linuxrig import build_target, run_target  # noqa: E402

#: The console script's main(), with the pidfd stand-in (the process's own instructions: none of it
#: changes what the dump does).
COMMAND = """
import os, sys
_r, _w = os.pipe()
os.pidfd_open = lambda pid, flags=0: os.dup(_r)
sys.argv[0] = "dumplib"
from dumplib_cli.app import main
main()
"""


def instructions(argv: List[str], env: dict, cwd: Path) -> int:
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{argv}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", metavar="CHECKOUT", help="another checkout (e.g. `git clone -q /work/main /tmp/base`)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-site", action="store_true", help="python -S")
    ns = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    checkouts = {"this checkout": ROOT}
    if ns.baseline:
        checkouts["baseline"] = Path(ns.baseline).resolve()
    work = Path(tempfile.mkdtemp(prefix="dumplib-instr-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    flags = ["-S"] if ns.no_site else []
    try:
        envs = {}
        for name, checkout in checkouts.items():
            for package in ("dumplib", "cli"):
                compileall.compile_dir(str(checkout / package), quiet=1)
            links = work / f"path-{len(envs)}"
            links.mkdir()
            (links / "dumplib_cli").symlink_to(checkout / "cli")  # the checkout's, not an installed one
            envs[name] = dict(os.environ, PYTHONPATH=os.pathsep.join([str(checkout), str(links)]))
            envs[name].pop("PYTHONDONTWRITEBYTECODE", None)
        exe = build_target(work)
        rows = {"python -c pass": [instructions([sys.executable, *flags, "-c", "pass"], dict(os.environ), work)
                                   for _ in range(ns.runs)]}
        with run_target([str(exe)]) as t:
            for name, env in envs.items():
                counts = []
                for _ in range(ns.runs):
                    out = work / "out"
                    counts.append(instructions([sys.executable, *flags, "-c", COMMAND, "dump", str(t.pid), str(out),
                                                "-k", "mini"], env, work))
                    os.remove(out), os.remove(str(out) + ".json")
                rows[f"dump -k mini, {name}"] = counts
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare = statistics.median(rows["python -c pass"])
    print(f"instructions (callgrind, whole process), median of {ns.runs}{', python -S' if ns.no_site else ''}")
    for name, counts in rows.items():
        median = statistics.median(counts)
        print(f"{name:<32} {median / 1e6:8.1f} M   over bare {(median - bare) / 1e6:7.1f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
