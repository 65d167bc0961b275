"""How long the core_pattern handler holds a crashed process: crash to the process being reaped.

Run as root from the repository (it sets kernel.core_pattern for seconds and puts it back):
    python3 benchmarks/postmortem_release.py [MiB] [ROUNDS]
For each of: no core at all (RLIMIT_CORE 0), the kernel writing its own core file, dumplib's handler
with --kind mini and --kind full, the crasher (tests/e2e_linux/crasher.c) touches MiB of heap, says
"ready", then crashes in a worker thread; the time from "ready" to its parent's wait() returning is
the crash-to-release time. The handler's own figure (its start to closing the pipe) comes from its log.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


def crash_seconds(exe: str, mib: int, core_limit: int) -> float:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (core_limit, core_limit))

    p = subprocess.Popen([exe, str(mib)], stdout=subprocess.PIPE, preexec_fn=limit)
    assert p.stdout is not None
    p.stdout.readline()
    t0 = time.monotonic()
    p.wait()
    return time.monotonic() - t0


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    # The state directories (the handler the kernel runs as root) must be root's all the way up: install
    # refuses one under the sticky /tmp.
    private = Path(tempfile.mkdtemp(prefix="dumplib-pm-bench-", dir="/var/lib"))
    exe = str(work / "crasher")
    subprocess.run(["gcc", "-O0", "-g", "-pthread", "-o", exe, str(REPO / "tests/e2e_linux/crasher.c")], check=True)
    before = CORE_PATTERN.read_bytes()
    rows = {}
    try:
        rows["no core (RLIMIT_CORE 0)"] = [crash_seconds(exe, mib, 0) for _ in range(rounds)]
        kernel_dir = work / "kernel"
        kernel_dir.mkdir()
        CORE_PATTERN.write_bytes(str(kernel_dir / "core.%p").encode())
        rows["kernel core file"] = [crash_seconds(exe, mib, -1) for _ in range(rounds)]
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
        for kind in ("mini", "full"):
            dumps = work / f"dumps-{kind}"
            dumps.mkdir(mode=0o700)
            state = private / f"state-{kind}"
            env = dict(os.environ, PYTHONPATH=str(REPO))
            code = ("import sys; from dumplib._linux.core_pattern import install; install(sys.argv[1], kind=sys.argv[2],"
                    " min_free=1 << 20, max_per=None, state_dir=sys.argv[3], sysctl_file=sys.argv[3] + '.conf')")
            subprocess.run([sys.executable, "-c", code, str(dumps), kind, str(state)], check=True, env=env)
            try:
                rows[f"dumplib handler, {kind}"] = [crash_seconds(exe, mib, -1) for _ in range(rounds)]
            finally:
                code = "import sys; from dumplib._linux.core_pattern import uninstall; uninstall(state_dir=sys.argv[1])"
                subprocess.run([sys.executable, "-c", code, str(state)], env=env)
            time.sleep(1)
            log = [json.loads(line) for line in (state / "postmortem.log").read_text().splitlines()]
            rows[f"  (handler start to release, {kind})"] = [r["released_after_seconds"] for r in log]
            sizes = [r.get("size") for r in log]
            print(f"{kind}: outcomes {[r['outcome'] for r in log]}, sizes {sizes}")
    finally:
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
    for name, values in rows.items():
        print(f"{name:<40} median {statistics.median(values):7.3f} s  ({', '.join(f'{v:.3f}' for v in values)})")
    subprocess.run(["rm", "-rf", str(work), str(private)])


if __name__ == "__main__":
    main()
