"""A snapshot's layout is finished from its clone once the target runs (#16): which pages of private
anonymous memory hold data comes from the clone's pagemap, a copy of the target's page tables at the
clone's instant, not from the target, which runs on and may change them. MADV_DONTFORK and
MADV_WIPEONFORK memory, absent or empty in the clone, keeps its pieces, and its data, from the
stopped target.

The target (snapshot_layout_target.c) has three regions touched in every other page. As soon as the
target runs again, before the layout is finished, it discards all three and writes into the pages it
had never touched. gdb, reading the core, must see the regions as they were at the stop: every even
page's marker, odd pages empty.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

import dumplib
from helpers import require
from linuxrig import build_source, gdb, have, run_target

pytestmark = pytest.mark.linux

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def layout_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("snapshot_layout"), HERE / "snapshot_layout_target.c")


def test_the_layout_finished_after_resume_is_the_clones_not_the_running_targets(layout_exe, outdir, monkeypatch):
    require(have("gdb"), "gdb is not installed")
    from dumplib._linux import backend

    finish = backend._lay_out_from_clone
    changed: List[str] = []

    def changed_first(*args: Any) -> None:
        changed.append(target.ask("change"))  # answered only by a running target
        finish(*args)

    monkeypatch.setattr(backend, "_lay_out_from_clone", changed_first)
    with run_target([str(layout_exe)]) as target:
        info: Dict[str, int] = target.info
        result = dumplib.create_dump(info["pid"], outdir / "layout.core", "full", snapshot=True, sidecar=False)
        assert changed == ["changed"], f"the target did not change its memory before the layout was finished: {changed}"
        assert result.snapshot, f"no snapshot was taken: {result.warnings}"
        commands = [f"x/s {info[what] + page * 4096}" for what in ("ANON", "DONTFORK", "WIPEONFORK")
                    for page in range(info["pages"])]
        out = gdb(str(layout_exe), str(result.path), *commands)
    seen = {int(line.split(":")[0].split()[0], 16): line.split(":", 1)[1].strip()
            for line in out.splitlines() if line.startswith("0x")}
    wrong = []
    for what in ("ANON", "DONTFORK", "WIPEONFORK"):
        for page in range(info["pages"]):
            address = info[what] + page * 4096
            want = f'"{what}-{page}"' if page % 2 == 0 else '""'
            if seen.get(address) != want:
                wrong.append(f"{what} page {page}: gdb reads {seen.get(address)!r}, the stop held {want}")
    assert not wrong, f"{len(wrong)} pages differ from the target at the stop:\n" + "\n".join(wrong[:12]) + f"\n{out[-2000:]}"


def test_auto_mode_weighs_the_stop_against_the_whole_size_the_core_stores(layout_exe, outdir, monkeypatch):
    """Auto mode's rule (policy.longer_stop) compares a snapshot's stop with reading in place all the
    core stores: with the layout left half done in the stop, that size is finished from the stopped
    target first. Here the rule's floor is 0, so it is always weighed; what it was given must be what
    the core's PT_LOADs store (readelf), whichever way it decided."""
    require(have("readelf"), "readelf is not installed")
    from dumplib._linux.snapshot import policy

    weighed: List[int] = []
    rule = policy.longer_stop

    def spied(threads: int, seized: float, normal_bytes: int, early_bytes: int) -> Any:
        weighed.append(normal_bytes)
        return rule(threads, seized, normal_bytes, early_bytes)

    monkeypatch.setattr(policy, "LONGER_STOP_FLOOR", 0.0)
    monkeypatch.setattr(policy, "longer_stop", spied)
    with run_target([str(layout_exe)]) as target:
        result = dumplib.create_dump(target.info["pid"], outdir / "auto.core", "full", snapshot="auto", sidecar=False)
    headers = subprocess.run(["readelf", "-lW", str(result.path)], capture_output=True, text=True, check=True).stdout
    stored = sum(int(line.split()[4], 16) for line in headers.splitlines() if line.split()[:1] == ["LOAD"])
    assert weighed, "auto mode never weighed the snapshot's stop"
    assert weighed[-1] == stored, (f"auto mode weighed {weighed[-1]} bytes read in place; the core stores {stored}"
                                   f" (snapshot: {result.snapshot})")
