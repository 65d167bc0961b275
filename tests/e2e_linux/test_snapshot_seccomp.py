"""Snapshots of processes under seccomp: filters are fetched and run before anything is injected.

A Docker-like filter (clone() allowed unless it makes a user namespace) gets a snapshot; a filter
that answers clone() with EPERM or by killing the process gets none: "auto" falls back, True is
refused, and the target runs on untouched. gdb is the reader of the core."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import dumplib
from helpers import leftovers, require
from linuxrig import assert_running_untraced, build_source, have

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def seccomp_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("seccomp"), HERE / "seccomp_filter_target.c")


def _start(exe: Path, mode: str):
    proc = subprocess.Popen([str(exe), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pid, marker = proc.stdout.readline().split()
    return proc, int(pid), marker


def _still_serves(proc) -> None:
    proc.stdin.write("still there?\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "still there?\n"
    assert_running_untraced(proc.pid)
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    assert children.strip() == "", f"the target was left with children: {children}"


def test_a_docker_like_filter_allows_the_snapshot(seccomp_exe, tmp_path):
    require(have("gdb"), "gdb is not installed")
    proc, pid, marker = _start(seccomp_exe, "userns")
    try:
        r = dumplib.create_dump(pid, str(tmp_path / "s.core"), "full", snapshot=True, sidecar=False)
        assert r.snapshot is True
        _still_serves(proc)
        out = subprocess.run(["gdb", "-batch", "-ex", f"x/s {marker}", str(seccomp_exe), r.path],
                             capture_output=True, text=True).stdout
        assert "SECCOMP-TARGET-MARKER" in out, out
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("mode", ["eperm", "kill"])
def test_a_filter_forbidding_clone_gets_no_snapshot_and_the_target_lives(seccomp_exe, tmp_path, mode):
    proc, pid, _ = _start(seccomp_exe, mode)
    try:
        with pytest.raises(dumplib.TargetRefused) as refused:
            dumplib.create_dump(pid, str(tmp_path / "refused.core"), "full", snapshot=True)
        assert refused.value.reason == "snapshot-unavailable"
        # Which call the filter stops, what it does to it, and why a snapshot needs that call.
        said = {"eperm": "fails the call with errno 1", "kill": "kills the whole process"}[mode]
        assert f"seccomp filter {said} at clone (system call 56)" in str(refused.value), str(refused.value)
        assert "copy-on-write clone the target makes of itself" in str(refused.value)
        assert leftovers(tmp_path) == [] and not (tmp_path / "refused.core").exists()
        _still_serves(proc)
        r = dumplib.create_dump(pid, str(tmp_path / "auto.core"), "full", snapshot="auto", sidecar=False)
        assert r.snapshot is False
        assert any("seccomp" in w for w in r.warnings), r.warnings
        _still_serves(proc)
    finally:
        proc.kill()
        proc.wait()
