"""dumplib's children (core/far.py's reader, a snapshot's tracer) run /proc/self/exe, the very binary
running dumplib, with sys.executable as argv[0] (interpreter.py): a real Python run from a copy of its
binary, through a link of any name, and after that copy was replaced on disk (as an upgrade renames a
new file over it) still starts the same Python; the postmortem handler's interpreter (a file named for
later) is sys.executable only while it is that binary. The refusal side, a program embedding Python,
is tests/e2e_linux/test_embedded_interpreter.py (a compiled embedder)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the Linux children", allow_module_level=True)

ROOT = str(Path(__file__).resolve().parents[2])

#: Asked of dumplib in a Python run from a copy of its binary, before and after the copy is replaced.
PROBE = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from dumplib._linux.interpreter import child_command, python_interpreter
def ask():
    command = child_command("-I", "-S", "-c", "import sys; print(sys.version)")
    ran = None if command is None else subprocess.run(command[1], executable=command[0], capture_output=True,
                                                      text=True, timeout=60).stdout.strip()
    return {"command": command and command[0], "ran": ran, "handler": python_interpreter()}
before = ask()
if len(sys.argv) > 2:  # replaced on disk: a new file renamed over the binary running us
    with open(sys.executable + ".new", "wb") as f:
        f.write(b"#!/bin/sh\nexit 3\n")
    os.chmod(sys.executable + ".new", 0o755)
    os.rename(sys.executable + ".new", sys.executable)
print(json.dumps({"version": sys.version, "before": before, "after": ask()}))
"""


def _copy_of_python(tmp_path: Path, name: str) -> Path:
    copy = tmp_path / "bin" / name
    copy.parent.mkdir(exist_ok=True)
    shutil.copy2(os.path.realpath(sys.executable), copy)
    return copy


@pytest.mark.parametrize("name", ["python3.11", "uwsgi"])
def test_children_run_the_binary_running_dumplib_whatever_its_link_is_called(tmp_path: Path, name: str) -> None:
    link = tmp_path / name
    link.symlink_to(os.path.realpath(sys.executable))
    done = subprocess.run([str(link), "-c", PROBE, ROOT], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONEXECUTABLE"})
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["before"]["command"] == "/proc/self/exe" and said["before"]["ran"] == said["version"], said
    assert said["before"]["handler"] == str(link), said  # the link is that binary: the handler may name it


def test_an_interpreter_replaced_on_disk_still_starts_its_own_children_but_is_named_for_no_handler(
        tmp_path: Path) -> None:
    """dpkg upgrades python3.11 by renaming a new file over it: a long-running `dumplib watch` must still
    take snapshots (before, every one was refused), and the new file is never what it runs."""
    copy = _copy_of_python(tmp_path, "python3.11")
    done = subprocess.run([str(copy), "-c", PROBE, ROOT, "replace"], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONEXECUTABLE"})
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said["before"]["ran"] == said["version"] and said["before"]["handler"] == str(copy), said
    assert said["after"]["command"] == "/proc/self/exe" and said["after"]["ran"] == said["version"], said
    assert said["after"]["handler"] is None, said  # the file is no longer the binary: no handler names it
