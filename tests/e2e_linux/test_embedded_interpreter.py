"""dumplib inside a program that embeds Python (uWSGI, Blender): sys.executable names that program, and
dumplib must never run it with a child's arguments, as root. A snapshot's tracer is such a child: with
snapshot=True the dump is refused before the target is stopped and nothing is written; with "auto" it
is made without one, saying why. The postmortem handler the kernel would start at each crash is
another: its install is refused before anything is checked or changed. Run through a real interpreter
reached by a link named uwsgi, so that sys.executable is what the kernel says (argv[0]), not a value
the test sets."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from linuxrig import run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a snapshot and the handler's install need root")

ROOT = str(Path(__file__).resolve().parents[2])

DUMP = r"""
import json, sys
import dumplib
pid, out, mode = int(sys.argv[1]), sys.argv[2], {"True": True, "auto": "auto"}[sys.argv[3]]
try:
    r = dumplib.create_dump(pid, out, "full", snapshot=mode, sidecar=False)
    print(json.dumps({"snapshot": r.snapshot, "warnings": list(r.warnings)}))
except dumplib.TargetRefused as exc:
    print(json.dumps({"refused": exc.reason, "message": str(exc)}))
"""

#: An unknown kind: were the interpreter not looked at first, install would refuse the kind instead,
#: and nothing of the machine's is touched either way.
INSTALL = r"""
import json, sys
from dumplib import postmortem
try:
    postmortem.install(sys.argv[1], kind="no-such-kind", state_dir=sys.argv[2], sysctl_file=sys.argv[3])
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "argument": getattr(exc, "argument", None), "message": str(exc)}))
"""


def _as_uwsgi(tmp_path: Path, code: str, *args: str) -> dict:
    uwsgi = tmp_path / "bin" / "uwsgi"
    uwsgi.parent.mkdir(exist_ok=True)
    if not uwsgi.exists():
        uwsgi.symlink_to(os.path.realpath(sys.executable))
    done = subprocess.run([str(uwsgi), "-c", code, *args], capture_output=True, text=True, timeout=120, cwd="/",
                          env=dict({k: v for k, v in os.environ.items() if k != "PYTHONEXECUTABLE"},
                                   PYTHONPATH=os.pathsep.join([ROOT] + sys.path)))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _untraced_running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    return status.split("TracerPid:")[1].split()[0] == "0" and status.split("State:")[1].split()[0] not in ("t", "T")


def test_a_snapshot_asked_for_is_refused_before_the_target_is_touched(target_exe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        said = _as_uwsgi(tmp_path, DUMP, str(t.pid), str(out / "t.core"), "True")
        assert said.get("refused") == "snapshot-unavailable", said
        assert "uwsgi" in said["message"] and "not a Python interpreter" in said["message"], said
        assert os.listdir(out) == [] and _untraced_running(t.pid)


def test_auto_dumps_without_a_snapshot_and_says_why(target_exe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        said = _as_uwsgi(tmp_path, DUMP, str(t.pid), str(out / "t.core"), "auto")
        assert said.get("snapshot") is False, said
        assert any("uwsgi" in w and "not a Python interpreter" in w for w in said["warnings"]), said
        head = subprocess.run(["readelf", "-h", str(out / "t.core")], capture_output=True, text=True, timeout=60)
        assert "CORE (Core file)" in head.stdout, head.stdout + head.stderr
        assert _untraced_running(t.pid)


def test_the_postmortem_handler_is_not_installed_to_run_that_program(tmp_path):
    crashes = tmp_path / "crashes"
    crashes.mkdir(mode=0o700)
    before = Path("/proc/sys/kernel/core_pattern").read_bytes()
    said = _as_uwsgi(tmp_path, INSTALL, str(crashes), str(tmp_path / "state"), str(tmp_path / "sysctl.conf"))
    assert said["error"] == "PostmortemRefused" and said["argument"] == "python", said
    assert "uwsgi" in said["message"], said
    assert not (tmp_path / "state").exists() and not (tmp_path / "sysctl.conf").exists()
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == before
