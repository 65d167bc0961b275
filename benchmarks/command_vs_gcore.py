"""The one-shot command on a small process: `dumplib dump PID --kind mini` vs gcore, whole processes.

    python benchmarks/command_vs_gcore.py [--runs 21] [--procdump PATH] [--baseline CHECKOUT]

A small process (the C test target: a few threads, no big heap) is dumped again and again by each
contender, interleaved in rotating order; each is one whole process timed from spawn to exit, with
its CPU time (its own and its children's). Beside them: the interpreter alone (`python -c pass`, the
floor any Python command pays on this machine), `import dumplib`, the same command forced through
typer's parser (what every command line cost before the quick parser), and the in-process API call
(warm: no start-up, no imports). Bytecode is compiled first, as an installed package has it.

Memory selected: dumplib `mini` takes the live part of every thread stack, [vdso], ELF header
pages, the writable data of the executable and loader and the link_map pages; `full` all readable
memory; gcore and ProcDump follow the target's coredump_filter (0x33: anonymous memory, ELF headers).
"""
from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from linux_vs_gcore import ROOT, children_cpu, cli_env, compile_bytecode, find_procdump, procdump_once  # noqa: E402
from linux_vs_gcore import PROCDUMP_ERRORS  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
import dumplib  # noqa: E402
from linuxrig import build_target, run_target  # noqa: E402

TYPER_PATH = "import sys; from dumplib_cli.app import typer_app; typer_app()(args=sys.argv[1:], prog_name='dumplib')"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--procdump", help="ProcDump for Linux's binary (default: $PROCDUMP or a known build)")
    ap.add_argument("--baseline", metavar="CHECKOUT",
                    help="another checkout (e.g. `git worktree add /tmp/base main`): its `dump -k mini` joins the rounds")
    ns = ap.parse_args()
    compile_bytecode()
    procdump = find_procdump(ns.procdump)
    work = Path(tempfile.mkdtemp(prefix="dumplib-cmd-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    env = cli_env()
    # The checkout's cli/ as `dumplib_cli` (an installed dumplib_cli, e.g. an editable install of another
    # checkout, would otherwise answer the import): a directory holding only that link, after ROOT.
    links = work / "path"
    links.mkdir()
    (links / "dumplib_cli").symlink_to(ROOT / "cli")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(links)])
    try:
        exe = build_target(work)
        with run_target([str(exe)]) as t:
            pid = str(t.pid)
            out = str(work / "out")
            dump = [sys.executable, "-m", "dumplib_cli", "dump", pid, out]

            def run(argv: List[str]) -> Callable[[], None]:
                # cwd: `python -m` puts the working directory first on sys.path, where a checkout's dumplib
                # would shadow the one PYTHONPATH names.
                return lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, cwd=work)

            def gcore() -> None:
                subprocess.run(["gcore", "-o", out + ".g", pid], check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                os.replace(f"{out}.g.{pid}", out)

            def procdump_run() -> None:
                assert procdump
                procdump_once(procdump, pid, out)

            def api() -> None:
                dumplib.create_dump(t.pid, out, "mini")

            api()  # warm: imports and the backend are loaded once, as in a long-running program
            os.remove(out), os.remove(out + ".json")
            contenders: Dict[str, Callable[[], None]] = {
                "python -c pass": run([sys.executable, "-c", "pass"]),
                "import dumplib": run([sys.executable, "-c", "import dumplib"]),
                "dumplib dump -k mini": run(dump + ["-k", "mini"]),
                "  --no-sidecar": run(dump + ["-k", "mini", "--no-sidecar"]),
                "  through typer": run([sys.executable, "-c", TYPER_PATH, "dump", pid, out, "-k", "mini"]),
                "dumplib dump -k full": run(dump + ["-k", "full"]),
                "gcore": gcore,
            }
            if ns.baseline:
                base = Path(ns.baseline).resolve()
                (work / "base").mkdir()
                (work / "base" / "dumplib_cli").symlink_to(base / "cli")
                for package in ("dumplib", "cli"):
                    compileall.compile_dir(str(base / package), quiet=1)
                base_env = dict(env, PYTHONPATH=os.pathsep.join([str(base), str(work / "base")]))
                contenders["  baseline checkout"] = lambda: subprocess.run(
                    dump + ["-k", "mini"], check=True, stdout=subprocess.DEVNULL, env=base_env, cwd=work)
            if procdump:
                contenders["ProcDump"] = procdump_run
            contenders["API mini (warm)"] = api
            rows = measure(contenders, out, ns.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"small process (C target, {t.threads} threads): median of {ns.runs} interleaved runs, whole processes")
    if not procdump:
        print("ProcDump for Linux: not found (give --procdump PATH or $PROCDUMP); no ProcDump row")
    elif PROCDUMP_ERRORS:
        print(f"ProcDump exited non-zero after writing its core in {len(PROCDUMP_ERRORS)} runs: {PROCDUMP_ERRORS[0]}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    gcore_wall = statistics.median(r[0] for r in rows["gcore"])
    bare = rows["python -c pass"]
    print(f"{'contender':<22} {'wall ms (min-max)':>22} {'cpu ms (min-max)':>22} {'over bare: wall':>16} "
          f"{'cpu':>6} {'disk KB':>8} {'wall/gcore':>10}")
    for name, runs in rows.items():
        disk = runs[0][2]
        shown = f"{statistics.median(r[2] for r in runs) / 1e3:>8.0f}" if disk is not None else f"{'-':>8}"
        # Over bare: the median of each round's difference with the bare interpreter's run of that round.
        over = [statistics.median(r[k] - b[k] for r, b in zip(runs, bare)) * 1e3 for k in (0, 1)]
        print(f"{name:<22} {_spread([r[0] for r in runs]):>22} {_spread([r[1] for r in runs]):>22} {over[0]:>16.1f} "
              f"{over[1]:>6.1f} {shown} {statistics.median(r[0] for r in runs) / gcore_wall:>10.2f}")
    return 0


def _spread(values: List[float]) -> str:
    """Median (min-max), in milliseconds."""
    return f"{statistics.median(values) * 1e3:.1f} ({min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})"


def measure(contenders: Dict[str, Callable[[], None]], out: str, runs: int) -> Dict[str, List[tuple]]:
    """Each contender's (wall, cpu, disk) per round, the rounds in rotating order."""
    rows: Dict[str, List[tuple]] = {k: [] for k in contenders}
    names = list(contenders)
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            cpu0, child0 = time.process_time(), children_cpu()
            start = time.perf_counter()
            contenders[name]()
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0 + children_cpu() - child0
            disk: Optional[int] = os.stat(out).st_blocks * 512 if os.path.exists(out) else None
            rows[name].append((wall, cpu, disk))
            for leftover in (out, out + ".json"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
