"""Retention while another dumplib's retention works in the same directory (two dumps with --keep at once).

The other run's deletions are made to land at the worst moment, between this run's listing and its
check of a listed dump, by a hook on the listing; what is checked is what `ls` shows afterwards and
what the caller is told.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import List

import pytest

import dumplib
from dumplib import retention
from dumplib._switch import current


def _dumps(pid: int, directory: Path, n: int) -> List[str]:
    return [dumplib.create_dump(pid, directory / f"d{i}.core", "triage").path for i in range(n)]


def test_a_dump_another_retention_removed_or_replaced_meanwhile_is_passed_over(ctarget, outdir, monkeypatch):
    paths = _dumps(ctarget.pid, outdir, 4)
    real = retention.dumps_in

    def the_other_run_strikes(directory: str, host):  # type: ignore[no-untyped-def]
        entries = real(directory, host)
        os.unlink(entries[0].dump)  # the other run's retention removed it (its sidecar stays a moment)
        os.unlink(entries[1].dump)  # ... and someone put a FIFO at the free name: never opened to wait
        os.mkfifo(entries[1].dump, 0o600)
        return entries

    monkeypatch.setattr(retention, "dumps_in", the_other_run_strikes)
    out: List[object] = []
    worker = threading.Thread(target=lambda: out.append(_run(outdir, paths[3])), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(paths[1], os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("retention waited on a FIFO planted at a listed dump's name")
    assert not isinstance(out[0], BaseException), out[0]
    assert out[0] == [paths[2]]  # the only one still ours to remove; keep=1 spares the newest
    assert sorted(os.listdir(outdir)) == sorted(["d0.core.json", "d1.core", "d1.core.json", "d3.core",
                                                 "d3.core.json"])


def _run(directory: Path, protect: str) -> object:
    try:
        return retention.apply_retention(str(directory), keep=1, max_total=None, protect=protect,
                                         host=current().host())
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        return exc


def test_retention_trouble_after_the_dump_is_placed_is_a_warning_not_a_failure(ctarget, outdir, monkeypatch):
    older = _dumps(ctarget.pid, outdir, 1)

    def listing_fails(directory: str, host):  # type: ignore[no-untyped-def]
        raise FileNotFoundError(2, "No such file or directory", os.path.join(directory, "d0.core"))

    monkeypatch.setattr(retention, "dumps_in", listing_fails)
    r = dumplib.create_dump(ctarget.pid, outdir / "new.core", "triage", keep=1)
    assert (f"retention stopped: FileNotFoundError (No such file or directory) while reading {outdir};"
            " the dump is in place") in r.warnings, r.warnings
    assert dumplib.info(r.path).pid == ctarget.pid and os.path.isfile(r.sidecar)
    assert os.path.exists(older[0])


def test_a_cancel_during_retentions_reads_stops_it_keeps_the_dump_and_tells_what_was_removed(target_exe, outdir):
    """Retention hashes each dump before removing it (5-20 s for a 10 GB dump). A cancel_dumps() once the
    new dump is in place and the oldest was removed must stop it in the next dump's hash, not wait for
    those reads: the dump is kept and said to be kept, the removal made is still told, and the dumps not
    yet removed are left as they were. Before retention heard the dump's tick, all three older dumps were
    hashed and removed after the cancel; before the removals were kept, the one made was not told."""
    from linuxrig import run_target

    with run_target([str(target_exe), "--heap", "256"]) as t:
        older = [dumplib.create_dump(t.pid, outdir / f"d{i}.core", "full").path for i in range(3)]
        new = outdir / "new.core"
        stop = threading.Event()

        def cancel_once_the_oldest_is_gone() -> None:  # as a service stopping would, from another thread
            while not stop.is_set() and os.path.exists(older[0]):
                stop.wait(0.002)
            if not os.path.exists(older[0]):
                dumplib.cancel_dumps(wait=0)

        canceller = threading.Thread(target=cancel_once_the_oldest_is_gone, daemon=True)
        canceller.start()
        try:
            r = dumplib.create_dump(t.pid, new, "full", keep=1)
        finally:
            stop.set()
            canceller.join(10)
        t.assert_running_untraced()
    told = [w for w in r.warnings if w.startswith("retention")]
    assert told == ["retention removed d0.core",
                    f"retention stopped while reading {outdir}: the dump was cancelled or its watch ended; the dump"
                    " is in place, and the older dumps not yet removed were left as they were"], r.warnings
    assert dumplib.info(r.path).pid == t.pid and os.path.isfile(r.sidecar)
    assert all(os.path.exists(p) and os.path.exists(p + ".json") for p in older[1:])
