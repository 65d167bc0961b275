"""Hostile-review attacks on the core_pattern handler (r-p17): the crashing process and the users around
the install are hostile and unprivileged; every attack here was red before its fix.

kernel.core_pattern is machine-wide: every install goes through test_postmortem.installed(), which puts
back the exact bytes found whatever happens.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from helpers import private_state, require
from linuxrig import run_cli
from test_postmortem import (CORE_PATTERN, PIPE_LIMIT, cores, crash, crasher, dumps,  # noqa: F401 - fixtures
                             installed, log_records)

pytestmark = pytest.mark.linux

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOBODY = 65534


def _cli_path(shim: Path, package_root: Path = REPO) -> str:
    """PYTHONPATH for `python -m dumplib_cli` from *package_root* (the global editable install maps
    dumplib_cli to /work/main otherwise)."""
    if not (shim / "dumplib_cli").exists():
        (shim / "dumplib_cli").symlink_to(package_root / "cli")
    return f"{package_root}{os.pathsep}{shim}"


@pytest.fixture(autouse=True)
def this_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _cli_path(tmp_path_factory.mktemp("shim"))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def ours(records: List[Dict[str, Any]], *exes: Path) -> List[Dict[str, Any]]:
    """This test's crashes only: other tests on the machine crash processes while our handler is in place."""
    return [r for r in records if r.get("exe") in {str(e) for e in exes}]


def wait_ours(state: Path, count: int, *exes: Path) -> List[Dict[str, Any]]:
    """The log once *count* of this test's crashes are in it (or after a minute): every record."""
    deadline = time.monotonic() + 60
    while True:
        records = log_records(state, timeout=0)
        if len(ours(records, *exes)) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# -- install: what the kernel will run as root must stay root's ------------------------------------------


def test_a_state_dir_reached_through_a_users_symlink_is_not_the_handlers_path(dumps: Path, tmp_path: Path) -> None:
    """A symlink a user owns (in a sticky, world-writable directory) to a root-only directory passes a
    check of its target; if core_pattern names the symlink, the user repoints it to a "handler" of his
    own and the kernel runs that as root at the next crash."""
    real = private_state(tmp_path, "real-state")  # root's all the way up: install takes it
    real.mkdir(mode=0o700)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    link = sticky / "state"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    with installed(link, dumps, "--min-free", "1M") as st:
        pattern = CORE_PATTERN.read_bytes()
        script = (real / "handler").read_bytes()
    assert str(sticky).encode() not in pattern, pattern
    assert pattern.startswith(b"|" + str(real / "handler").encode()), pattern
    assert str(sticky).encode() not in script, script
    assert str(sticky) not in st["state_dir"] + st["log"], st


def test_install_refuses_a_package_tree_with_a_file_a_user_owns(dumps: Path, tmp_path: Path) -> None:
    """The handler imports dumplib's modules as root at every crash: one of them (or a __pycache__)
    that a user can write is his code run as root. The check covered only the package directory."""
    root = tmp_path / "pkgroot"
    root.mkdir(mode=0o755)
    shutil.copytree(REPO / "dumplib", root / "dumplib", ignore=shutil.ignore_patterns("__pycache__"))
    os.chown(root / "dumplib" / "_linux" / "core" / "stream.py", NOBODY, NOBODY)
    before, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    env = dict(os.environ, PYTHONPATH=_cli_path(tmp_path, root))
    (tmp_path / "dumplib_cli").unlink()
    (tmp_path / "dumplib_cli").symlink_to(REPO / "cli")
    try:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "install", "--dir", str(dumps),
                               "--state-dir", str(tmp_path / "s"), "--sysctl-file", str(tmp_path / "sysctl.conf")],
                              capture_output=True, text=True, timeout=60, env=env, cwd="/")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "core/stream.py" in done.stderr and "uid 65534" in done.stderr, done.stderr
        assert CORE_PATTERN.read_bytes() == before and not (tmp_path / "s").exists()
    finally:  # a handler installed by the bug must not outlive the test
        subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "uninstall", "--force", "--state-dir",
                        str(tmp_path / "s")], capture_output=True, timeout=60, env=env, cwd="/")
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
        PIPE_LIMIT.write_bytes(limit.strip())


def test_uninstall_puts_back_the_sysctl_files_mode_and_owner(dumps: Path, tmp_path: Path) -> None:
    """The admin's sysctl.d file came back 0644 root:root whatever it was: "exactly" includes its mode."""
    state = private_state(tmp_path)
    sysctl = tmp_path / "sysctl.conf"
    sysctl.write_bytes(b"# the admin's own, not for everyone's eyes\n")
    sysctl.chmod(0o640)
    os.chown(sysctl, 0, 4)
    with installed(state, dumps, "--min-free", "1M"):
        pass
    st = sysctl.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, 4), oct(st.st_mode)
    assert sysctl.read_bytes() == b"# the admin's own, not for everyone's eyes\n"


# -- the crasher: one user, many executables ---------------------------------------------------------------


def test_one_user_cannot_dodge_the_rate_limit_by_copying_the_executable(crasher: Path, dumps: Path,
                                                                        tmp_path: Path) -> None:
    """The budget was per executable path, which is the crasher's choice: N copies got N budgets, so one
    user filled DIR down to its reserve and every other crash on the machine was refused for space."""
    copies = []
    for i in range(3):
        copy = crasher.parent / f"copy-{i}"
        shutil.copy(crasher, copy)
        copy.chmod(0o755)
        copies.append(copy)
    state = private_state(tmp_path)
    try:
        with installed(state, dumps, "--max-per", "10:1", "--max-exes-per-user", "2", "--min-free", "1M"):
            for copy in copies:
                crash(copy, "1", preexec_fn=_as_nobody)
            wait_ours(state, 3, *copies)
            crash(crasher, "1")  # another user (root) still has its own budget
            records = wait_ours(state, 4, crasher, *copies)
    finally:
        for copy in copies:
            copy.unlink()
    records = ours(records, crasher, *copies)
    outcomes = [(r["uid"], r["outcome"]) for r in records]
    assert outcomes == [(NOBODY, "written"), (NOBODY, "written"), (NOBODY, "rate-limited"), (0, "written")], records
    assert "executables" in records[2]["why"], records[2]


def test_the_log_does_not_grow_without_bound(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    """Every crash, refused or not, appended a line (with a 4 KiB exe path if the crasher likes) to a
    log on root's volume, forever: a crash loop filled it. Past its cap it is rotated once."""
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:1", "--min-free", "1M"):
        filler = json.dumps({"outcome": "rate-limited", "why": "x" * 900}).encode() + b"\n"
        with open(os.open(state / "postmortem.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            for _ in range((64 << 20) // len(filler)):  # 64 MiB of earlier crashes
                f.write(filler)
        crash(crasher, "1")
        old = state / "postmortem.log.1"
        records = wait_ours(state, 1, crasher)
    assert [r["outcome"] for r in ours(records, crasher)] == ["written"], [r["outcome"] for r in records[-3:]]
    assert old.exists() and stat.S_IMODE(old.stat().st_mode) == 0o600
    assert (state / "postmortem.log").stat().st_size < 64 << 10  # the 64 MiB went, once, to .1


def test_an_exe_path_with_newlines_escapes_and_dotdot_stays_one_log_line(crasher: Path, dumps: Path,
                                                                          tmp_path: Path) -> None:
    where = crasher.parent / 'evil\n{"outcome": "written", "path": "/etc/shadow"}\x1b[2J'
    try:
        long_dir = where / ("d" * 200) / ("e" * 200) / ("f" * 200)
        long_dir.mkdir(parents=True)
        exe = long_dir / "crash\tme"
        shutil.copy(crasher, exe)
        exe.chmod(0o755)
        state = private_state(tmp_path)
        with installed(state, dumps, "--min-free", "1M"):
            crash(exe, "1", 'n\n{"x":\x1b[2J', preexec_fn=_as_nobody)  # its comm too
            records = wait_ours(state, 1, exe)
        lines = (state / "postmortem.log").read_bytes() if (state / "postmortem.log").exists() else b""
    finally:
        shutil.rmtree(where)
    assert lines.count(b"\n") == len(records) and b"\x1b" not in lines, lines
    [record] = ours(records, exe)
    assert record["outcome"] == "written" and record["exe"] == str(exe), record
    assert record["name"] == 'n\n{"x":\x1b[2J' and "\n" not in Path(record["path"]).name, record
    sidecar = Path(record["path"] + ".json")  # the crasher's argv and exe: root's only
    assert json.loads(sidecar.read_text())["postmortem"]["exe"] == str(exe)
    assert (sidecar.stat().st_uid, stat.S_IMODE(sidecar.stat().st_mode)) == (0, 0o600)


SPARSE = ("import mmap, os, signal, sys\n"  # 0x4000: MAP_NORESERVE (not in Python 3.11's mmap)
          "size = int(sys.argv[1]) << 30\n"
          "m = size and mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)\n"
          "os.kill(os.getpid(), signal.SIGSEGV)\n")


def test_a_refused_crash_of_a_huge_sparse_process_is_not_read_through(dumps: Path, tmp_path: Path) -> None:
    """On a pipe the kernel writes every hole as zeros: a process with a 16 GiB untouched mapping is a
    16 GiB stream. A refused crash (here rate-limited) read it all to drop it, so a crash loop of such
    processes kept the handlers (16 at once) and the kernel copying zeros; closing the pipe ends the
    kernel's dump at once."""
    python = Path(os.path.realpath(sys.executable))
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:1", "--min-free", "1M"):
        crash(python, "-c", SPARSE, "0")  # takes this executable's one slot, small
        wait_ours(state, 1, python)
        crash(python, "-c", SPARSE, "16")
        records = ours(wait_ours(state, 2, python), python)
    assert [r["outcome"] for r in records] == ["written", "rate-limited"], records
    assert records[1].get("drained_bytes", 0) < 1 << 30, records[1]


def test_a_crash_in_a_pid_namespace_is_the_one_dumped(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    """In a container %P is the host's pid and %p the container's: the handler (in the initial
    namespaces) must prove and read the host's, and the core's threads carry the container's."""
    require(shutil.which("unshare") is not None, "unshare is not installed")
    state = private_state(tmp_path)
    with installed(state, dumps, "--min-free", "1M"):
        done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", f"'{crasher}' 1; exit 7"],
                              capture_output=True, timeout=120)
        assert done.returncode == 7, done
        records = ours(wait_ours(state, 1, crasher), crasher)
    [record] = records
    assert record["outcome"] == "written", record
    nspids = dict(a[:1] and (a[0], a[1:]) for a in record["args"])
    assert nspids["p"] != nspids["P"] and nspids["P"] == str(record["pid"]), record["args"]
    from linuxrig import gdb

    out = gdb(str(crasher), record["path"], "info threads", "bt")
    assert f"LWP {nspids['p']}" in out and "in worker" in out, out


@pytest.mark.parametrize("planted", ["dir-link", "parent-link"])
def test_a_dump_dir_whose_parent_a_user_recreated_since_install_gets_no_core(crasher: Path, tmp_path: Path,
                                                                             planted: str) -> None:
    """DIR below a sticky world-writable directory (/tmp/x/crashes) passes install's check while root owns
    every part; once /tmp/x is gone (a reboot cleans /tmp) any user may create it again, with "crashes" a
    symlink to any root directory he likes, or be it himself a symlink to a root directory that holds a
    "crashes": the pipeline checks DIR's owner (root's), not the way there, so every crash on the machine
    was written where he pointed. The handler checks each component of DIR at each crash."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    parent = sticky / "x"
    parent.mkdir(mode=0o755)
    directory = parent / "crashes"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "etc-something"
    (victim / "crashes").mkdir(mode=0o700, parents=True)
    victim.chmod(0o755)
    state = private_state(tmp_path)
    with installed(state, directory, "--min-free", "1M"):
        directory.rmdir()
        parent.rmdir()
        if planted == "dir-link":
            parent.mkdir(mode=0o755)  # as the user would have made it
            os.chown(parent, NOBODY, NOBODY)
            directory.symlink_to(victim)
            os.lchown(directory, NOBODY, NOBODY)
        else:
            parent.symlink_to(victim)
            os.lchown(parent, NOBODY, NOBODY)
        crash(crasher, "1")
        [record] = ours(wait_ours(state, 1, crasher), crasher)
    written = [p.name for p in victim.rglob("*") if p.is_file()]
    assert written == [], written
    assert record["outcome"] == "untrusted-dir" and "uid 65534" in record["why"], record


def test_install_leaves_a_symlinked_sysctl_file_alone(dumps: Path, tmp_path: Path) -> None:
    """Debian's /etc/sysctl.d/99-sysctl.conf is a symlink to ../sysctl.conf: install renamed a file over
    the link and uninstall put back a plain copy, so the link (and the admin's later edits) were gone."""
    target = tmp_path / "sysctl.conf.real"
    target.write_bytes(b"vm.swappiness = 10\n")
    link = tmp_path / "sysctl.conf"
    link.symlink_to(target.name)
    before, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    try:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "install", "--dir", str(dumps),
                               "--state-dir", str(tmp_path / "s"), "--sysctl-file", str(link)],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert done.returncode == 2 and "symlink" in done.stderr, done.stdout + done.stderr
        assert CORE_PATTERN.read_bytes() == before and not (tmp_path / "s").exists()
    finally:
        subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "uninstall", "--force", "--state-dir",
                        str(tmp_path / "s")], capture_output=True, timeout=60, cwd="/")
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
        PIPE_LIMIT.write_bytes(limit.strip())
    assert os.readlink(link) == target.name and target.read_bytes() == b"vm.swappiness = 10\n"


def test_a_refused_crash_is_not_read_to_its_end(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    """A refusal (here rate-limited) read the kernel's whole core to drop it: a user crashing a large
    process in a loop had root's handlers (16 at once) and the kernel copy all of its memory for nothing.
    Closing the pipe ends the kernel's dump at once and lets the process go just the same."""
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:1", "--min-free", "1M"):
        crash(crasher, "1")
        wait_ours(state, 1, crasher)
        crash(crasher, "96")
        records = ours(wait_ours(state, 2, crasher), crasher)
    assert [r["outcome"] for r in records] == ["written", "rate-limited"], records
    assert records[1].get("drained_bytes", 0) < 1 << 20 and records[1]["read_bytes"] < 1 << 20, records[1]


def test_a_full_core_of_a_sparse_process_is_written(dumps: Path, tmp_path: Path) -> None:
    """A 4 GiB reservation never touched (a JVM heap, a Go arena) in a full core: the kernel's stream
    and the handler must agree on where each load's bytes are."""
    python = Path(os.path.realpath(sys.executable))
    state = private_state(tmp_path)
    with installed(state, dumps, "--kind", "full", "--min-free", "1M"):
        crash(python, "-c", SPARSE, "4")
        [record] = ours(wait_ours(state, 1, python), python)
    assert record["outcome"] == "written", record
    side = json.loads(Path(record["path"] + ".json").read_text())
    out = subprocess.run(["readelf", "-lW", record["path"]], capture_output=True, text=True, timeout=60).stdout
    memsz = [int(line.split()[5], 16) for line in out.splitlines() if line.strip().startswith("LOAD")]
    assert max(memsz) >= 4 << 30, out  # the reservation is described (this kernel stores none of its zeros)
    assert side["postmortem"]["kernel_core_bytes"] < 1 << 30, side["postmortem"]  # cost: the data present


def test_sixteen_crashes_at_once_count_exactly(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    """A crash storm: 16 handlers (core_pipe_limit) at once on the rate book. Exactly N are written, and
    every refusal is the budget's, never the book's lock given up on (which would lose other users' dumps
    to one user's storm)."""
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:3", "--min-free", "1M"):
        procs = [subprocess.Popen([str(crasher), "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  preexec_fn=_as_nobody) for _ in range(16)]
        assert [p.wait(timeout=300) for p in procs] == [-11] * 16
        records = ours(wait_ours(state, 16, crasher), crasher)
    outcomes = [r["outcome"] for r in records]
    assert outcomes.count("written") == 3 and outcomes.count("rate-limited") == 13, records
    assert all("--max-per" in r["why"] for r in records if r["outcome"] == "rate-limited"), records


def test_a_crash_with_60000_long_named_mappings_costs_root_little_memory(dumps: Path, tmp_path: Path) -> None:
    """smaps is the crasher's to make large: 60000 mappings of a file with a 3.8 KB path are ~270 MB of
    smaps. The handler read it whole (up to 256 MiB), decoded it and parsed it into objects, before the
    rate limit even: 16 handlers at once were gigabytes of root's memory at one user's command."""
    from linuxrig import build_source

    where = Path(tempfile.mkdtemp(prefix="dumplib-maps-", dir="/tmp"))
    try:
        where.chmod(0o755)
        exe = build_source(where, HERE / "many_maps.c")
        deep = where.joinpath(*["d" * 250] * 15)
        deep.mkdir(parents=True)
        for parent in [deep, *deep.parents]:
            if parent == where:
                break
            parent.chmod(0o755)
        (deep / "f").write_bytes(b"x" * 4096)
        (deep / "f").chmod(0o644)
        state = private_state(tmp_path)
        with installed(state, dumps, "--min-free", "1M"):
            done = subprocess.run([str(exe), "60000", str(deep / "f")], capture_output=True, timeout=300,
                                  preexec_fn=_as_nobody)
            assert done.returncode == -11, done
            [record] = ours(wait_ours(state, 1, exe), exe)
    finally:
        shutil.rmtree(where)
    # The kernel leaves out NT_FILE past core_file_note_size_limit, so this core fails verification: the
    # crasher loses only its own dump.
    assert record["outcome"] in ("written", "failed"), record
    assert record["max_rss_kib"] < 200 << 10, record  # KiB: under 200 MiB (it was 1.1 GiB)


def test_install_refuses_a_state_directory_under_a_sticky_directory(dumps: Path, tmp_path: Path) -> None:
    """The kernel runs STATE/handler as root at every crash, and core_pattern outlives a reboot (the
    sysctl.d file): a state directory under /tmp (sticky, emptied by a reboot or a cleaner) could be made
    again by anyone, with their own handler in it. Refused before anything is made or registered."""
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    state = tmp_path / "deep" / "state"  # under /tmp, sticky, however private tmp_path itself is
    before, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    try:
        done = run_cli("postmortem", "install", "--dir", str(dumps), "--state-dir", str(state),
                       "--sysctl-file", str(tmp_path / "sysctl.conf"), "--json", timeout=60)
    finally:
        if CORE_PATTERN.read_bytes() != before:
            run_cli("postmortem", "uninstall", "--state-dir", str(state), "--force", timeout=60)
            CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
            PIPE_LIMIT.write_bytes(limit.strip())
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    sticky = next(p for p in [tmp_path, *tmp_path.parents] if p.stat().st_mode & 0o1000)
    assert f"under {sticky}" in error["message"] and "sticky" in error["message"], error
    assert CORE_PATTERN.read_bytes() == before
    assert not (tmp_path / "deep").exists() and not (tmp_path / "sysctl.conf").exists()


def test_a_package_under_a_sticky_directory_is_named_by_install_and_status(dumps: Path, tmp_path: Path) -> None:
    """dumplib's package under /tmp (root's now, every file): the handler imports it as root at every
    crash, and a reboot or a cleaner may empty /tmp for anyone to fill. Not refused (a checkout there is
    how tests run), but install and every later status say so, naming it."""
    root = tmp_path / "pkgroot"
    root.mkdir(mode=0o755)
    shutil.copytree(REPO / "dumplib", root / "dumplib", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=_cli_path(tmp_path, root))
    (tmp_path / "dumplib_cli").unlink()
    (tmp_path / "dumplib_cli").symlink_to(REPO / "cli")
    state = private_state(tmp_path)
    before, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    try:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "install", "--dir", str(dumps),
                               "--state-dir", str(state), "--sysctl-file", str(state.parent / "sysctl.conf"),
                               "--json"], capture_output=True, text=True, timeout=60, env=env, cwd="/")
        assert done.returncode == 0, done.stdout + done.stderr
        later = subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "status", "--state-dir",
                                str(state)], capture_output=True, text=True, timeout=60, env=env, cwd="/")
    finally:
        subprocess.run([sys.executable, "-m", "dumplib_cli", "postmortem", "uninstall", "--force", "--state-dir",
                        str(state)], capture_output=True, timeout=60, env=env, cwd="/")
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
        PIPE_LIMIT.write_bytes(limit.strip())
    st = json.loads(done.stdout)
    assert str(root) in st["config"]["transient_paths"], st["config"]
    assert str(root) in st["warning"] and "sticky" in st["warning"], st
    assert f"warning: " in later.stdout and str(root) in later.stdout, later.stdout
