"""dumplib.cancel_dumps(): a program hosting dumplib (a service asked to stop) cancels every dump it is
writing, on any thread, and each one ends as any failed dump does: target let go, nothing kept."""
import os
import threading
from typing import List

import pytest

import dumplib
from linuxrig import run_target

pytestmark = pytest.mark.linux


def test_cancel_dumps_stops_a_dump_on_another_thread_and_leaves_nothing(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "256"]) as t:
        writing = threading.Event()
        outcome: List[BaseException] = []

        def dump() -> None:
            try:
                # gzip at level 9 keeps the write going for seconds on any machine: a wide window.
                dumplib.create_dump(t.pid, outdir, kind="full", compress="gzip", compress_level=9,
                                    progress=lambda written, _elapsed: writing.set() if written else None)
            except BaseException as exc:  # noqa: B036 - the test inspects it
                outcome.append(exc)

        worker = threading.Thread(target=dump)
        worker.start()
        assert writing.wait(120), "the dump never started writing"
        assert dumplib.cancel_dumps(wait=120) == 1
        # It returns once that dump has ended: already nothing is kept and the target runs, untraced.
        assert os.listdir(outdir) == []  # no partial dump, no temporary, no sidecar
        t.assert_running_untraced()
        worker.join(60)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], dumplib.DumpFailed), outcome
        assert outcome[0].reason == "cancelled" and outcome[0].pid == t.pid
        # Nothing is left asking: the next dump of the same process is whole.
        assert dumplib.cancel_dumps(wait=0) == 0
        result = dumplib.create_dump(t.pid, outdir, kind="mini")
        assert os.path.exists(result.path)


def test_a_cancel_during_the_hash_for_the_sidecar_is_heard_there_and_leaves_nothing(target_exe, outdir, tmp_path):
    """The Windows shape (a writer that cannot be followed, so the finished dump is read once more for its
    sidecar's sha256: 5-20 s for 10 GB), run here on the Linux writer. A cancel once the whole dump is
    written must be heard in that read: the dump ends cancelled, nothing kept. Before that read heard the
    dump's tick, nothing after the write could: the dump was kept whole (and a Windows watcher, giving up
    after 10 s, left the temporary)."""
    import datetime
    import time

    from dumplib import api
    from dumplib._switch import current
    from dumplib.kinds import DumpKind
    from dumplib.targets import resolve_target

    real = current()

    class Unfollowable:
        streams = False  # as Windows: PlainFile then hashes the dump after it is written

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    def dump(pid: int, path: str, progress=None) -> dumplib.DumpResult:  # type: ignore[no-untyped-def]
        opts = api._Options(path, DumpKind.FULL, None, False, None, progress, None, True, False, True, None, None,
                            None, time.monotonic(), datetime.datetime.now(), None, False)
        with real.open(resolve_target(pid, real), for_dump=True) as session:
            return api.create_in_session(Unfollowable(), session, real.normalise_flags(DumpKind.FULL, None),  # type: ignore[arg-type]
                                         opts)

    with run_target([str(target_exe), "--heap", "1024"]) as t:
        first = dump(t.pid, str(tmp_path / "first.core"))
        whole = first.size  # the same process dumped again is as large: written == whole only once written

        def cancel_once_written(written: int, _elapsed: float) -> None:
            if written >= whole:
                dumplib.cancel_dumps(wait=0)

        with pytest.raises(dumplib.DumpFailed) as failed:
            dump(t.pid, str(outdir / "x.core"), cancel_once_written)
        t.assert_running_untraced()
    assert failed.value.reason == "cancelled", failed.value
    assert os.listdir(outdir) == []
