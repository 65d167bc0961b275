"""Every file dumplib creates or deletes, in directories other users can write to, as root.

Each test plants what an attacker or a crash leaves (symlinks, decoys, other users' files, live
temporaries of another dumplib) and checks what `stat` and the files' bytes say afterwards.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

import dumplib
from dumplib import placement as output_module
from dumplib import outputs as _outputs
from dumplib.placement import TEMP_RE
from helpers import IN_CI, leftovers, require, tmpfs
from linuxrig import dumplib_cli, run_target

NOBODY = 65534


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
        f"with writing_in([{str(directory)!r}]):\n"
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


def test_a_full_disk_while_writing_the_sidecar_leaves_nothing(ctarget, tmp_path):
    # One inode for the volume's root and one for the dump: the sidecar's temporary cannot be created.
    with tmpfs(tmp_path / "vol", "64M", options="nr_inodes=2") as vol:
        done = dumplib_cli("dump", str(ctarget.pid), str(vol / "x.core"), "-k", "triage", "--min-free", "0", "--json")
        assert done.returncode == 8, done.stderr
        err = json.loads(done.stdout)["error"]
        assert err["type"] == "DumpFailed" and err["reason"] == "disk-full", err
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
        assert "back to its 0 bytes" in cut.stderr and dest.stat().st_size == 0, cut.stderr
        assert _mode(dest) == 0o600
        t.assert_running_untraced()
        with open(dest, "wb") as out:
            ok = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "triage",
                                 "--min-free", "0"], stdout=out, stderr=subprocess.PIPE, text=True)
        assert ok.returncode == 0, ok.stderr
        assert dest.read_bytes()[:4] == b"\x7fELF"
