"""A core much larger than its bytes on disk says so: copying it with tools that do not keep holes
costs its apparent size."""
from __future__ import annotations

import os
import subprocess
import sys

import dumplib

ZEROED = ("import mmap, sys; m = mmap.mmap(-1, 512 << 20); m.write(bytes(512 << 20));"
          " print('ready', flush=True); sys.stdin.read()")  # 512 MiB touched, every byte zero


def test_a_core_of_touched_zero_pages_is_sparse_and_the_result_says_so(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", ZEROED], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"  # type: ignore[union-attr]
        r = dumplib.create_dump(child.pid, tmp_path / "z.core", "full", sidecar=False, min_free=0)
    finally:
        child.kill()
        child.wait()
    st = os.stat(r.path)
    assert st.st_size > 8 * st.st_blocks * 512, (st.st_size, st.st_blocks)  # what `du` sees, not us
    assert any("is sparse" in w and "cp --sparse" in w for w in r.warnings), r.warnings
