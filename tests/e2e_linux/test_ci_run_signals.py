""".ci/run runs the suite as two pytest sessions side by side (tests/e2e_wine, and the rest). Stopped
early, each session must be interrupted once and then allowed to finish its cleanup (no Windows pytest,
wineserver or target left), and the script must exit 130 for Ctrl-C and 143 for SIGTERM. Here the
script's own text from `wine_log=` on runs against a stand-in pytest module that records what reached
it, in a process group of its own, as a terminal's foreground job or a CI runner's is."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the CI script is bash on Linux", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = r'''
import os, sys, time
def main():
    tag = "WINE" if "tests/e2e_wine" in sys.argv[1:] else "REST"
    log = os.environ["STAND_IN_LOG"]
    def say(what):
        with open(log, "a") as f:
            f.write(f"{tag} {what}\n")
    say(f"start {os.getpid()}")
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            time.sleep(0.05)
        say("ran out")
        return int(os.environ.get(f"STAND_IN_{tag}_RC", "0"))
    except KeyboardInterrupt:
        say("interrupted")
        try:
            time.sleep(3.0 if tag == "WINE" else 1.0)  # its cleanup: stop_wine comes after the rest's
        except KeyboardInterrupt:
            say("cleanup cut short")
            raise
        say("cleaned up")
        return 2
'''

LAUNCH = "import os, signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_DFL)\nos.setsid()\nos.execv(sys.argv[1], sys.argv[1:])\n"


def run(tmp_path: Path, send: str, rc: Dict[str, str] | None = None) -> "tuple[int, List[str]]":
    """The script's tail under bash, its own process group; *send*: 'INT' or 'TERM' to the group,
    'TERM-script' to bash alone, '' to let it run out. Returns bash's status and the stand-in's log."""
    (tmp_path / "pytest.py").write_text(STAND_IN)
    tail = (ROOT / ".ci" / "run").read_text().split("\nwine_log=", 1)[1]
    script = tmp_path / "tail.sh"
    script.write_text(f"set -euo pipefail\nPY={sys.executable}\nwine_log={tail}")
    log = tmp_path / "log"
    # TMPDIR: the Wine session's log (mktemp) is left behind by a kill of the group, as by any SIGKILL.
    env = dict(os.environ, PYTHONPATH=str(tmp_path), STAND_IN_LOG=str(log), TMPDIR=str(tmp_path), **(rc or {}))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "/bin/bash", str(script)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while (not log.exists() or log.read_text().count("start") < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.exists() and log.read_text().count("start") == 2, "the two sessions did not start"
        if send == "TERM-script":
            os.kill(proc.pid, signal.SIGTERM)
        elif send:
            os.killpg(proc.pid, getattr(signal, f"SIG{send}"))
        status = proc.wait(timeout=90)
        if send == "KILL":
            pids = [int(line.split()[-1]) for line in log.read_text().splitlines() if " start " in line]
            deadline = time.monotonic() + 10
            while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert alive == [], f"sessions outlived a kill of the script's process group: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, log.read_text().splitlines()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed child waits for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_ctrl_c_interrupts_each_session_once_lets_both_clean_up_and_exits_130(tmp_path):
    status, log = run(tmp_path, "INT")
    assert status == 130, (status, log)
    for tag in ("REST", "WINE"):
        assert log.count(f"{tag} interrupted") == 1 and f"{tag} cleaned up" in log, log


def test_sigterm_to_the_script_stops_both_sessions_at_once_and_exits_143(tmp_path):
    status, log = run(tmp_path, "TERM-script")
    assert status == 143, (status, log)
    for tag in ("REST", "WINE"):
        assert log.count(f"{tag} interrupted") == 1 and f"{tag} cleaned up" in log, log
    assert "REST ran out" not in log, log  # not after the rest's whole run


def test_sigterm_to_the_whole_group_exits_143_with_both_cleanups(tmp_path):
    status, log = run(tmp_path, "TERM")
    assert status == 143, (status, log)
    for tag in ("REST", "WINE"):
        assert f"{tag} cleaned up" in log and f"{tag} cleanup cut short" not in log, log


def test_a_failing_session_fails_the_script(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "STAND_IN", STAND_IN.replace("+ 120", "+ 1"))
    status, log = run(tmp_path, "", {"STAND_IN_WINE_RC": "1"})
    assert status == 1 and "WINE ran out" in log and "REST ran out" in log, (status, log)


def test_a_kill_of_the_process_group_leaves_no_session_running(tmp_path):
    # A runner's timeout kills the group: a session that left it (setsid) would run on, and its Wine
    # rig's teardown would then stop the wineserver of the next run's prefix.
    status, _ = run(tmp_path, "KILL")
    assert status == -signal.SIGKILL
