"""Every refusal and failure: the exact error or exit code, nothing left on disk, the target running."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import dumplib
from dumplib.placement import is_temp_name
from helpers import leftovers, tmpfs
from linuxrig import dumplib_cli, run_target

pytestmark = pytest.mark.linux


def test_nonexistent_pid(outdir):
    done = dumplib_cli("dump", "4000000", str(outdir))
    assert done.returncode == 3 and "no process has pid 4000000" in done.stderr
    assert "Traceback" not in done.stderr and list(outdir.iterdir()) == []


def test_ambiguous_name_lists_both(target_exe, outdir, tmp_path):
    twin = tmp_path / "dumplib-twin"
    shutil.copy(target_exe, twin)
    with run_target([str(twin)]) as a, run_target([str(twin)]) as b:
        done = dumplib_cli("dump", "dumplib-twin", str(outdir), "--json")
        a.assert_running_untraced()
    assert done.returncode == 4
    err = json.loads(done.stdout)["error"]
    assert err["type"] == "AmbiguousProcess" and sorted(c["pid"] for c in err["candidates"]) == sorted([a.pid, b.pid])
    assert list(outdir.iterdir()) == []


def test_name_lookup_finds_the_single_match(target_exe, outdir, tmp_path):
    solo = tmp_path / "dumplib-solo"
    shutil.copy(target_exe, solo)
    with run_target([str(solo)]) as t:
        result = dumplib.create_dump("dumplib-solo", outdir, "triage")
    assert result.pid == t.pid and result.path.endswith(".core")


def test_existing_file_untouched_then_overwritten(ctarget, outdir):
    existing = outdir / "x.core"
    existing.write_bytes(b"precious")
    done = dumplib_cli("dump", str(ctarget.pid), str(existing))
    assert done.returncode == 6 and existing.read_bytes() == b"precious" and leftovers(outdir) == []
    ctarget.assert_running_untraced()
    done = dumplib_cli("dump", str(ctarget.pid), str(existing), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert existing.read_bytes()[:4] == b"\x7fELF" and sorted(os.listdir(outdir)) == ["x.core", "x.core.json"]


def test_missing_directory(ctarget, outdir):
    done = dumplib_cli("dump", str(ctarget.pid), str(outdir / "no" / "x.core"))
    assert done.returncode == 7 and "does not exist" in done.stderr
    assert not (outdir / "no").exists()


def test_unwritable_directory(ctarget, tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        done = dumplib_cli("dump", str(ctarget.pid), str(ro / "x.core"))
        assert done.returncode == 7 and "x.core" in done.stderr and "read-only" in done.stderr, done.stderr
        assert list(ro.iterdir()) == []
        ctarget.assert_running_untraced()


def test_self_is_refused(outdir):
    with pytest.raises(dumplib.TargetRefused) as info:
        dumplib.create_dump(os.getpid(), outdir)
    assert info.value.reason == "self" and "another process" in str(info.value)
    assert list(outdir.iterdir()) == []


def test_zombie_is_refused(outdir):
    # The exec'd sleep never reaps its child, which stays a zombie.
    parent = subprocess.Popen(["sh", "-c", "sleep 0 & exec sleep 30"])
    try:
        zombie = None
        for _ in range(100):
            kids = [int(p) for p in open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()]
            if kids and open(f"/proc/{kids[0]}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                zombie = kids[0]
                break
            time.sleep(0.05)
        assert zombie, "no zombie appeared"
        done = dumplib_cli("dump", str(zombie), str(outdir))
        assert done.returncode == 11 and "zombie" in done.stderr
    finally:
        parent.kill()
        parent.wait()
    assert list(outdir.iterdir()) == []


def test_kernel_thread_is_refused(outdir):
    done = dumplib_cli("dump", "2", str(outdir))  # kthreadd
    assert done.returncode == 11 and "kernel thread" in done.stderr, done.stderr
    assert list(outdir.iterdir()) == []


def test_traced_target_names_its_tracer(ctarget, outdir):
    seize = (
        "import ctypes, sys, time\n"
        "from dumplib._linux.ptrace import libc\n"
        f"libc.ptrace(libc.PTRACE_SEIZE, {ctarget.pid}, None, None)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    tracer = subprocess.Popen([sys.executable, "-c", seize], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout.readline().strip() == "ready"
        done = dumplib_cli("dump", str(ctarget.pid), str(outdir), "--json")
        err = json.loads(done.stdout)["error"]
        assert done.returncode == 11 and err["reason"] == "traced" and err["tracer_pid"] == tracer.pid
        assert f"traced by process {tracer.pid}" in err["message"]
    finally:
        tracer.stdin.close()
        tracer.wait()
    assert list(outdir.iterdir()) == []


def test_target_exiting_mid_dump_leaves_nothing(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "512"]) as t:
        def kill_on_first_progress(written: int, elapsed: float) -> None:
            os.kill(t.pid, signal.SIGKILL)

        with pytest.raises(dumplib.DumpFailed) as info:
            dumplib.create_dump(t.pid, outdir, "full", progress=kill_on_first_progress)
    assert info.value.reason == "exited" and "exited while it was being dumped" in str(info.value)
    assert list(outdir.iterdir()) == []


@pytest.mark.parametrize("args, text", [(["-k", "huge"], "unknown dump kind"), (["--flags", "0x400"], "coredump_filter"),
                                        (["--flags", "many"], "not an integer")])
def test_bad_kind_or_flags(ctarget, outdir, args, text):
    done = dumplib_cli("dump", str(ctarget.pid), str(outdir), *args)
    assert done.returncode == 2 and text in done.stderr, done.stderr
    assert list(outdir.iterdir()) == []


def test_raw_coredump_filter_flags(ctarget, target_exe, outdir):
    # 0x1 (anonymous private) takes the heap marker and not the never-written private file page;
    # 0x4 (file-backed private) the reverse; 0x10 (ELF headers) only the first page of each ELF image.
    from dumplib.formats.elfcore import read_elfcore

    eof = int(ctarget.info["eof_address"])
    marker = (ctarget.marker_address, len(ctarget.marker))
    exe_base = min(int(line.split("-")[0], 16) for line in open(f"/proc/{ctarget.pid}/maps")
                   if line.rstrip().endswith(str(target_exe)))

    anon = dumplib.create_dump(ctarget.pid, outdir / "anon.core", flags=0x1)
    core = read_elfcore(anon.path)
    assert anon.flags == 0x1 and core.read_memory(*marker) == ctarget.marker
    assert core.read_memory(eof, 17) is None
    assert core.read_memory(exe_base, 4) is None

    files = read_elfcore(dumplib.create_dump(ctarget.pid, outdir / "file.core", flags=0x4).path)
    assert files.read_memory(eof, 17) == b"DUMPLIB-FILE-PAGE"
    assert files.read_memory(*marker) is None

    headers = read_elfcore(dumplib.create_dump(ctarget.pid, outdir / "hdr.core", flags=0x10).path)
    assert headers.read_memory(*marker) is None and headers.read_memory(eof, 17) is None
    assert headers.read_memory(exe_base, 4) == b"\x7fELF"
    libc = next(line.split() for line in open(f"/proc/{ctarget.pid}/maps")
                if "/libc.so" in line and line.split()[2] == "00000000")
    libc_lo, libc_hi = (int(x, 16) for x in libc[0].split("-"))
    assert libc_hi - libc_lo > 4096
    assert headers.read_memory(libc_lo, 4) == b"\x7fELF"
    assert headers.read_memory(libc_lo + 4096, 4) is None  # the header page only, not the mapping


def test_sigkill_of_the_dumper_leaves_the_target_running(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "1024", "--ticker"]) as t:
        dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), str(outdir), "-k", "full"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                os.path.getsize(outdir / n) > (16 << 20) for n in os.listdir(outdir)):
            time.sleep(0.01)
        assert os.listdir(outdir), "the dump never started"
        os.kill(dumper.pid, signal.SIGKILL)
        dumper.wait()
        time.sleep(0.2)
        t.assert_running_untraced()
        assert t.ask("gap").isdigit()  # it still answers: not stopped, not dead
        stale = leftovers(outdir)
        assert stale and all(is_temp_name(n) for n in stale), stale
