"""A watch dumps with its platform's default snapshot policy unless told otherwise (issue 15: where
PSS exists, Windows watch dumps default to a snapshot so the target is not suspended during the
write). Windows' own policy (PSS present -> "auto") is tests/unit/test_windows_cancel.py's; this is
the pipeline's half, on a real process with a real snapshot."""
import pytest

import dumplib
from dumplib._switch import current
from linuxrig import run_target

pytestmark = pytest.mark.linux


def _one_dump(pid: int, outdir, **options):  # type: ignore[no-untyped-def]
    results = dumplib.watch(pid, dumplib.MemoryAbove(1), path=outdir, sample_every=0.2, timeout=60, **options)
    assert len(results) == 1, results
    return results[0]


@pytest.mark.parametrize("policy, asked, snapshot", [
    ("auto", None, True),     # the platform's default is taken
    (False, None, False),     # Linux's own default: a normal dump
    ("auto", False, False),   # the caller's word wins over the platform's default
])
def test_a_watch_dump_follows_the_platforms_snapshot_default(target_exe, outdir, monkeypatch, policy, asked,
                                                             snapshot):
    monkeypatch.setattr(type(current()), "watch_snapshot", policy, raising=False)
    options = {} if asked is None else {"snapshot": asked}
    with run_target([str(target_exe)]) as t:
        result = _one_dump(t.pid, outdir, **options)
        t.assert_running_untraced()
    assert result.snapshot is snapshot, result
