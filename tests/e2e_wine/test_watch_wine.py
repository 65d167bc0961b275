"""dumplib.watch under Wine against a real Windows python.exe: exceptions through the debug loop,
sampled triggers through psutil, the target running on after the watcher detaches."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from winhelpers import parse_independently, windows_path
from winrig import Rig

pytestmark = pytest.mark.wine

# Handles an access violation on each "fault" line and answers with the faulting thread's id.
FAULTER = r"""
import ctypes, json, os, sys, threading
print(json.dumps({"pid": os.getpid()}), flush=True)
for line in sys.stdin:
    if line.strip() == "fault":
        try:
            ctypes.string_at(0)
            print(json.dumps({"handled": False}), flush=True)
        except OSError as exc:
            print(json.dumps({"handled": True, "tid": threading.get_native_id(), "error": str(exc)}), flush=True)
    elif line.strip() == "threads":
        for _ in range(4):
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        print(json.dumps({"threads": threading.active_count()}), flush=True)
"""


def _events(proc: subprocess.Popen, until: str, timeout: float = 120) -> List[Dict[str, object]]:
    """JSON events from a `dumplib watch --json` until one named *until* (bounded)."""
    out: List[Dict[str, object]] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if not line.startswith("{"):
            continue
        out.append(json.loads(line))
        if out[-1].get("event") == until:
            return out
    raise AssertionError(f"no {until!r} event; got {out}; stderr: {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture()
def faulter(rig: Rig, tmp_path: Path):  # type: ignore[no-untyped-def]
    script = tmp_path / "faulter.py"
    script.write_text(FAULTER)
    proc = rig.popen_python([windows_path(script)])
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield proc, int(info["pid"])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _ask(proc: subprocess.Popen, line: str) -> Dict[str, object]:
    assert proc.stdin and proc.stdout
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_first_chance_access_violation_is_dumped_and_the_target_runs_on(rig: Rig, faulter, outdir: Path,
                                                                       tmp_path: Path) -> None:
    target, pid = faulter
    watcher = rig.popen_python(["-m", "dumplib_cli", "watch", str(pid), windows_path(outdir), "--exception",
                                "0xC0000005", "--first-chance", "--timeout", "120", "--json"])
    try:
        _events(watcher, "watching")
        answer = _ask(target, "fault")
        assert answer["handled"] is True, answer
        events = _events(watcher, "done")
        assert watcher.wait(60) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    fired = next(e for e in events if e["event"] == "fired")
    assert fired["value"] == 0xC0000005
    assert f"on thread {answer['tid']}" in str(fired["message"]) and "first chance" in str(fired["message"])
    dumped = next(e for e in events if e["event"] == "dumped")
    dump = Path(outdir) / Path(str(dumped["result"]["path"]).replace("\\", "/")).name  # type: ignore[index]
    mf = parse_independently(dump, tmp_path)
    assert answer["tid"] in [t.ThreadId for t in mf.threads.threads]
    # The watcher has detached: the target handles the next fault on its own and answers.
    assert _ask(target, "fault")["handled"] is True
    assert target.poll() is None


def test_threads_trigger_on_a_windows_target(rig: Rig, faulter, outdir: Path) -> None:
    target, pid = faulter
    watcher = rig.popen_python(["-m", "dumplib_cli", "watch", str(pid), windows_path(outdir), "--threads", "4",
                                "--sample-every", "0.5", "--timeout", "120", "--json"])
    try:
        _events(watcher, "watching")
        started = time.monotonic()
        count = _ask(target, "threads")["threads"]
        events = _events(watcher, "done")
        assert watcher.wait(60) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    fired = next(e for e in events if e["event"] == "fired")
    assert fired["value"] is not None and float(fired["value"]) >= 4  # type: ignore[arg-type]
    assert count == 5
    assert time.monotonic() - started < 60
    assert [e for e in events if e["event"] == "dumped"]
