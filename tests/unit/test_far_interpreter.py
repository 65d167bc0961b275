"""dumplib's children (core/far.py's reader, a snapshot's tracer, the postmortem handler the kernel
runs) are started with sys.executable only when that is a Python interpreter: in a program embedding
Python (uWSGI, Blender), sys.executable names that program, which must never be run with a child's
arguments (the reads are then made in place; the snapshot and the handler are refused)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the Linux reader child", allow_module_level=True)


@pytest.mark.parametrize("name, python", [("python", True), ("python3", True), ("python3.11", True),
                                          ("python3.13t", True), ("python3.11-dbg", True), ("uwsgi", False), ("blender", False),
                                          ("python-wrapper.sh", False)])
def test_only_an_interpreter_named_as_one_is_run(tmp_path: Path, name: str, python: bool) -> None:
    """Through a real interpreter reached by a link of that name: what sys.executable then says is the
    kernel's (argv[0] resolved), not a value set by the test."""
    link = tmp_path / name
    link.symlink_to(os.path.realpath(sys.executable))
    code = "import sys; sys.path.insert(0, sys.argv[1]); from dumplib._linux.interpreter import python_interpreter; print(python_interpreter())"
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([str(link), "-c", code, root], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONEXECUTABLE"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (str(link) if python else "None"), (done.stdout, shutil.which(name))
