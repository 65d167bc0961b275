"""Helpers for the snapshot attack tests (test_snapshot_attack_*.py): build a C target, and hold a
snapshot dump open while the target runs on, with the kernel's own files as the only witnesses."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

from linuxrig import build_source, signal_defaults

HERE = Path(__file__).resolve().parent


def build(tmp_path: Path, source: str) -> Path:
    """Compile tests/e2e_linux/*source* into *tmp_path* (binaries are never committed)."""
    return build_source(tmp_path, HERE / source)


@contextlib.contextmanager
def started(exe: Path, *args: str) -> Iterator[subprocess.Popen]:
    """Run an attack target with pipes on stdin and stdout (text); killed and collected at the end."""
    proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def status(pid: int, tid: Optional[int] = None) -> dict:
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path, errors="backslashreplace") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def children(pid: int) -> List[int]:
    """The target's children, per the kernel (every thread's list)."""
    out: List[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return sorted(out)


class HeldSnapshot:
    """`dumplib dump PID - -k full --snapshot` into a pipe nobody reads: once the pipe is full dumplib
    waits on it, holding its snapshot, while the target runs on. finish() reads the rest."""

    def __init__(self, pid: int, *extra: str) -> None:
        self.pid = pid
        self.read_end, write_end = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(pid), "-", "-k", "full",
                                      "--snapshot", *extra], stdout=write_end, stderr=subprocess.PIPE,
                                     preexec_fn=signal_defaults())  # the tests signal it (a run under nohup too)
        os.close(write_end)

    def wait_target_running(self, timeout: float = 30) -> int:
        """Wait until the target is let go while its snapshot lives; the snapshot's pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dumplib ended early: {self.proc.stderr.read().decode()}"
            st = status(self.pid)
            # Traced by dumplib's snapshot tracer process (its child), or by dumplib itself.
            ours = {self.proc.pid, *children(self.proc.pid)}
            kids = [c for c in children(self.pid) if _tracer(c) in ours]
            if st["TracerPid"] == "0" and st["State"][0] in "RS" and kids:
                return kids[0]
            time.sleep(0.01)
        raise AssertionError("the target never ran on while a snapshot of it was held")

    def finish(self, timeout: float = 120) -> str:
        """Read the dump to its end; dumplib's stderr (it must exit 0)."""
        deadline = time.monotonic() + timeout
        while os.read(self.read_end, 1 << 20):
            assert time.monotonic() < deadline, "the dump never ended"
        os.close(self.read_end)
        self.proc.wait(timeout)
        err = self.proc.stderr.read().decode()
        assert self.proc.returncode == 0, err
        return err

    def __enter__(self) -> "HeldSnapshot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.read_end)
        except OSError:
            pass


def _tracer(pid: int) -> int:
    """The process tracing *pid* (TracerPid names the tracer thread), 0 for none."""
    try:
        tracer = int(status(pid)["TracerPid"])
        return int(status(tracer)["Tgid"]) if tracer else 0
    except (OSError, KeyError, ValueError):
        return 0
