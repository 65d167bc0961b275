"""Every directory on the way to a dump, run as root, with another user (uid 65534) owning parts of it.

Whoever can rename an entry on the way (they own its directory; or the directory is writable by
others without the sticky bit; or the entry is theirs in a sticky directory) can swap it for a
symlink, before or during the dump, and send the dump and retention (which deletes) into a
directory only root may write. Each test builds the real directories with os.chown and checks,
with `ls` and stat, that root's files elsewhere are untouched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import dumplib
from dumplib._linux.host import _check_trusted
from helpers import IN_CI, require
from linuxrig import NOBODY, dumplib_cli


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0:
        require(not IN_CI, "planting another user's directories needs root")
        pytest.skip("NOT RUN: needs root to plant another user's directories")


@pytest.fixture()
def victim(tmp_path: Path, ctarget) -> Iterator[Path]:
    """A root-only directory holding root's older dump (which retention with keep=1 would delete)."""
    v = tmp_path / "victim"
    v.mkdir(mode=0o700)
    dumplib.create_dump(ctarget.pid, v / "old.core", "triage")
    yield v


def _listing(directory: Path) -> Dict[str, int]:
    return {p.name: p.stat().st_ino for p in directory.iterdir()}


def _theirs(path: Path, mode: int = 0o755) -> Path:
    """*path* (a new directory unless it is a symlink already) made uid 65534's."""
    if not path.is_symlink():
        path.mkdir()
        os.chmod(path, mode)
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    return path


def test_a_symlink_in_another_users_directory_never_steers_the_dump_or_retention(ctarget, tmp_path, victim):
    # repro1: nobody's own 0755 directory (nobody else can write it) holding nobody's symlink to a
    # root-only directory; before, dumplib followed it, wrote there and retention deleted old.core.
    att = _theirs(tmp_path / "att", 0o755)
    (att / "sub").symlink_to(victim)
    _theirs(att / "sub")
    before = _listing(victim)
    r = dumplib_cli("dump", str(ctarget.pid), f"{att}/sub/", "-k", "triage", "--keep", "1")
    assert r.returncode == 7, r.stderr  # InvalidDumpPath
    assert f"its directory {att} belongs to uid {NOBODY}" in r.stderr, r.stderr
    assert "steer the dump and retention" in r.stderr, r.stderr
    assert _listing(victim) == before
    ctarget.assert_running_untraced()


def test_roots_directory_inside_another_users_directory_is_refused(ctarget, tmp_path, victim):
    # The mid-dump variant: root's real directory inside nobody's, which nobody may rename away and
    # replace with a symlink while the dump is written. Refused before anything is written.
    att = _theirs(tmp_path / "att", 0o755)
    sub = att / "sub"
    sub.mkdir(mode=0o700)
    with pytest.raises(dumplib.InvalidDumpPath, match=f"its directory {att} belongs to uid {NOBODY}") as err:
        dumplib.create_dump(ctarget.pid, sub, "triage", keep=1)
    assert err.value.details()["path"].startswith(str(sub) + "/")
    # Deeper: nobody's directory is an ancestor, not the parent.
    (sub / "deeper").mkdir()
    with pytest.raises(dumplib.InvalidDumpPath, match=f"belongs to uid {NOBODY}"):
        dumplib.create_dump(ctarget.pid, sub / "deeper" / "x.core", "triage")
    assert list(sub.iterdir()) == [sub / "deeper"] and list((sub / "deeper").iterdir()) == []


def test_a_sticky_directory_allows_roots_entry_and_refuses_another_users(ctarget, tmp_path, victim):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    mine = shared / "mine"
    mine.mkdir(mode=0o755)
    r = dumplib.create_dump(ctarget.pid, mine, "triage", keep=1)  # allowed: only root may rename "mine"
    assert os.path.dirname(r.path) == str(mine)
    theirs = _theirs(shared / "theirs", 0o755)
    (theirs / "inner").mkdir(mode=0o700)  # root's, but inside nobody's entry
    for path in (theirs, theirs / "inner"):
        with pytest.raises(dumplib.InvalidDumpPath, match=f"{theirs} is a directory owned by uid {NOBODY} in {shared}"):
            dumplib.create_dump(ctarget.pid, path, "triage", keep=1)
    link = shared / "link"
    link.symlink_to(victim)
    _theirs(link)
    with pytest.raises(dumplib.InvalidDumpPath, match=f"{link} is a symlink owned by uid {NOBODY}"):
        dumplib.create_dump(ctarget.pid, link, "triage", keep=1)
    # Root's own symlink there is root's to re-point: followed, and its target walked by the same rule.
    link.unlink()
    link.symlink_to(victim)
    r = dumplib.create_dump(ctarget.pid, str(link) + "/", "triage")
    assert os.path.realpath(r.path).startswith(str(victim) + "/")
    assert sorted(os.listdir(victim)) == sorted(["old.core", "old.core.json", os.path.basename(r.path),
                                                 os.path.basename(r.path) + ".json"])
    assert list(theirs.iterdir()) == [theirs / "inner"] and list((theirs / "inner").iterdir()) == []


def test_a_directory_others_can_write_without_the_sticky_bit_is_refused_on_the_way(ctarget, tmp_path):
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o775)  # root's, but the group may rename its entries
    (group / "sub").mkdir(mode=0o700)
    with pytest.raises(dumplib.InvalidDumpPath, match=f"its directory {group} .*mode 775.* no sticky bit"):
        dumplib.create_dump(ctarget.pid, group / "sub", "triage")
    os.chmod(group, 0o1775)
    assert dumplib.create_dump(ctarget.pid, group / "sub", "triage").path.startswith(str(group / "sub") + "/")


def test_a_trusted_symlink_to_an_untrusted_place_is_walked_and_refused(ctarget, tmp_path, victim):
    # Root's symlink (relative, with ..) whose target goes through nobody's directory: the target is
    # walked component by component like the path given.
    att = _theirs(tmp_path / "att", 0o755)
    (att / "real").mkdir(mode=0o700)
    hop = tmp_path / "hop"
    hop.mkdir()
    (hop / "to").symlink_to("../att/real")
    with pytest.raises(dumplib.InvalidDumpPath, match=f"its directory {att} belongs to uid {NOBODY}"):
        dumplib.create_dump(ctarget.pid, hop / "to", "triage")
    # The same relative link to root's own directory resolves where the kernel resolves it.
    (hop / "ok").symlink_to("../victim")
    r = dumplib.create_dump(ctarget.pid, str(hop / "ok") + "/", "triage")
    assert os.path.samefile(os.path.dirname(r.path), victim)
    assert list((att / "real").iterdir()) == []


def test_a_symlink_loop_is_refused_with_a_path_error(ctarget, tmp_path):
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "a").symlink_to("b")
    (loop / "b").symlink_to("a")
    with pytest.raises(dumplib.InvalidDumpPath):
        dumplib.create_dump(ctarget.pid, str(loop / "a") + "/x.core", "triage")
    chain: List[Path] = [loop / f"c{i}" for i in range(45)]
    chain[-1].symlink_to(tmp_path)
    for here, there in zip(chain, chain[1:]):
        here.symlink_to(there.name)
    with pytest.raises(dumplib.InvalidDumpPath, match="more than 40 symlinks"):
        _check_trusted(str(chain[0]), str(chain[0]), None, str(chain[0]))
