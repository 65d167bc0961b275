"""A listing read by a reader that leaves early (`dumplib ps | head -1`) ends the command quietly with
exit code 141, as a shell reports a command SIGPIPE ended: no traceback on stderr. Real pipe, real
reader closing it, real process table (made long enough that the output outgrows the pipe's buffer)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
                                    os.environ.get("PYTHONPATH", ""), str(ROOT)]))))
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
