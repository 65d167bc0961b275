"""A quick command run as the `dumplib` command ends the process without the interpreter's teardown,
only when nothing is left to that teardown (cli/app.py, _leave), and with its own exit code.

Seen from outside: a canary object whose ``__del__`` writes a line when the interpreter tears its
module down; an atexit callback; a thread the interpreter would wait for.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CANARY = """
import sys
class Canary:
    def __del__(self):
        sys.stderr.write("torn down\\n")
canary = Canary()
{setup}
from dumplib_cli.app import main
sys.argv = ["dumplib"] + {args!r}
{call}
"""


def _run(tmp_path: Path, args: list, setup: str = "", call: str = "main()") -> subprocess.CompletedProcess:
    links = tmp_path / "path"
    links.mkdir(exist_ok=True)
    if not (links / "dumplib_cli").exists():
        (links / "dumplib_cli").symlink_to(ROOT / "cli")  # what pyproject.toml's package-dir makes of cli/
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(links)]), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run([sys.executable, "-c", CANARY.format(setup=setup, args=args, call=call)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child.pid
    child.kill()
    child.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' dump path (not tuned for start-up) leaves a thread or"
                    " an atexit callback, so the ordinary exit runs there; the other tests here cover that exit")
def test_a_dump_ends_without_the_teardown_and_its_output_complete(tmp_path, sleeper):
    out = tmp_path / "out"
    out.mkdir()
    done = _run(tmp_path, ["dump", str(sleeper), str(out), "--kind", "mini", "--json"])
    assert done.returncode == 0, done.stderr
    assert "torn down" not in done.stderr
    result = json.loads(done.stdout)  # written and flushed before the process ended
    assert Path(result["path"]).is_file() and Path(result["path"] + ".json").is_file()


def test_called_with_arguments_main_returns_and_the_teardown_runs(tmp_path, sleeper):
    # The control: the canary does speak when the interpreter tears down (a program calling main).
    out = tmp_path / "out"
    out.mkdir()
    done = _run(tmp_path, [], call=f"main(['dump', '{sleeper}', {str(out)!r}, '--kind', 'mini'])")
    assert done.returncode == 0, done.stderr
    assert "torn down" in done.stderr


def test_the_exit_code_of_a_refusal_is_kept(tmp_path):
    done = _run(tmp_path, ["dump", "999999999", str(tmp_path), "--kind", "mini"])
    assert done.returncode == 3, done.stderr  # ProcessNotFound (README, exit codes)
    assert "torn down" not in done.stderr and "no process has pid 999999999" in done.stderr


def test_an_atexit_callback_keeps_the_ordinary_exit(tmp_path):
    setup = "import atexit\natexit.register(lambda: sys.stderr.write('atexit ran\\n'))"
    done = _run(tmp_path, ["dump", "999999999", str(tmp_path)], setup=setup)
    assert done.returncode == 3
    assert "atexit ran" in done.stderr and "torn down" in done.stderr


def test_a_thread_the_interpreter_waits_for_keeps_the_ordinary_exit(tmp_path):
    # The thread lives until the main thread has ended (the interpreter's shutdown releases it), so it is
    # alive when the command leaves, however slowly the command ran: a 1 s sleep was over first when the
    # command took longer (Windows python under Wine at load 10: its imports and process scan).
    setup = ("import threading\n"
             "threading.Thread(target=lambda: (threading.main_thread().join(60), sys.stderr.write('thread done\\n')))"
             ".start()")
    done = _run(tmp_path, ["dump", "999999999", str(tmp_path)], setup=setup)
    assert done.returncode == 3
    assert "thread done" in done.stderr and "torn down" in done.stderr
