"""The signals that end the CLI (SIGINT, SIGTERM, SIGHUP, SIGQUIT): each ends `dump` and `watch` the way
Ctrl-C does (the target let go, its held signal delivered, no temporary left, 128 + its number); a
second one sent while the first is handled only waits its turn (one message, no traceback, the first
one's exit code); and one the command started with ignored (`nohup`, a shell's `&` job) stays ignored.

The checks are the target's state and tracer in /proc, its own record of the signal it received, the
files in the directory and the command's own exit code and stderr; nothing here times the machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import pytest

from helpers import leftovers
from linuxrig import assert_running_untraced, proc_status, signal_defaults
from test_watch_interrupted import (cli_path, delivered, handed_over_and_writing, handover_exe, state_of, target,
                                    wait_for)

pytestmark = pytest.mark.linux

__all__ = ["cli_path", "handover_exe"]  # fixtures, used by name


# -- SIGQUIT (Ctrl-\) on a hand-over ---------------------------------------------------------------

@pytest.mark.parametrize("signals", [(signal.SIGQUIT,), (signal.SIGQUIT, signal.SIGTERM)],
                         ids=["sigquit", "sigquit-then-sigterm"])
def test_sigquit_on_a_handover_watch_lets_the_target_go_and_delivers_its_signal(
        handover_exe: Path, cli_path: str, tmp_path: Path, outdir: Path, signals: Tuple[int, ...]) -> None:
    """Unhandled, Ctrl-\\ killed the watcher mid-dump: the target stayed stopped (T, no tracer) for
    good, the SIGUSR1 it was held at was lost, and the temporary stayed."""
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "USR1", "--kind", "full", "--compress", "gzip", "--compress-level", "9",
                                "--max-pause", "off", "--no-space-check", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=signal_defaults())
        try:
            assert cli.stdout is not None
            assert json.loads(cli.stdout.readline())["event"] == "watching"
            os.kill(proc.pid, signal.SIGUSR1)
            wait_for(lambda: handed_over_and_writing(proc.pid, outdir))
            for sig in signals:
                cli.send_signal(sig)
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 128 + signal.SIGQUIT, (cli.returncode, out, err)
        wait_for(lambda: state_of(proc.pid)[1] == "0" and state_of(proc.pid)[0][0] in "RS", 10)
        wait_for(lambda: delivered(side), 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
        assert sorted(p.name for p in outdir.iterdir()) == []
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events][-2:] == ["abandoned", "stopped"], events
        assert "stopped by SIGQUIT" in events[-1]["message"], events[-1]
        assert "Traceback" not in err, err


# -- a second signal while the first is handled ----------------------------------------------------

#: A target of 1 GiB of non-zero pages (every page is written to the core): its full dump to /var/tmp
#: (ext4 here: staged) copies it for ~0.4 s while the target is stopped and writes it for ~0.3 s after
#: (load 4, 2 cores); longer on a busier machine.
BIG = r"""
import sys
heap = bytearray(b"\x5a") * (int(sys.argv[1]) << 20)
print("ready", flush=True)
sys.stdin.read()
"""


class BigTarget:
    def __init__(self, mib: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BIG, str(mib)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.pid = self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def big() -> Any:
    t = BigTarget(1024)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def var_tmp() -> Any:
    """A directory on /var/tmp (a disk, not tmpfs: the dump is staged and written after the stop)."""
    where = Path(tempfile.mkdtemp(prefix="dumplib-sigtest-", dir="/var/tmp"))
    try:
        yield where
    finally:
        for p in where.iterdir():
            p.unlink()
        where.rmdir()


def tracer(pid: int) -> str:
    return proc_status(pid)["TracerPid"]


def dump_cli(pid: int, directory: Path, cli_path: str, *, wrapper: Sequence[str] = (),
             preexec: Optional[Callable[[], None]] = None) -> "subprocess.Popen[str]":
    return subprocess.Popen([*wrapper, sys.executable, "-m", "dumplib_cli", "dump", str(pid), str(directory),
                             "--kind", "full", "--no-sidecar"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=preexec or signal_defaults())


def full_pipe() -> Tuple[int, int]:
    """A pipe whose buffer is already full: the first write to it blocks until the reader drains it
    (a terminal held with Ctrl-S, a reader that does not keep up)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"." * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def blocked_in_write(pid: int, sig: int) -> bool:
    """The command's main thread waits in write() to stderr (system call 1 on x86-64, 64 on arm64, on
    descriptor 2), with no *sig* still pending (the last one sent has been taken)."""
    try:
        call, fd = (Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split() + ["", ""])[:2]  # or "running"
        st = proc_status(pid)
    except (OSError, KeyError):
        return False
    mask = 1 << (sig - 1)
    pending = int(st.get("SigPnd", "0"), 16) | int(st.get("ShdPnd", "0"), 16)
    return call == ("64" if os.uname().machine == "aarch64" else "1") and fd == "0x2" and not pending & mask


@pytest.mark.parametrize("signals,code,message", [
    ((signal.SIGINT, signal.SIGINT), 130, "interrupted"),
    ((signal.SIGTERM, signal.SIGINT), 143, "terminated"),
    ((signal.SIGQUIT, signal.SIGHUP), 131, "quit (SIGQUIT)"),
], ids=["sigint-sigint", "sigterm-sigint", "sigquit-sighup"])
def test_a_second_signal_waits_for_the_first_ones_cleanup_and_message(
        big: BigTarget, cli_path: str, var_tmp: Path, signals: Tuple[int, int], code: int, message: str) -> None:
    """The first signal while the target is stopped for the copy; the second (at least 50 ms later) once
    the command, its cleanup done, waits to write its last line to a stderr that does not take it yet.
    Raised again there, the second gave a traceback instead of the message and exit code -2; raised
    during the cleanup, it left the temporary behind a message saying nothing was left. Now: the first
    one's code and message, once, nothing left, the target running untraced."""
    r, w = full_pipe()
    with os.fdopen(r, "rb") as reader:
        try:
            cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(big.pid), str(var_tmp),
                                    "--kind", "full", "--no-sidecar"], stdout=subprocess.DEVNULL, stderr=w,
                                   env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=signal_defaults())
        finally:
            os.close(w)
        try:
            wait_for(lambda: tracer(big.pid) != "0" or cli.poll() is not None)
            assert cli.poll() is None, "the dump ended before it stopped the target"
            cli.send_signal(signals[0])
            time.sleep(0.05)
            wait_for(lambda: blocked_in_write(cli.pid, signals[0]) or cli.poll() is not None)
            cli.send_signal(signals[1])
            wait_for(lambda: blocked_in_write(cli.pid, signals[1]) or cli.poll() is not None)
            err = reader.read().lstrip(b".").decode()
            cli.wait(timeout=60)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
    assert cli.returncode == code, (cli.returncode, err)
    assert err.splitlines() == [f"dumplib: error: {message}; nothing was left behind"], err
    assert leftovers(var_tmp) == [] and list(var_tmp.iterdir()) == []
    wait_for(lambda: tracer(big.pid) == "0", 10)
    assert_running_untraced(big.pid)


# -- an ignored SIGHUP (nohup) ---------------------------------------------------------------------

def test_dump_under_nohup_is_not_ended_by_a_hangup(big: BigTarget, cli_path: str, var_tmp: Path) -> None:
    """Under nohup SIGHUP is ignored; the command used to put its own handler in place and end at it
    (129, nothing written). Now the hang-up is lost, as nohup means, and the dump is written."""
    cli = dump_cli(big.pid, var_tmp, cli_path, wrapper=["nohup"], preexec=signal_defaults(ignored=(signal.SIGHUP,)))
    try:
        wait_for(lambda: tracer(big.pid) != "0" or cli.poll() is not None)  # run() has its handlers in place
        assert cli.poll() is None, "the dump ended before it stopped the target"
        cli.send_signal(signal.SIGHUP)
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, (cli.returncode, err)
    assert [p.suffix for p in var_tmp.iterdir()] == [".core"], list(var_tmp.iterdir())
    wait_for(lambda: tracer(big.pid) == "0", 10)
    assert_running_untraced(big.pid)


@pytest.mark.parametrize("wrapper", [["nohup"], []], ids=["nohup", "sighup-ignored-by-the-parent"])
def test_watch_with_sighup_ignored_is_not_ended_by_a_hangup(
        handover_exe: Path, cli_path: str, tmp_path: Path, outdir: Path, wrapper: List[str]) -> None:
    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        cli = subprocess.Popen([*wrapper, sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                "--signal", "USR1", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=cli_path),
                               preexec_fn=signal_defaults(ignored=(signal.SIGHUP,)))
        try:
            assert cli.stdout is not None
            assert json.loads(cli.stdout.readline())["event"] == "watching"
            cli.send_signal(signal.SIGHUP)
            cli.send_signal(signal.SIGTERM)
            out, err = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 143, (cli.returncode, out, err)
        assert "stopped by SIGTERM" in json.loads(out.splitlines()[-1])["message"], out
        wait_for(lambda: state_of(proc.pid)[1] == "0" and state_of(proc.pid)[0][0] in "RS", 10)


# -- a closed terminal -----------------------------------------------------------------------------

def test_watch_in_a_terminal_that_closes_mid_handover_exits_129(
        handover_exe: Path, cli_path: str, tmp_path: Path, outdir: Path) -> None:
    """The watcher's controlling terminal (a pty, the watcher its session leader) closes while a process
    is held for a dump at its signal: the kernel's SIGHUP ends the watch, the process is let go with its
    signal, and the exit code is SIGHUP's 129, as README says. The `stopped` line the watch then writes
    to the hung-up terminal fails (EIO); that failure used to make the exit code 74 (EXIT_OUTPUT)."""
    import fcntl
    import termios

    side = tmp_path / "handler.txt"
    with target(handover_exe, side) as proc:
        master, slave = os.openpty()
        reset = signal_defaults()

        def own_terminal() -> None:
            reset()
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        try:
            cli = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "watch", str(proc.pid), str(outdir),
                                    "--signal", "USR1", "--kind", "full", "--compress", "gzip",
                                    "--compress-level", "9", "--max-pause", "off", "--no-space-check"],
                                   stdin=slave, stdout=slave, stderr=slave, env=dict(os.environ, PYTHONPATH=cli_path),
                                   preexec_fn=own_terminal)
        finally:
            os.close(slave)
        try:
            seen = b""
            while b"watching" not in seen:
                chunk = os.read(master, 4096)
                assert chunk, seen
                seen += chunk
            os.kill(proc.pid, signal.SIGUSR1)
            wait_for(lambda: handed_over_and_writing(proc.pid, outdir))
            os.close(master)
            master = -1
            cli.wait(timeout=120)
        finally:
            if master >= 0:
                os.close(master)
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 129, cli.returncode
        wait_for(lambda: state_of(proc.pid)[1] == "0" and state_of(proc.pid)[0][0] in "RS", 10)
        wait_for(lambda: delivered(side), 10)
        assert delivered(side) == [f"signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"]
        assert sorted(p.name for p in outdir.iterdir()) == []
