"""TARGET resolution against real processes: what is a pid, what is a thread, and which processes a name
may never match (the caller and the launchers it was started by)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

import dumplib
from dumplib import ProcessNotFound, resolve_target

import psutil

REPO = str(Path(__file__).resolve().parents[2])
# The interpreters started below are the real executable behind sys.executable, outside any venv the suite
# runs in: they find psutil (dumplib's one dependency) where this interpreter found it.
DEPS = str(Path(psutil.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, DEPS, *filter(None, [os.environ.get("PYTHONPATH")])]),
       "PYTHONIOENCODING": "utf-8"}  # a Windows console is not UTF-8

# Prints what resolve_target(argv[1]) found, from inside the chain of processes under test.
RESOLVER = (
    "import json, sys, dumplib\n"
    "try:\n"
    "    print(json.dumps({'pid': dumplib.resolve_target(sys.argv[1]).pid}), flush=True)\n"
    "except dumplib.ProcessNotFound as e:\n"
    "    print(json.dumps({'error': str(e)}), flush=True)\n"
)
# A launcher like a venv's python.exe redirector: it runs the real interpreter as its child and waits.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumplib_cli", *args], capture_output=True, encoding="utf-8",
                          errors="replace", env=ENV, timeout=120)


@pytest.fixture()
def threaded_child():
    """A real process with a second thread; yields (pid, tid of the second thread)."""
    code = ("import threading, sys, json, os\n"
            "t = threading.Thread(target=sys.stdin.read, daemon=True); t.start()\n"
            "print(json.dumps([os.getpid(), t.native_id]), flush=True)\n"
            "t.join()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid, tid = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert pid != tid
        yield pid, tid
    finally:
        proc.kill()
        proc.wait()


def test_a_string_of_ascii_digits_is_a_pid_and_no_other_digits_are(threaded_child):
    pid, _ = threaded_child
    assert resolve_target(str(pid)).pid == pid
    assert resolve_target(f" {pid} ").pid == pid
    # "٣" (Arabic-Indic three) and "²" are digits to str.isdigit(), and names to dumplib.
    for text in ("\u0663", "\u00b2", "\uff11"):
        with pytest.raises(ProcessNotFound) as err:
            resolve_target(text)
        assert "no process matches" in err.value.message and "pid" not in err.value.message.split(";")[0]


def test_cli_takes_only_ascii_digits_as_a_pid():
    from dumplib_cli._common import parse_target

    assert parse_target("123") == 123
    assert parse_target("\u0663") == "\u0663" and parse_target("\u00b2") == "\u00b2"
    for text in ("\u00b2", "\u0663", "9" * 20):
        done = _cli("estimate", text)
        assert done.returncode == 3, (text, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr


@pytest.mark.parametrize("pid", [0, -1, 2**32, 10**20, 2**63, 2**64 + 5])
def test_out_of_range_pids_are_process_not_found(pid):
    with pytest.raises(ProcessNotFound) as err:
        resolve_target(pid)
    assert f"no process has pid {pid}" in err.value.message


def test_a_thread_id_is_named_as_a_thread_of_its_process(threaded_child):
    pid, tid = threaded_child
    with pytest.raises(ProcessNotFound) as err:
        resolve_target(tid)
    assert f"{tid} is a thread of process {pid}" in err.value.message
    done = _cli("estimate", str(tid))
    assert done.returncode == 3 and f"is a thread of process {pid}" in done.stderr, done.stderr


def _named_interpreter(tmp_path: Path) -> Path:
    """The running interpreter under a name no other process has (a symlink: the kernel names the
    process after the path it was started by)."""
    link = tmp_path / f"dlc{uuid.uuid4().hex[:8]}"
    link.symlink_to(os.path.realpath(sys.executable))
    return link


def _resolve_from(argv: List[str]) -> Dict[str, object]:
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="names a process by a symlinked interpreter, which Linux's comm follows")


@linux_only
def test_a_name_never_matches_the_caller_or_its_launcher(tmp_path):
    exe = _named_interpreter(tmp_path)
    # launcher (exe) -> real interpreter (exe) calling resolve_target(exe's name): neither is a candidate.
    got = _resolve_from([str(exe), "-c", LAUNCHER, str(exe), "-c", RESOLVER, exe.name])
    assert "error" in got and "no process matches" in str(got["error"]), got


@linux_only
def test_a_launcher_of_another_name_running_the_same_executable_is_not_a_candidate(tmp_path):
    launcher, real = _named_interpreter(tmp_path), _named_interpreter(tmp_path)
    # `python` forking `python3.11`: the same program under two names; asked for the launcher's name.
    got = _resolve_from([str(launcher), "-c", LAUNCHER, str(real), "-c", RESOLVER, launcher.name])
    assert "error" in got and "no process matches" in str(got["error"]), got


@linux_only
def test_the_other_process_of_that_name_is_found_past_the_launcher_chain(tmp_path):
    exe = _named_interpreter(tmp_path)
    other = subprocess.Popen([str(exe), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        got = _resolve_from([str(exe), "-c", LAUNCHER, str(exe), "-c", RESOLVER, exe.name])
        assert got == {"pid": other.pid}
    finally:
        other.kill()
        other.wait()


@linux_only
def test_an_ancestor_of_that_name_behind_another_program_is_a_real_candidate(tmp_path):
    exe = _named_interpreter(tmp_path)
    # exe -> sh -> exe(resolver): the top one is not a launcher of the caller (a shell stands between).
    inner = f"{exe} -c \"$0\" {exe.name}; status=$?; exit $status"  # not the last command: sh cannot exec it
    code = ("import os, subprocess, sys; print(os.getpid(), flush=True); "
            "sys.exit(subprocess.call(['sh', '-c', sys.argv[1], sys.argv[2]]))")
    done = subprocess.run([str(exe), "-c", code, inner, RESOLVER], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    top, result = done.stdout.strip().splitlines()
    assert json.loads(result) == {"pid": int(top)}

