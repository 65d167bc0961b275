"""mini and miniplus cores serve gdb's thread library: pthread ids and thread-local storage in every thread.

libthread_db reads the loader's and libc's data (_rtld_global's stack lists, the link_map's TLS module
ids) and each thread's control block, DTV and static TLS: a core without them shows bare LWPs and
"Cannot find thread-local storage". The values checked are the target's own (errno set per thread).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import dumplib
from linuxrig import build_source, gdb, run_target

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent


def _gdb(exe: str, core: str, *commands: str) -> str:
    """gdb's output without the warning gdb 13 prints for the XSAVE note's size on a CPU with AMX (it knows
    no AMX state; the kernel's own core has the same size): a line of its own between a thread's header
    and its value, dropped so that the parsing below sees each value under its thread."""
    return re.sub(r"(?m)^warning: Unexpected size of section `\.reg-xstate/\d+' in core file\.\n", "",
                  gdb(exe, core, *commands))


@pytest.fixture(scope="module")
def tls_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("tls"), HERE / "tls_target.c")


@pytest.mark.parametrize("kind", ["mini", "miniplus", "full"])
def test_gdb_shows_pthread_ids_and_each_threads_errno(tls_exe, outdir, kind):
    with run_target([str(tls_exe)]) as t:
        tids = sorted(int(x) for x in os.listdir(f"/proc/{t.pid}/task"))
        assert len(tids) == t.threads == 4
        result = dumplib.create_dump(t.pid, outdir / f"{kind}.core", kind)
        t.assert_running_untraced()
    out = _gdb(str(tls_exe), result.path, "info threads", "thread apply all p errno")
    pads = _gdb(str(tls_exe), result.path, "thread apply all p (int)tls_pad[0] * 1000 + tls_pad[10000]")
    # "Thread 0x7f... (LWP n)": the pthread id comes from libthread_db, a bare "LWP n" means it failed.
    named = sorted(int(n) for n in re.findall(r"^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP (\d+)\)", out, re.M))
    assert named == tids, out
    errnos = {int(lwp): int(value) for lwp, value in
              re.findall(r"^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)\):\n\$\d+ = (-?\d+)$", out, re.M)}
    assert sorted(errnos) == tids, out
    assert errnos[t.pid] == 7100, out  # the main thread's TLS lies apart from every stack
    assert sorted(errnos.values()) == [7100, 7101, 7102, 7103], out
    assert "Cannot find thread-local" not in out, out
    # Bytes of a static TLS block pages below the thread pointer (the main thread's is in no stack), at its
    # start (near the DTV) and in its middle (in no page the DTV or control block holds).
    firsts = {int(lwp): int(value) for lwp, value in
              re.findall(r"^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)\):\n\$\d+ = (-?\d+)$", pads, re.M)}
    after = gdb(str(tls_exe), result.path, f"x/4xb {t.info['after_libc']}")
    assert t.info["merged"] == 1, t.info
    if kind == "mini":  # libc's .bss, not the memory the kernel merged into its mapping
        assert "Cannot access memory" in after, after
    else:  # miniplus takes it as heap
        assert re.search(r":\s+0x5a\s+0x5a\s+0x5a\s+0x5a", after), after
    assert firsts.get(t.pid) == 50050 and sorted(firsts.values()) == [50050, 51051, 52052, 53053], pads
