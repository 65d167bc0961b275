"""A snapshot's helper processes (snapshot/remote.py) run as root in whatever directory dumplib was
started from, which may be another user's (/tmp). A `dumplib/` package planted there must not be what
they import: with `python -c` alone the current directory came first on their path, so the helper
that stops the target ran the planted code as root. Real helpers, a real planted package whose import
leaves a mark."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import dumplib
from dumplib._linux.snapshot import remote
from linuxrig import run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a snapshot's helper traces the target: root here")


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a `dumplib` package and `pickle` modules that mark their import; made the
    current directory, with PYTHONPATH naming it too."""
    where = tmp_path / "someone-elses"
    (where / "dumplib").mkdir(parents=True)
    mark = tmp_path / "planted-code-ran"
    (where / "dumplib" / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    # And a module of the standard library the helper imports (remote.py's pickle), which a current
    # directory anywhere on the path, even after dumplib's own, would shadow.
    (where / "pickle.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    # And the caller's PYTHONPATH with an empty entry and a relative one: resolved in the directory
    # the caller is in when the helper starts (not where the caller started), they name that directory.
    (where / "lib").mkdir()
    (where / "lib" / "pickle.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.environ.get("PYTHONPATH", ""), "", "lib"]))
    monkeypatch.chdir(where)
    return mark


def test_a_snapshot_dump_from_a_directory_holding_a_planted_dumplib_never_runs_it(target_exe, tmp_path, planted):
    with run_target([str(target_exe), "--heap", "8"]) as t:
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False)
    assert result.snapshot, result.warnings
    assert not planted.exists(), "the snapshot's helper imported the dumplib/ of the current directory"


def test_the_helper_that_reaps_a_killed_helpers_clone_is_isolated_too(planted):
    # Started with no arguments it imports its module, then stops at its first step (no pid given).
    executable, argv = remote._helper_command("serve_reap")
    done = subprocess.run(argv, executable=executable, capture_output=True, text=True, timeout=60)
    assert "ValueError" in done.stderr, done.stderr  # it ran this dumplib's serve_reap, which found no pid
    assert not planted.exists(), "the reaping helper imported the dumplib/ of the current directory"
