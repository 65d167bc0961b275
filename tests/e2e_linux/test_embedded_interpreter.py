"""dumplib inside a program that embeds Python (uWSGI, a C program calling Py_Initialize): the binary
running dumplib is that program, and sys.executable names it, or whatever python3 a search of PATH
found when the program told Python no name. dumplib never runs either with a child's arguments, as
root (interpreter.py). A snapshot's tracer is such a child: with snapshot=True the dump is refused
before the target is stopped and nothing is written; with "auto" it is made without one, saying why,
to a file or through a compressor (the stream writer). The postmortem handler the kernel would start
at each crash is another: its install is refused before anything is checked or changed.

A real embedder (conftest.py's, compiled against this interpreter's libpython), with a python3 first
on PATH that leaves a mark if it is ever run."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from linuxrig import run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a snapshot and the handler's install need root")

ROOT = str(Path(__file__).resolve().parents[2])

#: The embedded program's work, told by the environment (an embedder passes no argv to Python).
EMBEDDED = r"""
import json, os, sys
import dumplib
from dumplib import postmortem
args = json.loads(os.environ["DUMPLIB_TEST_ARGS"])
said = {"executable": sys.executable}
try:
    if args["action"] == "install":
        postmortem.install(args["dir"], kind="no-such-kind", state_dir=args["state"], sysctl_file=args["sysctl"])
        said["installed"] = True
    else:
        r = dumplib.create_dump(args["pid"], args["out"], "mini", snapshot=args["snapshot"], sidecar=False,
                                compress=args.get("compress"))
        said.update(snapshot=r.snapshot, warnings=list(r.warnings), path=r.path)
except dumplib.DumpError as exc:
    said.update(error=type(exc).__name__, reason=getattr(exc, "reason", None),
                argument=getattr(exc, "argument", None), message=str(exc))
print(json.dumps(said))
"""


def _run(embedder: Path, tmp_path: Path, **args: Any) -> Dict[str, Any]:
    fake = tmp_path / "fakebin" / "python3"  # named as an interpreter, first on PATH, and not ours
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\ntouch "$0.ran"\nexit 3\n')
    fake.chmod(0o755)
    script = tmp_path / "embedded.py"
    script.write_text(EMBEDDED)
    done = subprocess.run([str(embedder / "embedder"), str(script)], capture_output=True, text=True,
                          timeout=120, cwd="/",
                          env=dict({k: v for k, v in os.environ.items() if k not in ("PYTHONEXECUTABLE", "PYTHONHOME")},
                                   PATH=f"{fake.parent}:{os.environ['PATH']}",
                                   PYTHONPATH=os.pathsep.join([ROOT] + sys.path), DUMPLIB_TEST_ARGS=json.dumps(args)))
    assert done.returncode == 0, done.stdout + done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    assert said["executable"] == str(fake), said  # the embedder's Python did find it: the case at hand
    assert not Path(f"{fake}.ran").exists(), "the python3 found on PATH was run"
    return said


def test_a_snapshot_asked_for_is_refused_before_the_target_is_touched(embedder, target_exe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        said = _run(embedder, tmp_path, action="dump", pid=t.pid, out=str(out / "t.core"), snapshot=True)
        assert said.get("reason") == "snapshot-unavailable", said
        assert "embedder, which is not a Python interpreter" in said["message"], said
        assert os.listdir(out) == []
        t.assert_running_untraced()


@pytest.mark.parametrize("compress", [None, "gzip"], ids=["file", "stream"])
def test_auto_dumps_without_a_snapshot_and_says_why(embedder, target_exe, tmp_path, compress):
    out = tmp_path / "out"
    out.mkdir()
    with run_target([str(target_exe), "--heap", "8"]) as t:
        said = _run(embedder, tmp_path, action="dump", pid=t.pid, out=str(out / "t.core"), snapshot="auto",
                    compress=compress)
        assert said.get("snapshot") is False, said
        assert any("embedder, which is not a Python interpreter" in w for w in said["warnings"]), said
        core = said["path"]
        if compress == "gzip":
            with gzip.open(core) as packed:
                Path(f"{core}.raw").write_bytes(packed.read())
            core = f"{core}.raw"
        head = subprocess.run(["readelf", "-h", core], capture_output=True, text=True, timeout=60)
        assert "CORE (Core file)" in head.stdout, head.stdout + head.stderr
        t.assert_running_untraced()


def test_the_postmortem_handler_is_not_installed_to_run_that_program(embedder, tmp_path):
    """An unknown kind: were the interpreter not looked at first, install would refuse the kind
    instead; nothing of the machine's is touched either way."""
    crashes = tmp_path / "crashes"
    crashes.mkdir(mode=0o700)
    before = Path("/proc/sys/kernel/core_pattern").read_bytes()
    said = _run(embedder, tmp_path, action="install", dir=str(crashes), state=str(tmp_path / "state"),
                sysctl=str(tmp_path / "sysctl.conf"))
    assert said.get("error") == "PostmortemRefused" and said["argument"] == "python", said
    assert "embedder, which is not a Python interpreter" in said["message"], said
    assert not (tmp_path / "state").exists() and not (tmp_path / "sysctl.conf").exists()
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == before
