"""The Linux backend reads a process's name, start, command line and existence from /proc itself (the
one-shot command does not import psutil): the same answers psutil, an independent reader, gives, also
for names and arguments a hostile process chose (bytes that are not UTF-8, parentheses, spaces)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import psutil
import pytest

from dumplib._linux.backend import LinuxPlatform
from linuxrig import run_target

pytestmark = pytest.mark.linux

# Renames itself (PR_SET_NAME: any bytes, the kernel keeps 15) and starts a thread, then waits.
HOSTILE = r"""
import ctypes, json, os, sys, threading
name = bytes.fromhex(sys.argv[1])
if name:
    assert ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0) == 0
threading.Thread(target=sys.stdin.read, daemon=True).start()
print(json.dumps({"pid": os.getpid(), "tid": threading.enumerate()[-1].native_id}), flush=True)
sys.stdin.read()
"""

#: comm values a process can choose: the stat file's own delimiters, fields, not UTF-8, a cut character.
NAMES = [b") R 1 1 (x", b"a b\xff\xfe)", b"(\x1b[31m)", "€€€€€€".encode(), b""]
#: argv words a process can be started with.
ARGV: List[bytes] = [b"plain", b"sp ace", b"\xff\xfenot-utf8", b"", b"x)"]


@pytest.fixture(params=NAMES, ids=lambda n: n.hex() or "own")
def hostile(request) -> Iterator[object]:  # type: ignore[no-untyped-def]
    argv = [os.fsencode(sys.executable), b"-c", HOSTILE.encode(), request.param.hex().encode(), *ARGV]
    with run_target(argv) as t:  # type: ignore[arg-type]
        yield t


def test_name_start_and_command_line_are_psutils(hostile):
    backend, pid = LinuxPlatform(), hostile.pid
    proc = psutil.Process(pid)
    assert backend.name_of(pid) == proc.name()
    assert backend.command_line(pid) == proc.cmdline()
    assert backend.command_line(pid)[-len(ARGV):] == [os.fsdecode(w) for w in ARGV]
    assert abs(backend.started(pid) - proc.create_time()) < 1e-6
    assert backend.process_table()[pid] == proc.name()


def test_the_name_is_the_kernels_comm_bytes(hostile):
    comm = Path(f"/proc/{hostile.pid}/comm").read_bytes()[:-1]  # the kernel's own file, newline-ended
    name = LinuxPlatform().name_of(hostile.pid)
    assert os.fsencode(name) == comm or (len(comm) == 15 and os.fsencode(name).startswith(comm))


def test_a_thread_is_not_a_process_and_a_gone_process_has_no_facts(hostile):
    backend = LinuxPlatform()
    tid = int(hostile.info["tid"])
    assert tid != hostile.pid and os.path.isdir(f"/proc/{tid}")  # the kernel answers for a thread id too
    assert backend.pid_exists(hostile.pid) and not backend.pid_exists(tid)
    assert backend.pid_exists(tid) == psutil.pid_exists(tid)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not backend.pid_exists(gone.pid)
    assert (backend.name_of(gone.pid), backend.command_line(gone.pid), backend.started(gone.pid)) == (None,) * 3


def test_a_long_name_is_argv0s_when_comm_is_its_start(tmp_path):
    exe = tmp_path / "a-rather-long-program-name"
    exe.symlink_to(sys.executable)
    with run_target([str(exe), "-c", HOSTILE, ""]) as t:
        assert Path(f"/proc/{t.pid}/comm").read_text().strip() == exe.name[:15]
        assert LinuxPlatform().name_of(t.pid) == exe.name == psutil.Process(t.pid).name()


def test_the_host_name_is_the_sockets(hostile):
    import socket

    assert LinuxPlatform().host_name() == socket.gethostname()
