"""Cores of real Linux processes, proven by independent readers: gdb, readelf, eu-stack, lldb."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

import dumplib
from dumplib.formats.elfcore import read_elfcore
from helpers import require
from linuxrig import (AVX_TARGET_C, PY_TARGET, YMM15, build_c, dumplib_cli, gdb, have, kernel_cores, run_target,
                      unlimited_core)

pytestmark = pytest.mark.linux
NAMED = ("thread_alpha_spin", "thread_beta_wait", "thread_gamma_sleep", "main_wait_for_input")


def _marker_shown(out: str, marker: bytes) -> bool:
    return f'"{marker.decode()}"' in out


def test_full_core_has_every_thread_backtrace_marker_and_libraries(ctarget, target_exe, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir, "full", comment="case 7")
    assert re.fullmatch(rf"dumplib-target_{ctarget.pid}_\d{{6}}_\d{{6}}\.core", os.path.basename(result.path))
    assert result.backend == "linux-elfcore" and result.stopped_seconds is not None and result.stopped_seconds < result.seconds
    out = gdb(str(target_exe), result.path, "info threads", "thread apply all bt",
              f"x/s {ctarget.marker_address}", "info sharedlibrary")
    assert len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP) ", out, re.M)) == ctarget.threads, out
    for name in NAMED:
        assert name in out, f"{name} missing from gdb's backtraces:\n{out}"
    assert _marker_shown(out, ctarget.marker), out
    assert "libc.so.6" in out
    core = read_elfcore(result.path)
    assert core.complete and core.pid == ctarget.pid and len(core.threads) == ctarget.threads
    assert core.comment == "case 7"
    assert json.loads(core.signature) == {"tool": "dumplib", "version": dumplib.__version__, "kind": "full", "flags": None}
    ctarget.assert_running_untraced()


@pytest.mark.parametrize("kind, has_marker", [("miniplus", True), ("mini", False), ("triage", False)])
def test_smaller_kinds_keep_backtraces_and_decide_the_heap(ctarget, target_exe, outdir, kind, has_marker):
    result = dumplib.create_dump(ctarget.pid, outdir / f"{kind}.core", kind)
    out = gdb(str(target_exe), result.path, "thread apply all bt", f"x/s {ctarget.marker_address}", "info sharedlibrary")
    for name in NAMED:
        assert name in out, f"{kind}: {name} missing:\n{out}"
    assert "libc.so.6" in out, out
    assert _marker_shown(out, ctarget.marker) is has_marker, out
    if not has_marker:
        assert "Cannot access memory" in out, out
    ctarget.assert_running_untraced()


def test_mini_of_a_200mib_heap_is_under_5_percent_of_full_on_disk(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "200"]) as t:
        full = dumplib.create_dump(t.pid, outdir / "full.core", "full")
        mini = dumplib.create_dump(t.pid, outdir / "mini.core", "mini")
        out = gdb(str(target_exe), mini.path, "thread apply all bt")
    assert full.disk_bytes > 200 << 20
    assert mini.disk_bytes < 0.05 * full.disk_bytes, (mini.disk_bytes, full.disk_bytes)
    for name in NAMED:
        assert name in out


def test_awkward_memory_many_threads_dontdump_protnone_file_past_eof(target_exe, outdir):
    with run_target([str(target_exe), "--threads", "64"]) as t:
        result = dumplib.create_dump(t.pid, outdir / "awk.core", "full")
        t.assert_running_untraced()
    core = read_elfcore(result.path)
    assert len(core.threads) == t.threads == 65
    data = open(result.path, "rb").read()
    assert f"DUMPLIB-DONTDUMP-SECRET-{t.pid}".encode() not in data  # the format string itself is in .rodata
    guard = int(t.info["guard_address"])
    assert not any(ld.vaddr <= guard < ld.vaddr + ld.memsz for ld in core.loads)  # PROT_NONE: nothing to take
    eof = int(t.info["eof_address"])
    assert core.read_memory(eof, 17) == b"DUMPLIB-FILE-PAGE"
    assert not any(ld.vaddr <= eof + 4096 < ld.vaddr + ld.memsz for ld in core.loads)  # SIGBUS there: no load
    out = gdb(str(target_exe), result.path, "info threads", "thread apply all bt")
    assert len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP) ", out, re.M)) == 65
    assert out.count(" in thread_many_park ") == 61, out


def test_readelf_sees_notes_in_kernel_order(ctarget, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir, "mini")
    out = subprocess.run(["readelf", "-n", "-l", "-W", result.path], capture_output=True, text=True).stdout
    order = re.findall(r"^\s+(?:CORE|LINUX)\s+0x[0-9a-f]+\s+(NT_\w+)", out, re.M)
    assert order[:7] == ["NT_PRSTATUS", "NT_PRPSINFO", "NT_SIGINFO", "NT_AUXV", "NT_FILE", "NT_FPREGSET", "NT_X86_XSTATE"]
    assert order.count("NT_PRSTATUS") == ctarget.threads
    assert "Core file" in out and "LOAD" in out


def test_gdb_shows_the_full_ymm_value_a_thread_holds(outdir, tmp_path):
    # ymm15's upper 128 bits exist only in the XSAVE area: without the NT_X86_XSTATE note (or with
    # it misplaced) gdb cannot print the known value the target's thread put there.
    exe = build_c(tmp_path, "avx-target", AVX_TARGET_C)
    with run_target([str(exe)]) as t:
        require(bool(t.info["avx"]), "this CPU has no AVX")
        result = dumplib.create_dump(t.pid, outdir, "mini")
        t.assert_running_untraced()
    out = gdb(str(exe), result.path, "thread apply all p/x $ymm15.v8_int32")
    expected = "{" + ", ".join(hex(v) for v in YMM15) + "}"
    assert expected in out, out


def test_eu_stack_unwinds_every_thread(ctarget, target_exe, outdir):
    require(have("eu-stack"), "eu-stack is not installed (apt-get install elfutils)")
    result = dumplib.create_dump(ctarget.pid, outdir, "mini")
    out = subprocess.run(["eu-stack", "--core", result.path, "-e", str(target_exe)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert text.count("TID ") == ctarget.threads, text
    for name in NAMED:
        assert name in text, text


def test_lldb_unwinds_every_thread(ctarget, target_exe, outdir):
    require(have("lldb"), "lldb is not installed (apt-get install lldb)")
    result = dumplib.create_dump(ctarget.pid, outdir, "mini")
    out = subprocess.run(["lldb", "--batch", "-c", result.path, str(target_exe), "-o", "thread backtrace all"],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    for name in NAMED:
        assert name in text, text


def test_matches_the_kernels_own_core_of_the_same_program(target_exe, outdir, tmp_path):
    require(os.geteuid() == 0, "setting kernel.core_pattern needs root")
    with kernel_cores(tmp_path / "kcore") as kdir:
        with run_target([str(target_exe)], preexec=unlimited_core) as t:
            ours = dumplib.create_dump(t.pid, outdir, "full")
            os.kill(t.pid, signal.SIGABRT)
            t.proc.wait(timeout=60)
    kernel_core = kdir / f"core.{t.pid}"
    assert kernel_core.exists(), list(kdir.iterdir())
    theirs = gdb(str(target_exe), str(kernel_core), "info threads", "thread apply all bt", f"x/s {t.marker_address}")
    mine = gdb(str(target_exe), ours.path, "info threads", "thread apply all bt", f"x/s {t.marker_address}")
    count = lambda s: len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP) ", s, re.M))  # noqa: E731
    assert count(mine) == count(theirs) == t.threads
    for name in NAMED:
        assert name in mine and name in theirs
    assert _marker_shown(mine, t.marker) and _marker_shown(theirs, t.marker)
    k, m = read_elfcore(str(kernel_core)), read_elfcore(ours.path)
    assert sorted(k.threads) == sorted(m.threads)
    assert set(k.files) == set(m.files)


def test_python_target_through_the_cli(outdir):
    with run_target([sys.executable, "-c", PY_TARGET]) as t:
        done = dumplib_cli("dump", str(t.pid), str(outdir), "--kind", "full", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        out = gdb(sys.executable, result["path"], "info threads", "bt", f"x/s {t.marker_address}")
        t.assert_running_untraced()
    assert len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP) ", out, re.M)) == 2, out
    assert _marker_shown(out, t.marker), out
    assert result["process_name"].startswith("python") and result["size"] == os.path.getsize(result["path"])
