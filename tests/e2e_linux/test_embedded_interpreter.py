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

from helpers import require
from linuxrig import have, run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a snapshot and the handler's install need root")

ROOT = str(Path(__file__).resolve().parents[2])

#: Once dumplib is imported, the program sys.executable names is swapped for a script that leaves a
#: mark if it is ever run: whatever dumplib decides, and however late, the program must never run.
DUMP = r"""
import json, os, sys
import dumplib
exe = sys.executable
os.unlink(exe)
with open(exe, "w") as f:
    f.write("#!/bin/sh\ntouch \"$0.ran\"\nexit 3\n")
os.chmod(exe, 0o755)
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
    if uwsgi.exists() or uwsgi.is_symlink():
        uwsgi.unlink()
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
        assert "uwsgi" in said["message"] and "not the Python interpreter running dumplib" in said["message"], said
        assert os.listdir(out) == [] and _untraced_running(t.pid)
        assert not (tmp_path / "bin" / "uwsgi.ran").exists(), "the embedding program was run"


def test_auto_dumps_without_a_snapshot_and_says_why(target_exe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        said = _as_uwsgi(tmp_path, DUMP, str(t.pid), str(out / "t.core"), "auto")
        assert said.get("snapshot") is False, said
        assert any("uwsgi" in w and "not the Python interpreter running dumplib" in w for w in said["warnings"]), said
        assert not (tmp_path / "bin" / "uwsgi.ran").exists(), "the embedding program was run"
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


#: A program embedding Python that tells it no program name (as many do): Python then finds
#: sys.executable by a search of PATH for python3, which may be any other install or a script.
EMBEDDER_C = r"""
#include <Python.h>
int main(int argc, char **argv) {
    Py_Initialize();
    FILE *f = fopen(argv[1], "r");
    if (!f) return 3;
    int rc = PyRun_SimpleFile(f, argv[1]);
    fclose(f);
    Py_Finalize();
    return rc ? 1 : 0;
}
"""

EMBEDDED_DUMP = r"""
import json, os, sys
import dumplib
pid, out = int(os.environ["DUMPLIB_TEST_PID"]), os.environ["DUMPLIB_TEST_OUT"]
try:
    r = dumplib.create_dump(pid, out, "mini", snapshot="auto", sidecar=False)
    print(json.dumps({"executable": sys.executable, "snapshot": r.snapshot, "warnings": list(r.warnings)}))
except dumplib.DumpError as exc:
    print(json.dumps({"executable": sys.executable, "error": type(exc).__name__, "message": str(exc)}))
"""


def test_a_python3_found_on_path_by_an_embedding_program_is_never_run(target_exe, tmp_path):
    require(have("gcc") and have("python3-config"), "gcc or python3-config is missing (apt-get install gcc python3-dev)")
    source = tmp_path / "embedder.c"
    source.write_text(EMBEDDER_C)
    flags = subprocess.run(["python3-config", "--cflags", "--ldflags", "--embed"], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    embedder = tmp_path / "embedder"
    subprocess.run(["gcc", "-o", str(embedder), str(source), *flags], check=True, timeout=120)
    fake = tmp_path / "fakebin" / "python3"  # named as an interpreter, first on PATH, and not ours
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\ntouch \"$0.ran\"\nexit 3\n")
    fake.chmod(0o755)
    script = tmp_path / "dump.py"
    script.write_text(EMBEDDED_DUMP)
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        done = subprocess.run([str(embedder), str(script)], capture_output=True, text=True, timeout=120, cwd="/",
                              env=dict({k: v for k, v in os.environ.items() if k not in ("PYTHONEXECUTABLE", "PYTHONHOME")},
                                       PATH=f"{fake.parent}:{os.environ['PATH']}",
                                       PYTHONPATH=os.pathsep.join([ROOT] + sys.path),
                                       DUMPLIB_TEST_PID=str(t.pid), DUMPLIB_TEST_OUT=str(out / "t.core")))
        assert done.returncode == 0, done.stdout + done.stderr
        said = json.loads(done.stdout.splitlines()[-1])
        assert said["executable"] == str(fake), said  # the embedder's Python did find it
        assert said.get("snapshot") is False, said
        assert any("not the Python interpreter running dumplib" in w for w in said["warnings"]), said
        assert not Path(f"{fake}.ran").exists(), "the python3 found on PATH was run"
        assert _untraced_running(t.pid)
