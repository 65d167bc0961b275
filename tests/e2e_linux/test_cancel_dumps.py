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
