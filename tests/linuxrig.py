"""Real Linux targets and independent readers (gdb, readelf, eu-stack, lldb) for the Linux tests."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

HERE = Path(__file__).resolve().parent
TARGET_C = HERE / "e2e_linux" / "target.c"


def build_target(directory: Path) -> Path:
    """Compile the C target (with debug info) into *directory*; binaries are never committed."""
    exe = directory / "dumplib-target"
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-o", str(exe), str(TARGET_C)], check=True)
    return exe


class Target:
    def __init__(self, proc: subprocess.Popen, info: Dict[str, object]) -> None:
        self.proc = proc
        self.info = info
        self.pid = int(info["pid"])  # type: ignore[arg-type]
        self.marker = str(info.get("marker", "")).encode()
        self.marker_address = int(info.get("marker_address", 0))  # type: ignore[arg-type]
        self.threads = int(info.get("threads", 1))  # type: ignore[arg-type]

    def ask(self, line: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def status(self) -> Dict[str, str]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    def assert_running_untraced(self) -> None:
        st = self.status()
        assert st["TracerPid"] == "0", st["TracerPid"]
        assert st["State"][0] in "RS", st["State"]  # not stopped (T/t), not a zombie


@contextlib.contextmanager
def run_target(argv: List[str], env: Optional[Dict[str, str]] = None, preexec=None) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, preexec_fn=preexec)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target {argv} did not start")
        yield Target(proc, json.loads(line))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


PY_TARGET = r"""
import json, os, sys, threading, time
marker = ("DUMPLIB-PY-MARKER-%d" % os.getpid()).encode()
blob = bytearray(200 << 20) if "--heap" in sys.argv else b""
for i in range(0, len(blob), 4096): blob[i] = 1
def py_worker_sleeps():
    while True: time.sleep(100)
threading.Thread(target=py_worker_sleeps, daemon=True).start()
# a bytes object's characters start 32 bytes into it (ob_sval) in CPython 3.x on 64-bit
print(json.dumps({"pid": os.getpid(), "marker": marker.decode(), "marker_address": id(marker) + 32, "threads": 2}), flush=True)
sys.stdin.read()
"""


def gdb(exe: str, core: str, *commands: str, timeout: float = 120) -> str:
    args = ["gdb", "-nx", "-batch", "-q"]
    for c in commands:
        args += ["-ex", c]
    done = subprocess.run(args + [exe, core], capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def dumplib_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumplib_cli", *args], capture_output=True, text=True, timeout=timeout)
