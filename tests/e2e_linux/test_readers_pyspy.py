"""A miniplus core of CPython is read by py-spy (`py-spy dump --core`), which names the running function.

py-spy finds the Python binary by a PT_LOAD with the executable flag at an NT_FILE mapping's start, and
reads an object's .data and .bss as one run of the file: cores that stored neither failed ("Failed to get
binary from coredump", then a read past the file's end).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import dumplib
from helpers import require
from linuxrig import have, run_target

pytestmark = pytest.mark.linux

PY_KNOWN = r"""
import json, os, sys, threading, time
def dumplib_known_function(n):
    while True:
        time.sleep(100)
threading.Thread(target=dumplib_known_function, args=(1,), daemon=True).start()
while not any(t.name.endswith("(dumplib_known_function)") for t in threading.enumerate()):
    time.sleep(0.01)
time.sleep(0.1)
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.read()
"""


def test_py_spy_reads_a_miniplus_core_of_cpython(outdir):
    require(have("py-spy"), "py-spy is not installed (pip install py-spy, the test extra)")
    with run_target([sys.executable, "-c", PY_KNOWN]) as t:
        result = dumplib.create_dump(t.pid, outdir / "py.core", "miniplus")
        t.assert_running_untraced()
    done = subprocess.run(["py-spy", "dump", "--core", result.path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Process {t.pid}" in done.stdout, done.stdout
    assert "dumplib_known_function" in done.stdout, done.stdout
