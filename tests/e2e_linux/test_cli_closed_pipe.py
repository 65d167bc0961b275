"""A listing read by a reader that leaves early (`dumplib ps | head -1`) ends the command quietly with
exit code 141, as a shell reports a command SIGPIPE ended: no traceback on stderr. Real pipe, real
reader closing it, real process table (made long enough that the output outgrows the pipe's buffer).
A stdout that cannot take a line (/dev/full, closed) ends it with 74, said on stderr; descriptors
closed at start are held on /dev/null."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Linux process table", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


def test_ps_into_a_pipe_closed_after_one_line_exits_141_without_a_traceback(tmp_path):
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(1000)]  # rows past what a pipe buffers (64 KiB)
    try:
        read_r, read_w = os.pipe()
        # The command writes into a pipe whose reader is closed once the first line has come.
        proc = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "ps"], stdout=read_w, stderr=subprocess.PIPE,
                                env=_env())
        os.close(read_w)
        with os.fdopen(read_r, "rb") as reader:
            first = reader.readline()
        _, err = proc.communicate(timeout=120)
        assert first.split()[:2] == [b"PID", b"NAME"], first
        assert proc.returncode == 141, (proc.returncode, err)
        assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    finally:
        for s in sleepers:
            s.kill()
            s.wait()


def _env() -> Dict[str, str]:
    """This checkout first on the path, for the child interpreters."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH", ""), str(ROOT)])))


def _redirected(redirect: str, *argv: str) -> List[str]:
    """*argv* run under `sh -c 'exec ... REDIRECT'`: the shell closes or redirects its descriptors."""
    return ["sh", "-c", f'exec "$@" {redirect}', "sh", *argv]


def _python(code: str, redirect: str) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(_redirected(redirect, sys.executable, "-c", code), capture_output=True, env=_env(),
                          timeout=120)


def _cli(*args: str, redirect: str, timeout: float = 120) -> "subprocess.CompletedProcess[bytes]":
    """The real command, its descriptors closed or redirected by the shell."""
    return subprocess.run(_redirected(redirect, sys.executable, "-m", "dumplib_cli", *args), capture_output=True,
                          env=_env(), timeout=timeout)


def test_ps_onto_a_full_device_exits_74_saying_so_without_a_traceback():
    done = _cli("ps", redirect="> /dev/full")
    assert done.returncode == 74, done
    assert b"cannot write to standard output (No space left on device)" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr, done.stderr


def test_ps_with_stdout_closed_exits_74_without_a_traceback():
    done = _cli("ps", redirect=">&-")
    assert done.returncode == 74, done
    assert b"Traceback" not in done.stderr and b"closed" in done.stderr, done.stderr


def test_a_dump_whose_result_line_cannot_be_printed_is_kept_whole_beside_its_sidecar(ctarget, tmp_path):
    out = tmp_path / "kept.core"
    done = _cli("dump", str(ctarget.pid), str(out), redirect="> /dev/full")
    assert done.returncode == 74, done
    assert b"Traceback" not in done.stderr, done.stderr
    # Whole: the kernel's ELF reader's view (readelf) of a core, and the sidecar's hash of these bytes.
    head = subprocess.run(["readelf", "-h", "-l", str(out)], capture_output=True, text=True, check=True).stdout
    assert "CORE (Core file)" in head and "LOAD" in head
    import hashlib
    import json
    assert json.loads((tmp_path / "kept.core.json").read_text())["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_an_error_with_stderr_closed_still_exits_with_its_own_code(tmp_path):
    done = _cli("dump", "999999999", str(tmp_path / "none.core"), redirect="2>&-")
    assert done.returncode == 3, done  # ProcessNotFound's row in README, not an internal error
    assert list(tmp_path.iterdir()) == []


def test_a_standard_descriptor_closed_at_start_is_held_on_dev_null_not_given_to_a_file(ctarget, tmp_path):
    # With fd 2 closed, the first file opened would take number 2, and anything written to "stderr"
    # would land in it. A watch stays up long enough for its descriptors to be read from /proc.
    watcher = subprocess.Popen(_redirected("0<&- 2>&-", sys.executable, "-m", "dumplib_cli", "watch", str(ctarget.pid),
                                           str(tmp_path), "--memory", "1T", "--timeout", "60", "--json"),
                               stdout=subprocess.PIPE, env=_env())
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the "watching" event: the watch is set up, its files open
        assert b'"watching"' in first, first
        for fd in (0, 2):
            assert os.readlink(f"/proc/{watcher.pid}/fd/{fd}") == "/dev/null", fd
    finally:
        watcher.terminate()
        watcher.communicate(timeout=60)


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["watch", "--help"]])
def test_what_typer_prints_meets_an_unwritable_stdout_as_every_command_does(args, redirect):
    done = _cli(*args, redirect=redirect)
    assert done.returncode == 74, done
    assert b"cannot write to standard output" in done.stderr and b"Traceback" not in done.stderr, done.stderr


def test_a_usage_error_onto_a_full_stderr_keeps_the_usage_exit_code():
    done = _cli("ps", "--no-such-option", redirect="2>/dev/full")
    assert done.returncode == 2, done  # the usage row: stderr's trouble is given up on, not reported as stdout's


def test_main_called_by_a_program_leaves_the_programs_descriptors_alone():
    # A program calling main(argv) owns its descriptors: a failed write is no reason to repoint them.
    code = ("import os, sys\nfrom dumplib_cli.app import main\n"
            "try:\n    main(['dump', '999999999', '/nonexistent/x.core'])\nexcept SystemExit as e:\n    code = e.code\n"
            "os.write(3, f\"{code} {os.readlink('/proc/self/fd/2')}\".encode())\n")
    done = _python(code, "2>/dev/full 3>&1")
    assert done.stdout.split() == [b"3", b"/dev/full"], done  # ProcessNotFound's code; fd 2 still the program's


def test_every_standard_descriptor_closed_at_start_is_held_on_dev_null():
    # The entry's own step, on a process started with 0, 1 and 2 closed: the kernel says where each points.
    code = ("import os\nfrom dumplib_cli.app import _hold_standard_descriptors\n_hold_standard_descriptors()\n"
            "first = os.open('/proc/self/status', os.O_RDONLY)\n"
            "os.write(3, ' '.join([os.readlink(f'/proc/self/fd/{fd}') for fd in (0, 1, 2)] + [str(first)]).encode())\n")
    done = _python(code, "3>&1 0<&- 1>&- 2>&-")
    held = done.stdout.split()
    assert held[:3] == [b"/dev/null"] * 3, done
    assert int(held[3]) > 3, done  # the first file opened takes none of their numbers


def test_a_dump_to_a_pipe_whose_reader_has_gone_is_refused_before_the_target_is_stopped(ctarget, tmp_path):
    """`dumplib dump PID - | head -c 0` where head has already exited: exit 8 (broken-pipe) saying nothing
    was dumped, and strace (an independent reader of dumplib's system calls) sees no ptrace call at all:
    the target was never stopped (a review saw it stopped 0.84 s for nothing)."""
    import json
    import shutil

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    read_r, read_w = os.pipe()
    os.close(read_r)  # the reader has gone
    trace = tmp_path / "strace.txt"
    try:
        proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=ptrace", "-o", str(trace), sys.executable, "-m",
                               "dumplib_cli", "dump", str(ctarget.pid), "-", "--kind", "full", "--json"],
                              stdout=read_w, stderr=subprocess.PIPE, env=_env(), timeout=120)
    finally:
        os.close(read_w)
    err = proc.stderr.decode()
    assert proc.returncode == 8, (proc.returncode, err)
    error = json.loads(next(line for line in err.splitlines() if line.startswith("{")))["error"]
    assert error["reason"] == "broken-pipe" and "not stopped" in error["message"], error
    assert "PTRACE_" not in trace.read_text(), trace.read_text()
    ctarget.assert_running_untraced()
