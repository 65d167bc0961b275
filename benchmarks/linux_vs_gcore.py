"""The `dumplib` command vs gcore vs ProcDump for Linux, whole processes, interleaved, on live targets.

    python benchmarks/linux_vs_gcore.py [--runs 5] [--sizes 200,2048] [--python] [--procdump PATH]
                                        [--only "ProcDump,API no sidecar,..."]

Every contender but the API rows is one whole process, timed from spawn to exit, as a user would run
it: `python -m dumplib_cli dump PID OUT -k full` (bytecode compiled first), `gcore -o OUT PID`,
`procdump PID OUT`. The in-process API (no interpreter start-up) is shown beside it. For each: median
wall seconds, median CPU seconds (the contender's own, threads and children included), the target's
longest stall (a 1 ms ticker thread inside the target reports its largest gap), dumplib's own
`stopped_seconds` where it reports one, and bytes on disk (st_blocks). The stall's spread (min-max over
the runs) and its ratio to ProcDump's (median of the per-round ratios: each round runs every contender
once, so a ratio pairs runs made within seconds of each other) follow, with the load average.

What each contender selects from the target's memory:
- dumplib `full`: all readable memory, private, shared and file-backed (README "Kinds"); never
  [vvar], [vsyscall], I/O, PROT_NONE or MADV_DONTDUMP; all-zero pages left as file holes.
- gcore (gdb): the target's /proc/PID/coredump_filter (kernel default 0x33: private and shared
  anonymous memory, ELF headers, private huge pages), i.e. no file-backed text; no holes.
- ProcDump for Linux (its own core writer, corex): coredump_filter too, plus every writable mapping.
- raw bound: a C program (rawcopy.c) that copies exactly the bytes dumplib's `full` core holds from
  memory, to the same file offsets, with the same holes, without stopping the target, writing notes
  or verifying: the floor for the copy itself.
ProcDump is built from its public repository outside this one (docs/benchmarks.md says how); where
it is absent the table says so instead of a row.
"""
from __future__ import annotations

import argparse
import compileall
import functools
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import dumplib  # noqa: E402
import dumplib._hashing  # noqa: E402
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

#: Where tests/ and docs say ProcDump for Linux is built when it is (outside this repository).
PROCDUMP_CANDIDATES = ("/work/procdump-build/build/procdump", "/work/wt/_procdump/src/build/procdump",
                       "/usr/bin/procdump", "/usr/local/bin/procdump")


def find_procdump(given: Optional[str]) -> Optional[str]:
    for path in ([given] if given else []) + [os.environ.get("PROCDUMP", "")] + list(PROCDUMP_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    return None


#: ProcDump runs that exited non-zero although their core was written (its "Internal Error has
#: occurred" after "Core dump 0 generated", seen here now and then); reported under the table.
PROCDUMP_ERRORS: List[str] = []


def procdump_once(procdump: str, pid: str, out: str) -> None:
    """`procdump PID OUT.p` writes OUT.p.PID; moved to *out*. A run that wrote no core is an error."""
    done = subprocess.run([procdump, pid, out + ".p"], capture_output=True, text=True)
    written = f"{out}.p.{pid}"
    if not os.path.exists(written):
        raise RuntimeError(f"procdump wrote no core (exit {done.returncode}): {done.stdout[-2000:]}")
    if done.returncode != 0:
        PROCDUMP_ERRORS.append(f"exit {done.returncode}: {done.stdout.strip().splitlines()[-1]}")
    os.replace(written, out)


def cli_env() -> Dict[str, str]:
    """The environment of a `dumplib` command: this checkout's code, bytecode allowed (as installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def compile_bytecode() -> None:
    """An installed dumplib runs from compiled bytecode; a checkout run with -B would not."""
    for package in ("dumplib", "cli"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def disk_bytes(path: str) -> int:
    return os.stat(path).st_blocks * 512


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def core_plan(core: str) -> str:
    """rawcopy's plan: the file size, then (file offset, address, length) of every data extent of
    every PT_LOAD of *core*, so the raw copy writes exactly those bytes and leaves the same holes."""
    with open(core, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        if phnum == 0xFFFF:  # PN_XNUM: the real count is section 0's sh_info
            shoff, = struct.unpack_from("<Q", head, 0x28)
            f.seek(shoff + 44)
            phnum, = struct.unpack("<I", f.read(4))
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        size = os.fstat(f.fileno()).st_size
        extents = data_extents(f.fileno(), size)
    lines = [f"{size:x}"]
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type != 1 or not filesz:
            continue
        for start, end in extents:
            lo, hi = max(start, offset), min(end, offset + filesz)
            if lo < hi:
                lines.append(f"{lo:x} {vaddr + lo - offset:x} {hi - lo:x}")
    return "\n".join(lines) + "\n"


def data_extents(fd: int, size: int) -> List[Tuple[int, int]]:
    extents, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end))
        pos = end
    return extents


class Contenders:
    """The runs for one target; each takes the output path and returns dumplib's stopped_seconds or None."""

    def __init__(self, pid: int, work: Path, procdump: Optional[str], raw: Path, plan: str) -> None:
        self.pid, self.work, self.procdump, self.raw, self.plan = pid, work, procdump, raw, plan

    def table(self) -> Dict[str, Callable[[str], Optional[float]]]:
        cli = functools.partial(self.command, [])
        rows: Dict[str, Callable[[str], Optional[float]]] = {
            "dumplib command": cli,
            "command --no-sidecar": functools.partial(self.command, ["--no-sidecar"]),
            "command -z zstd": self.command_zstd,
            "API default": functools.partial(self.api, {}),
            "API no sidecar": functools.partial(self.api, {"sidecar": False}),
            "API, hasher not idle": self.api_busy_hasher,
            "API written": self.api_written,
            "gcore": self.gcore,
        }
        if self.procdump:
            rows["ProcDump"] = self.procdump_run
        rows["raw bound"] = self.rawcopy
        return rows

    def command(self, extra: List[str], out: str) -> Optional[float]:
        subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(self.pid), out, "-k", "full", *extra],
                       check=True, stdout=subprocess.DEVNULL, env=cli_env())
        return None

    def command_zstd(self, out: str) -> Optional[float]:
        self.command(["-z", "zstd"], out + ".zst")
        os.replace(out + ".zst", out)
        os.replace(out + ".zst.json", out + ".json")
        return None

    def api(self, options: dict, out: str) -> Optional[float]:
        return dumplib.create_dump(self.pid, out, "full", **options).stopped_seconds

    def api_busy_hasher(self, out: str) -> Optional[float]:
        """The sidecar's hash at full speed during the stop, as before it waited for the target to run."""
        hasher = dumplib._hashing.FollowingHasher
        original = hasher.__init__
        hasher.__init__ = functools.partialmethod(original, idle=False)  # type: ignore[method-assign]
        try:
            return self.api({}, out)
        finally:
            hasher.__init__ = original  # type: ignore[method-assign]

    def api_written(self, out: str) -> Optional[float]:
        """Without a sidecar, the output neither mapped nor staged (core/memory.py FileSink): the copy
        written during the stop, as before either existed."""
        from dumplib._linux.core.memory import FileSink

        prepare, stage = FileSink.prepare, FileSink.stage
        FileSink.prepare = FileSink.stage = lambda self, size: None  # type: ignore[method-assign]
        try:
            return self.api({"sidecar": False}, out)
        finally:
            FileSink.prepare, FileSink.stage = prepare, stage  # type: ignore[method-assign]

    def gcore(self, out: str) -> Optional[float]:
        subprocess.run(["gcore", "-o", out + ".g", str(self.pid)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        os.replace(f"{out}.g.{self.pid}", out)
        return None

    def procdump_run(self, out: str) -> Optional[float]:
        assert self.procdump
        procdump_once(self.procdump, str(self.pid), out)
        return None

    def rawcopy(self, out: str) -> Optional[float]:
        subprocess.run([str(self.raw), str(self.pid), out], input=self.plan, text=True, check=True)
        return None


def measure(t, contenders: Dict[str, Callable[[str], Optional[float]]], out: str, runs: int) -> Dict[str, List[tuple]]:
    """Per contender, one (wall, cpu, stall, stopped, disk) per round; rounds interleave every contender
    in rotating order, so round i of two contenders ran within seconds of each other."""
    rows: Dict[str, List[tuple]] = {k: [] for k in contenders}
    names = list(contenders)
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t.ask("gap")
            cpu0, child0 = time.process_time(), children_cpu()
            start = time.perf_counter()
            stopped = contenders[name](out)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0 + children_cpu() - child0
            stall = int(t.ask("gap")) / 1e6
            rows[name].append((wall, cpu, stall, stopped, disk_bytes(out)))
            for leftover in (out, out + ".json"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return rows


def medians(rows: Dict[str, List[tuple]]) -> Dict[str, tuple]:
    return {k: tuple(_median([r[j] for r in v]) for j in range(5)) for k, v in rows.items()}


def paired_ratio(rows: Dict[str, List[tuple]], name: str, peer: str, column: int) -> Optional[float]:
    """Median over rounds of name's figure / peer's figure in the same round."""
    if peer not in rows or name == peer:
        return None
    ratios = [a[column] / b[column] for a, b in zip(rows[name], rows[peer]) if b[column]]
    return statistics.median(ratios) if ratios else None


def _median(values: list) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="200,2048", help="heap MiB of the C targets")
    ap.add_argument("--python", action="store_true", help="also a Python target (~200 MB of objects)")
    ap.add_argument("--procdump", help="ProcDump for Linux's binary (default: $PROCDUMP or a known build)")
    ap.add_argument("--only", help="comma-separated contender names to run (gcore and raw bound are always run)")
    ns = ap.parse_args()
    compile_bytecode()
    procdump = find_procdump(ns.procdump)
    work = Path(tempfile.mkdtemp(prefix="dumplib-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    exe = build_target(work)
    raw = work / "rawcopy"
    subprocess.run(["gcc", "-O2", "-o", str(raw), str(HERE / "rawcopy.c")], check=True)
    targets = [(f"C, {m} MiB heap", [str(exe), "--heap", m, "--ticker"]) for m in ns.sizes.split(",")]
    if ns.python:
        targets.append(("Python, 200 MB objects", [sys.executable, "-c", PY_TICKER_TARGET]))
    print(f"median of {ns.runs} interleaved runs; wall and CPU of the whole command (or call); stall = longest"
          " gap seen by a 1 ms ticker in the target (min-max after it); stopped = dumplib's own stopped_seconds;"
          " stall/PD = median of per-round stall ratios to ProcDump")
    if not procdump:
        print("ProcDump for Linux: not found (give --procdump PATH or $PROCDUMP); no ProcDump row")
    print(f"{'target':<24} {'contender':<22} {'wall s':>7} {'cpu s':>6} {'stall s':>8} {'stall min-max':>13}"
          f" {'stopped':>8} {'disk MB':>8} {'wall/gcore':>10} {'stall/PD':>8}")
    try:
        for label, argv in targets:
            with run_target(argv) as t:
                t.ask("gap")
                out = str(work / "out")
                reference = dumplib.create_dump(t.pid, out, "full", sidecar=False)
                plan = core_plan(reference.path)
                os.remove(out)
                contenders = Contenders(t.pid, work, procdump, raw, plan).table()
                if ns.only:
                    keep = set(ns.only.split(",")) | {"gcore", "raw bound"}
                    contenders = {k: v for k, v in contenders.items() if k in keep}
                load_before = os.getloadavg()[0]
                rows = measure(t, contenders, out, ns.runs)
                med = medians(rows)
                gcore_wall = med["gcore"][0]
                for name, (wall, cpu, stall, stopped, disk) in med.items():
                    shown = f"{stopped:>8.3f}" if stopped is not None else f"{'-':>8}"
                    stalls = [r[2] for r in rows[name]]
                    vs_pd = paired_ratio(rows, name, "ProcDump", 2)
                    print(f"{label:<24} {name:<22} {wall:>7.3f} {cpu:>6.3f} {stall:>8.3f}"
                          f" {min(stalls):>6.3f}-{max(stalls):<6.3f} {shown} {disk / 1e6:>8.1f}"
                          f" {wall / gcore_wall:>10.2f} {vs_pd if vs_pd is not None else float('nan'):>8.2f}")
                print(f"  load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after this target")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if PROCDUMP_ERRORS:
        print(f"ProcDump exited non-zero after writing its core in {len(PROCDUMP_ERRORS)} runs: {PROCDUMP_ERRORS[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
