"""core/far.py's requests to its reader child never raise SIGPIPE: in a host that set SIGPIPE to SIG_DFL
(an embedding program; a CLI restoring it for `| head`), a request to a child that was killed must fail
the read with ECHILD, not kill the host. Real child, real kill, real signal disposition."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the Linux reader child", allow_module_level=True)

HOST = r"""
import errno, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
from dumplib._linux.core.far import FarReader
secret = bytearray(b"far-reader-bytes" * 256)
import ctypes
address = ctypes.addressof((ctypes.c_char * len(secret)).from_buffer(secret))
mem = os.open("/proc/self/mem", os.O_RDONLY)
reader = FarReader(mem)
view = memoryview(bytearray(len(secret)))
assert reader.pread_into(view, address) == len(secret) and bytes(view) == bytes(secret)
child = reader._proc
child.kill()
child.wait(timeout=30)
time.sleep(0.1)
try:
    reader.pread_into(memoryview(bytearray(16)), address)
except OSError as exc:
    print("errno", errno.errorcode.get(exc.errno))
else:
    print("read after the child died")
"""


def test_a_request_to_a_dead_child_fails_the_read_and_does_not_kill_a_sigpipe_default_host() -> None:
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", HOST, root], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.returncode, done.stderr)  # -13: killed by SIGPIPE
    assert done.stdout.strip() == "errno ECHILD", done.stdout
