"""Every file dumplib creates or deletes, in directories other users can write to, as root.

Each test plants what an attacker or a crash leaves (symlinks, decoys, other users' files, live
temporaries of another dumplib) and checks what `stat` and the files' bytes say afterwards.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import dumplib
from dumplib._switch import current
from dumplib import placement as output_module
from dumplib import outputs as _outputs
from dumplib.placement import is_temp_name
from helpers import IN_CI, leftovers, require, tmpfs
from linuxrig import NOBODY, DirectoryEvents, dumplib_cli, run_target



@pytest.fixture()
def shared_dir(tmp_path: Path) -> Path:
    """A /tmp-like directory: world-writable with the sticky bit."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


@pytest.fixture()
def victim(tmp_path: Path) -> Iterator[Tuple[Path, Dict[str, object]]]:
    """A file outside the dump directory that a planted symlink points at; must never change."""
    v = tmp_path / "victim.txt"
    v.write_bytes(b"precious\n")
    os.chmod(v, 0o644)
    yield v, _fingerprint(v)


def _fingerprint(path: Path) -> Dict[str, object]:
    st = os.lstat(path)
    return {"bytes": path.read_bytes(), "mode": st.st_mode, "mtime": st.st_mtime_ns, "uid": st.st_uid, "ino": st.st_ino}


def _mode(path: "os.PathLike[str] | str") -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


KINDS = ["mini", "miniplus", "full", "triage"]
CODECS = [None, "zstd", "gzip"]


@pytest.mark.parametrize("codec", CODECS)
def test_dump_and_sidecar_are_owner_only_for_every_kind_with_retention(ctarget, shared_dir, codec):
    os.umask(0o022)  # what a root shell has: plain open() would give 0644
    for kind in KINDS:
        r = dumplib.create_dump(ctarget.pid, shared_dir, kind, compress=codec, keep=2)
        assert _mode(r.path) == 0o600, (kind, oct(_mode(r.path)))
        assert r.sidecar and _mode(r.sidecar) == 0o600, (kind, oct(_mode(r.sidecar)))
        assert os.lstat(r.path).st_uid == os.geteuid() and stat.S_ISREG(os.lstat(r.sidecar).st_mode)
    names = sorted(p.name for p in shared_dir.iterdir())
    assert len(names) == 4 and not leftovers(shared_dir), names  # keep=2: two dumps and their sidecars


@pytest.mark.parametrize("codec", CODECS)
def test_symlinks_planted_at_the_dump_and_sidecar_names_are_never_followed(ctarget, shared_dir, victim, codec):
    target, before = victim
    suffix = {None: "", "zstd": ".zst", "gzip": ".gz"}[codec]
    for kind in KINDS:
        dump = shared_dir / f"{kind}.core{suffix}"
        for planted in (dump, Path(str(dump) + ".json")):
            planted.symlink_to(target)
            for overwrite in (False, True):
                with pytest.raises(dumplib.InvalidDumpPath, match="not a regular file"):
                    dumplib.create_dump(ctarget.pid, dump, kind, compress=codec, overwrite=overwrite, keep=1)
            assert _fingerprint(target) == before
            planted.unlink()
    assert not leftovers(shared_dir) and not list(shared_dir.iterdir())


def test_a_symlink_at_the_temporary_name_is_never_followed(ctarget, shared_dir, victim, monkeypatch):
    """Temporary names are random, but if one were guessed: creation is exclusive and never follows."""
    target, before = victim
    planted = shared_dir / ".dumplib-0123456789abcdef.tmp"
    planted.symlink_to(target)
    monkeypatch.setattr(output_module, "temp_path", lambda directory: str(planted))
    monkeypatch.setattr(_outputs, "temp_path", lambda directory: str(planted))
    for codec in CODECS:
        with pytest.raises(dumplib.DumpError):
            dumplib.create_dump(ctarget.pid, shared_dir / "x.core", "mini", compress=codec)
        assert _fingerprint(target) == before and os.path.islink(planted)
    assert sorted(p.name for p in shared_dir.iterdir()) == [planted.name]


@pytest.mark.parametrize("which", [1, 2], ids=["dump-temporary", "sidecar-temporary"])
@pytest.mark.parametrize("codec", CODECS)
def test_a_regular_file_planted_at_the_temporary_name_is_refused_and_untouched(ctarget, shared_dir, codec, which,
                                                                               monkeypatch):
    """The temporary's name comes from os.urandom: make the *which*-th name a known one, plant another
    user's regular file there first (as a lucky guess or a race would), and the creation must fail on it
    (O_EXCL), leaving its bytes, owner and inode as they were; symlinks alone would not show that."""
    real_urandom = os.urandom
    draws = []

    def chosen(n: int) -> bytes:
        if n != 8:
            return real_urandom(n)
        draws.append(n)
        return bytes.fromhex("00000000000000aa") if len(draws) == which else real_urandom(n)

    planted = shared_dir / ".dumplib-00000000000000aa.tmp"
    planted.write_bytes(b"someone else's file\n")
    if os.geteuid() == 0:
        os.chown(planted, NOBODY, NOBODY)
    os.chmod(planted, 0o644)
    before = _fingerprint(planted)
    monkeypatch.setattr(os, "urandom", chosen)
    with pytest.raises(dumplib.DumpError):
        dumplib.create_dump(ctarget.pid, shared_dir / "x.core", "mini", compress=codec)
    monkeypatch.undo()
    assert len(draws) >= which  # the planted name was the one drawn
    assert _fingerprint(planted) == before and _mode(planted) == 0o644
    assert sorted(p.name for p in shared_dir.iterdir()) == [planted.name]
    ctarget.assert_running_untraced()


@pytest.mark.parametrize("codec", CODECS)
def test_the_dump_and_its_sidecar_appear_together_and_only_once_both_are_written(ctarget, outdir, codec):
    """Watched with inotify during a real dump: neither final name appears while anything is still being
    written (the dump's or the sidecar's temporary), and once one appears the other follows with no write
    in between; nothing else shows."""
    events = DirectoryEvents(outdir)
    try:
        r = dumplib.create_dump(ctarget.pid, outdir / "app.core", "full", compress=codec)
        seen = events.read()
    finally:
        events.close()
    finals = {os.path.basename(r.path), os.path.basename(r.sidecar)}
    appear = [i for i, (what, name) in enumerate(seen) if name in finals and what in ("create", "moved_to")]
    assert {seen[i][1] for i in appear} == finals and len(appear) == 2, seen
    writes = [i for i, (what, name) in enumerate(seen) if what in ("create", "modify", "close_write")
              and is_temp_name(name)]
    assert len({seen[i][1] for i in writes}) == 2, seen  # the dump's temporary and the sidecar's
    assert max(writes) < appear[0], seen  # nothing written once a final name shows
    between = seen[appear[0] + 1: appear[1]]
    assert all(what in ("moved_from", "delete") and is_temp_name(name) for what, name in between), seen
    assert not [n for w, n in seen if n not in finals and not is_temp_name(n)], seen
    assert sorted(p.name for p in outdir.iterdir()) == sorted(finals)


def test_an_existing_sidecar_is_refused_like_an_existing_dump(ctarget, outdir):
    side = outdir / "app.core.json"
    side.write_text('{"mine": true}')
    with pytest.raises(dumplib.DumpExists) as err:
        dumplib.create_dump(ctarget.pid, outdir / "app.core", "mini")
    assert err.value.path == str(side) and side.read_text() == '{"mine": true}'
    assert sorted(p.name for p in outdir.iterdir()) == ["app.core.json"]
    done = dumplib_cli("dump", str(ctarget.pid), str(outdir / "app.core"), "-k", "mini")
    assert done.returncode == 6 and "app.core.json" in done.stderr
    r = dumplib.create_dump(ctarget.pid, outdir / "app.core", "mini", overwrite=True)
    assert json.loads(side.read_text())["tool"] == "dumplib" and r.sidecar == str(side)
    r2 = dumplib.create_dump(ctarget.pid, outdir / "other.core", "mini", sidecar=False)
    assert r2.sidecar is None  # without a sidecar its name is not looked at


def test_default_names_step_over_a_taken_sidecar_name(ctarget, outdir):
    first = dumplib.create_dump(ctarget.pid, outdir, "triage")
    os.unlink(first.path)  # the dump is gone but its sidecar name is still taken
    second = dumplib.create_dump(ctarget.pid, outdir, "triage")
    assert second.path != first.path and json.loads(open(first.sidecar).read())["dump"] == os.path.basename(first.path)


def _as_nobody(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chown(path, NOBODY, NOBODY)


def test_retention_never_deletes_what_dumplib_did_not_write(ctarget, shared_dir, victim):
    if os.geteuid() != 0:
        require(not IN_CI, "planting another user's files needs root")
        pytest.skip("NOT RUN: needs root to plant another user's files")
    target, before = victim
    old = "2000-01-01T00:00:00.000"

    def claim(name: str, size: int, sha: str = "0" * 64) -> Dict[str, object]:
        return {"tool": "dumplib", "dump": name, "finished_at": old, "size": size, "sha256": sha}

    # Another user's file with a sidecar (theirs) claiming it is a dumplib dump.
    _as_nobody(shared_dir / "theirs.core", b"their data")
    _as_nobody(shared_dir / "theirs.core.json", json.dumps(claim("theirs.core", 10)).encode())
    # Another user's file with a root-owned sidecar whose size matches (a confused admin's copy).
    _as_nobody(shared_dir / "theirs2.core", b"their data")
    (shared_dir / "theirs2.core.json").write_text(json.dumps(claim("theirs2.core", 10)))
    # Root's own file whose sidecar's sha256 does not match: not a dump dumplib wrote.
    (shared_dir / "decoy.core").write_bytes(b"root's notes")
    (shared_dir / "decoy.core.json").write_text(json.dumps(claim("decoy.core", 12)))
    # A symlink to a file outside, dressed as a dump.
    (shared_dir / "link.core").symlink_to(target)
    (shared_dir / "link.core.json").write_text(json.dumps(claim("link.core", len(before["bytes"]))))  # type: ignore[arg-type]
    planted = {p.name: p.read_bytes() for p in shared_dir.iterdir() if not p.is_symlink()}

    older = dumplib.create_dump(ctarget.pid, shared_dir / "older.core", "triage")
    newest = dumplib.create_dump(ctarget.pid, shared_dir / "newest.core", "triage", keep=1)
    assert not os.path.exists(older.path) and not os.path.exists(older.sidecar)  # ours: removed
    assert newest.warnings and any("older.core" in w for w in newest.warnings)
    for name, data in planted.items():
        assert (shared_dir / name).read_bytes() == data, name
    assert os.path.islink(shared_dir / "link.core") and _fingerprint(target) == before


def test_keep_and_max_total_below_one_are_usage_errors_that_delete_nothing(ctarget, outdir):
    first = dumplib.create_dump(ctarget.pid, outdir, "triage")
    for keep in ("-1", "0"):
        done = dumplib_cli("dump", str(ctarget.pid), str(outdir), "-k", "triage", "--keep", keep)
        assert done.returncode == 2, done.stderr
        assert "keep" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(dumplib.InvalidArgument):
        dumplib.create_dump(ctarget.pid, outdir, "triage", max_total=0)
    with pytest.raises(ValueError):
        dumplib.create_dump(ctarget.pid, outdir, "triage", keep=-1)
    assert sorted(p.name for p in outdir.iterdir()) == sorted([os.path.basename(first.path), os.path.basename(first.sidecar)])


@contextlib.contextmanager
def _live_dumplib_in_another_pid_namespace(directory: Path) -> Iterator[Path]:
    """A process in a new pid namespace that holds *directory* as a writing dumplib does, with its temporary."""
    require(subprocess.run(["unshare", "--version"], capture_output=True).returncode == 0, "unshare is missing")
    temp = directory / ".dumplib-00000000000000ff.tmp"
    code = (
        "import sys, time, os\n"
        "from dumplib.placement import writing_in\n"
        "from dumplib._switch import current\n"
        f"with writing_in([{str(directory)!r}], current().host()):\n"
        f"    open({str(temp)!r}, 'wb').write(b'live partial dump')\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", code], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        inner_pid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert inner_pid == "1", f"not in a new pid namespace (pid {inner_pid!r})"
        yield temp
    finally:
        proc.kill()
        proc.wait()
        _until_unheld(directory)


def _until_unheld(directory: Path) -> None:
    """Until the killed process in the namespace (unshare's child, killed with it) has really let go."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                assert time.monotonic() < deadline, "the killed process still holds the directory"
                time.sleep(0.01)
    finally:
        os.close(fd)


def _age(*paths: Path) -> None:
    """Untouched for a minute: past placement.STALE_AFTER, so only the locks decide."""
    then = time.time() - 60
    for p in paths:
        os.utime(p, (then, then))


_HOLDER = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY);"
           " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()")
_KEPT_FROM_ITS_HOLD = (
    "import os, sys\n"
    "from dumplib._switch import current\n"
    "from dumplib.placement import temp_path, writing_in\n"
    "host = current().host()\n"
    "with writing_in([sys.argv[1]], host) as told:\n"
    "    temp = temp_path(sys.argv[1])\n"
    "    fd = host.open_private(temp)\n"
    "    os.write(fd, b'live partial dump')\n"
    "    os.close(fd)  # closed as the writers close theirs: the file's lock must outlive it\n"
    "    print(temp, *told, sep='\\n', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def test_a_live_temporary_of_a_dumplib_kept_from_its_hold_is_never_taken_for_stale(ctarget, shared_dir):
    """Anyone who can open the directory can hold its flock exclusively: a dumplib then writes on unheld
    (after HOLD_PATIENCE), and the next dumplib that gets the directory alone must still see that
    temporary alive, by the lock its writer holds on the file itself."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(shared_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    writer = None
    try:
        assert holder.stdout.readline() == "held\n"  # type: ignore[union-attr]
        writer = subprocess.Popen([sys.executable, "-c", _KEPT_FROM_ITS_HOLD, str(shared_dir)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env)
        temp = Path(writer.stdout.readline().strip())  # type: ignore[union-attr]
        assert "went on without its hold" in writer.stdout.readline()  # type: ignore[union-attr]
        holder.communicate("\n", timeout=30)  # the directory is free: the next dumplib gets it alone
        _age(temp)
        r = dumplib.create_dump(ctarget.pid, shared_dir, "triage")
        assert temp.read_bytes() == b"live partial dump"
        assert not any("stale" in w for w in r.warnings), r.warnings
        writer.communicate("\n", timeout=30)  # it ends without removing its temporary, as a killed one would
        assert temp.exists()
        os.utime(temp)  # unlocked but touched just now: maybe a writer yet to take its lock (STALE_AFTER)
        dumplib.create_dump(ctarget.pid, shared_dir, "triage")
        assert temp.exists()
        _age(temp)
        r = dumplib.create_dump(ctarget.pid, shared_dir, "triage")
        assert not temp.exists() and sum("stale" in w for w in r.warnings) == 1, r.warnings
    finally:
        for proc in (holder, writer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("codec", CODECS)
def test_the_locks_on_temporaries_end_with_the_dump(ctarget, outdir, codec):
    """Each temporary's flock is held on a descriptor of its own: once the dump is placed, none is left open."""
    from dumplib._linux import host as linux_host

    def open_files() -> List[str]:
        return sorted(os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                      if os.path.exists(f"/proc/self/fd/{n}"))

    dumplib.create_dump(ctarget.pid, outdir / "first.core", "triage", compress=codec)  # imports, caches
    gc.collect()  # earlier tests' unreachable pipes closed now, not by a collection during the dump
    before = open_files()
    r = dumplib.create_dump(ctarget.pid, outdir, "triage", compress=codec)
    assert linux_host._live_files == {}
    assert open_files() == before, r.path


def test_a_new_temporarys_lock_waits_out_a_cleaner_that_looked_at_it_first(outdir):
    """A cleaner may take a new file's lock an instant before its writer does (to see whether it is free):
    the writer waits that instant out rather than writing on unlocked."""
    import fcntl
    import threading

    from dumplib._linux import host as linux_host

    path = str(outdir / ".dumplib-00000000000000cc.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    cleaner = os.open(path, os.O_RDONLY)
    fcntl.flock(cleaner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.1, os.close, (cleaner,)).start()
    try:
        linux_host._lock_while_alive(path, fd)
        assert path in linux_host._live_files
        assert current().host().temp_in_use(path, os.lstat(path)) is True
    finally:
        os.close(fd)
        os.unlink(path)
        linux_host._let_go_of_gone()
    assert path not in linux_host._live_files


def test_stale_temporaries_are_removed_only_when_no_live_dumplib_holds_them(ctarget, shared_dir):
    if os.geteuid() != 0:
        require(not IN_CI, "a new pid namespace and another user's files need root")
        pytest.skip("NOT RUN: needs root")
    foreign = shared_dir / ".dumplib-0000000000000002.tmp"
    _as_nobody(foreign, b"another user's")
    lookalike = shared_dir / ".dumplib-notes.txt"
    lookalike.write_bytes(b"not a temporary")
    with _live_dumplib_in_another_pid_namespace(shared_dir) as live:
        dead = shared_dir / ".dumplib-0000000000000001.tmp"
        dead.write_bytes(b"left by a killed dumplib")
        _age(dead, live)
        r = dumplib.create_dump(ctarget.pid, shared_dir, "triage")
        # A live dumplib elsewhere (its pid means nothing here) is writing: nothing is stale yet.
        assert dead.exists() and live.read_bytes() == b"live partial dump"
        assert not any("stale" in w for w in r.warnings)
    # It is gone now (killed): the next run removes dead temporaries of ours, and only those.
    r = dumplib.create_dump(ctarget.pid, shared_dir, "triage")
    assert not dead.exists() and not live.exists()
    assert foreign.read_bytes() == b"another user's" and lookalike.exists()
    assert sum("stale" in w for w in r.warnings) == 2


def test_temporary_names_stay_short_for_the_longest_legal_name(ctarget, outdir):
    name = "d" * 250 + ".core"  # 255 bytes: NAME_MAX
    r = dumplib.create_dump(ctarget.pid, outdir / name, "triage", sidecar=False)
    assert os.path.basename(r.path) == name and not leftovers(outdir)


def test_a_name_too_long_for_the_directory_is_refused_before_the_target_is_stopped(target_exe, outdir):
    """Found only at placement, a name over NAME_MAX (the sidecar's five bytes longer than the dump's, or
    a {name} expanded) cost a whole stop and write; now nothing is created and the target never stops."""
    with run_target([str(target_exe), "--heap", "64"]) as t:
        events = DirectoryEvents(outdir)
        before = t.waiting_switches()
        for path, sidecar, said in [
            ("d" * 250 + ".core", True, "its sidecar's name is 260 bytes"),  # a legal 255-byte dump name
            ("d" * 251 + ".core", False, "the dump's name is 256 bytes"),
            ("d" * 245 + "{name}.core", False, r"the dump's name is \d+ bytes once"),  # {name}: 6 or more
        ]:
            with pytest.raises(dumplib.InvalidDumpPath, match=f"{said}.* allows at most 255; nothing was dumped"):
                dumplib.create_dump(t.pid, str(outdir / path), "full", sidecar=sidecar, min_free=0)
        assert t.waiting_switches() == before  # never woken: no refusal stopped the target
        t.assert_running_untraced()
        seen = events.read()
        events.close()
        assert seen == [] and list(outdir.iterdir()) == []


def _set_comm(name: bytes) -> str:
    return (f"import ctypes, sys; ctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0);"
            " print('ready', flush=True); sys.stdin.read()")


@contextlib.contextmanager
def _named(name: bytes) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", _set_comm(name)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"  # type: ignore[union-attr]
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("comm", [b"..", b".", b"../../x", b".hidden", b"a/b\\c", b"\x1b[31mred", b"\xff\xfe"])
def test_a_process_name_never_moves_or_hides_the_dump(tmp_path, comm):
    base = tmp_path / "d"
    (base / "sub").mkdir(parents=True)
    with _named(comm) as proc:
        with open(f"/proc/{proc.pid}/comm", "rb") as f:
            assert f.read().rstrip(b"\n") == comm  # the kernel really holds this name
        r = dumplib.create_dump(proc.pid, str(base / "sub") + "/{name}-x.core", "triage", sidecar=False)
        assert os.path.dirname(r.path) == str(base / "sub")
        shown = os.path.basename(r.path)
        assert not shown.startswith(".") and all(ch.isprintable() for ch in shown), shown
        # A template whose directory comes from {name}: the name is one component, never "." or "..".
        with pytest.raises(dumplib.InvalidDumpPath):
            dumplib.create_dump(proc.pid, str(base / "sub") + "/{name}/x.core", "triage", sidecar=False)
    assert sorted(p.name for p in base.rglob("*")) == sorted(["sub", shown])


def test_a_long_argv0_gives_a_name_of_at_most_64_characters(target_exe, tmp_path):
    """{name} is the process's own choice: argv[0]'s base name when comm (15 bytes) is its start. A 300-character
    one (longer than a file name may be) is cut to the README's 64 characters, in the default name and in a template."""
    link = tmp_path / "dlnamecap-target"
    link.symlink_to(target_exe)  # comm: the first 15 bytes of the name the program was run by
    argv0 = str(link) + "Y" * (300 - len(link.name))
    name = os.path.basename(argv0)
    assert len(name) == 300
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([argv0], executable=str(link), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["pid"] == proc.pid
        assert open(f"/proc/{proc.pid}/cmdline").read().split("\0")[0] == argv0
        default = dumplib.create_dump(proc.pid, out, "triage")
        assert os.path.basename(default.path).startswith(f"{name[:64]}_{proc.pid}_"), default.path
        templated = dumplib.create_dump(proc.pid, str(out) + "/{name}.core", "triage")
        assert os.path.basename(templated.path) == name[:64] + ".core"
        assert templated.sidecar == templated.path + ".json" and os.path.exists(templated.sidecar)
        done = dumplib_cli("dump", str(proc.pid), str(out) + "/cli-{name}.core", "-k", "triage", "--json")
        assert done.returncode == 0, done.stderr
        assert os.path.basename(json.loads(done.stdout)["path"]) == f"cli-{name[:64]}.core"
    finally:
        proc.kill()
        proc.wait()
    assert not leftovers(out)


def test_a_full_disk_while_writing_the_sidecar_leaves_nothing(ctarget, tmp_path):
    # One inode for the volume's root and one for the dump: the sidecar's temporary cannot be created.
    with tmpfs(tmp_path / "vol", "64M", options="nr_inodes=2") as vol:
        done = dumplib_cli("dump", str(ctarget.pid), str(vol / "x.core"), "-k", "triage", "--min-free", "0", "--json")
        assert done.returncode == 8, done.stderr
        err = json.loads(done.stdout)["error"]
        assert err["type"] == "DumpFailed" and err["reason"] == "disk-full", err
        # Named by the sidecar asked for, and what became of the dump; not by the temporary.
        assert err["message"].startswith(f"the disk filled up while writing {vol}/x.core.json; nothing was kept"), err
        assert ".dumplib-" not in err["message"], err
        assert list(vol.iterdir()) == []
        ctarget.assert_running_untraced()


def test_stdout_redirected_to_a_file_gets_the_guard_and_an_owner_only_mode(target_exe, tmp_path):
    with tmpfs(tmp_path / "vol", "64M") as vol, run_target([str(target_exe), "--heap", "100"]) as t:
        dest = vol / "redirected.core"
        old = os.umask(0o022)
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # what `> file` does
        finally:
            os.umask(old)
        with os.fdopen(fd, "wb") as out:
            refused = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "full",
                                      "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert refused.returncode == 13, refused.stderr
        assert "redirected" in refused.stderr and dest.stat().st_size == 0
        with open(dest, "ab") as out:
            cut = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "full",
                                  "--no-space-check"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert cut.returncode == 8, cut.stderr
        assert "holds its 0 bytes from before again" in cut.stderr and dest.stat().st_size == 0, cut.stderr
        assert _mode(dest) == 0o600
        t.assert_running_untraced()
        with open(dest, "wb") as out:
            ok = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "triage",
                                 "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert ok.returncode == 0, ok.stderr
        assert dest.read_bytes()[:4] == b"\x7fELF"


def _need_root() -> None:
    if os.geteuid() != 0:
        require(not IN_CI, "planting another user's files needs root")
        pytest.skip("NOT RUN: needs root to plant another user's files")


def test_a_symlink_or_directory_planted_at_the_dump_name_never_redirects_the_dump(ctarget, shared_dir, tmp_path):
    _need_root()
    victim_dir = tmp_path / "victimdir"
    victim_dir.mkdir(mode=0o700)
    older = dumplib.create_dump(ctarget.pid, victim_dir / "older.core", "triage")
    link = shared_dir / "app.core"
    link.symlink_to(victim_dir)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(dumplib.InvalidDumpPath, match="symlink owned by uid 65534"):
        dumplib.create_dump(ctarget.pid, link, "triage", keep=1)
    link.unlink()
    planted = shared_dir / "app.core"
    planted.mkdir(mode=0o777)
    os.chown(planted, NOBODY, NOBODY)
    os.chmod(planted, 0o777)
    with pytest.raises(dumplib.InvalidDumpPath, match="directory owned by uid 65534"):
        dumplib.create_dump(ctarget.pid, planted, "triage", keep=1)
    assert os.path.exists(older.path) and sorted(os.listdir(victim_dir)) == ["older.core", "older.core.json"]
    assert list(planted.iterdir()) == []


def test_a_name_token_never_leads_out_of_the_directory_the_template_names(tmp_path):
    _need_root()
    shared = tmp_path / "sh2"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    evil = shared / "evil"
    evil.symlink_to(secret)
    os.chown(evil, NOBODY, NOBODY, follow_symlinks=False)
    with _named(b"evil") as proc:
        with pytest.raises(dumplib.InvalidDumpPath):
            dumplib.create_dump(proc.pid, str(shared) + "/{name}/app.core", "triage")
    # The same link made by root itself (trusted) still may not take a token's expansion elsewhere.
    evil.unlink()
    evil.symlink_to(secret)
    with _named(b"evil") as proc:
        with pytest.raises(dumplib.InvalidDumpPath, match="outside"):
            dumplib.create_dump(proc.pid, str(shared) + "/{name}/app.core", "triage")
    assert list(secret.iterdir()) == []


def test_directories_other_users_control_are_refused(ctarget, tmp_path):
    _need_root()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(dumplib.InvalidDumpPath, match="belongs to uid 65534"):
        dumplib.create_dump(ctarget.pid, theirs, "triage")
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o775)
    with pytest.raises(dumplib.InvalidDumpPath, match="no sticky bit"):
        dumplib.create_dump(ctarget.pid, group, "triage")
    os.chmod(group, 0o1775)
    assert dumplib.create_dump(ctarget.pid, group, "triage").path.startswith(str(group))
    assert list(theirs.iterdir()) == []


def test_a_lock_held_forever_by_someone_else_never_hangs_dumplib(ctarget, shared_dir):
    import fcntl

    fd = os.open(shared_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as any user who can open the directory could
    try:
        started = time.monotonic()
        done = dumplib_cli("dump", str(ctarget.pid), str(shared_dir), "-k", "triage", timeout=60)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 30
        assert "went on without its hold" in done.stderr
    finally:
        os.close(fd)


def test_placing_dump_and_sidecar_is_all_or_nothing_and_restores_what_overwrite_replaced(tmp_path):
    from dumplib.placement import finalize_all

    (tmp_path / "x.core").write_bytes(b"old dump")
    (tmp_path / "t1").write_bytes(b"new dump")
    (tmp_path / "t2").write_bytes(b"new sidecar")
    (tmp_path / "x.core.json").mkdir()  # planted between the check and the placing
    # Named by the file asked for, not by the temporary the failing call named first.
    said = (f"could not put {tmp_path}/x.core and {tmp_path}/x.core.json in place: {tmp_path}/x.core.json: Is a"
            f" directory (moving its temporary {tmp_path}/t2 there)")
    with pytest.raises(dumplib.DumpFailed, match=re.escape(said)):
        finalize_all([(str(tmp_path / "t1"), str(tmp_path / "x.core")),
                      (str(tmp_path / "t2"), str(tmp_path / "x.core.json"))], overwrite=True, host=current().host())
    assert (tmp_path / "x.core").read_bytes() == b"old dump"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("t")) == ["x.core", "x.core.json"]
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]
    (tmp_path / "t1").write_bytes(b"new dump")
    (tmp_path / "y.core.json").write_bytes(b"someone's")
    with pytest.raises(dumplib.DumpExists):
        finalize_all([(str(tmp_path / "t1"), str(tmp_path / "y.core")),
                      (str(tmp_path / "t2"), str(tmp_path / "y.core.json"))], overwrite=False, host=current().host())
    assert not (tmp_path / "y.core").exists() and (tmp_path / "y.core.json").read_bytes() == b"someone's"


def test_retention_spares_hash_matching_copies_that_are_not_ours(ctarget, outdir, tmp_path):
    _need_root()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = dumplib.create_dump(ctarget.pid, elsewhere / "real.core", "triage")
    side = json.loads(open(real.sidecar).read())
    # Another user's exact copy, with a sidecar that matches it byte for byte.
    copy = outdir / "alice.core"
    copy.write_bytes(open(real.path, "rb").read())
    os.chown(copy, NOBODY, NOBODY)
    (outdir / "alice.core.json").write_text(json.dumps(dict(side, dump="alice.core", finished_at="2000")))
    # A link to a real dump of ours, with a matching sidecar.
    (outdir / "link.core").symlink_to(real.path)
    (outdir / "link.core.json").write_text(json.dumps(dict(side, dump="link.core", finished_at="2000")))
    dumplib.create_dump(ctarget.pid, outdir / "a.core", "triage")
    newest = dumplib.create_dump(ctarget.pid, outdir / "b.core", "triage", keep=1)
    assert copy.exists() and os.path.islink(outdir / "link.core") and os.path.exists(real.path)
    assert not (outdir / "a.core").exists() and any("a.core" in w for w in newest.warnings)


def test_a_symlink_at_the_sidecars_temporary_name_is_never_followed(ctarget, shared_dir, victim, monkeypatch):
    target, before = victim
    planted = shared_dir / ".dumplib-00000000000000aa.tmp"
    planted.symlink_to(target)
    real_temp_path = output_module.temp_path
    calls = []

    def second_is_planted(directory: str) -> str:
        calls.append(directory)
        return str(planted) if len(calls) == 2 else real_temp_path(directory)

    monkeypatch.setattr(output_module, "temp_path", second_is_planted)
    monkeypatch.setattr(_outputs, "temp_path", second_is_planted)
    with pytest.raises(dumplib.DumpError):
        dumplib.create_dump(ctarget.pid, shared_dir / "x.core", "mini")
    assert len(calls) == 2 and _fingerprint(target) == before and os.path.islink(planted)
    assert sorted(p.name for p in shared_dir.iterdir()) == [planted.name]


def test_a_live_dump_keeps_its_temporary_while_another_dumplib_cleans_the_directory(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "1024"]) as big:
        slow = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(big.pid), str(outdir / "big.core"),
                                 "-k", "full", "--min-free", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not leftovers(outdir):
            time.sleep(0.005)
        assert leftovers(outdir), "the slow dump never started"
        with run_target([str(target_exe)]) as small:
            r = dumplib.create_dump(small.pid, outdir / "small.core", "triage")
        assert not any("stale" in w for w in r.warnings)
        out, err = slow.communicate(timeout=120)
        assert slow.returncode == 0, err
        assert os.path.getsize(outdir / "big.core") > (1 << 30)


def test_an_existing_sidecar_is_refused_before_the_target_is_stopped(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "64"]) as t:
        (outdir / "app.core.json").write_text("{}")
        before = t.waiting_switches()
        with pytest.raises(dumplib.DumpExists):
            dumplib.create_dump(t.pid, outdir / "app.core", "full", min_free=0)
        assert t.waiting_switches() == before  # never woken: refused before the target was stopped
        t.assert_running_untraced()


def test_stdout_appended_to_a_file_keeps_what_it_held(target_exe, tmp_path):
    with tmpfs(tmp_path / "vol", "64M") as vol, run_target([str(target_exe), "--heap", "100"]) as t:
        log = vol / "app.log"
        log.write_bytes(b"earlier lines\n")
        os.chmod(log, 0o600)
        with open(log, "ab") as out:
            cut = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "full",
                                  "--no-space-check"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert cut.returncode == 8 and log.read_bytes() == b"earlier lines\n", cut.stderr
        assert "holds its 14 bytes from before again" in cut.stderr
        with open(log, "ab") as out:
            ok = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "triage",
                                 "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert ok.returncode == 0, ok.stderr
        data = log.read_bytes()
        assert data.startswith(b"earlier lines\n\x7fELF")
        # 1<> (read-write at offset 0) over content would mix the dump with it: refused.
        with open(log, "r+b") as out:
            mixed = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "triage",
                                    "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert mixed.returncode == 7 and log.read_bytes() == data, mixed.stderr


def test_stdout_appended_to_by_the_shell_starts_the_dump_at_the_end(target_exe, tmp_path):
    """`>>` opens with O_APPEND at offset 0 (sh does not seek): the position says nothing, the flag says where
    the dump goes; without it, what the file held would be taken for bytes the dump must not be mixed with."""
    log = tmp_path / "app.log"
    log.write_bytes(b"earlier lines\n")
    os.chmod(log, 0o600)
    with run_target([str(target_exe)]) as t:
        done = subprocess.run(["sh", "-c", f'"$0" -m dumplib_cli dump {t.pid} - -k triage --min-free 0 >> "$1"',
                               sys.executable, str(log)], stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    data = log.read_bytes()
    assert data.startswith(b"earlier lines\n\x7fELF"), data[:32]


def test_stdout_to_another_users_world_readable_file_is_refused(ctarget, shared_dir):
    _need_root()
    dest = shared_dir / "out.core"
    dest.write_bytes(b"")
    os.chown(dest, NOBODY, NOBODY)
    os.chmod(dest, 0o666)
    with open(dest, "wb") as out:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-", "-k", "triage",
                               "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 7 and "readable by others" in done.stderr and dest.stat().st_size == 0


@pytest.mark.parametrize("codec", [None, "gzip", "zstd"])
def test_a_full_device_on_stdout_is_disk_full_even_at_the_compressors_last_flush(ctarget, codec):
    # A triage core fits in zstd's first block: its first byte reaches /dev/full at the final flush.
    extra = ["-z", codec] if codec else []
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-", "-k", "triage",
                               *extra, "--json"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 8, done.stderr
    err = json.loads(done.stderr.strip().splitlines()[-1])["error"]
    assert err["reason"] == "disk-full" and err["errno"] == 28, err
    assert "no file was written" in err["message"] and "partial file was removed" not in err["message"]
    ctarget.assert_running_untraced()
