"""dumplib.cancel_dumps(): a program hosting dumplib (a service asked to stop) cancels every dump it is
writing, on any thread, and each one ends as any failed dump does: target let go, nothing kept."""
import os
import threading
from typing import List

import pytest

import dumplib
from linuxrig import run_target, unfollowable

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


def test_a_cancel_during_the_hash_for_the_sidecar_is_heard_there_and_leaves_nothing(target_exe, outdir):
    """The Windows shape (a writer that cannot be followed, so the finished dump is read once more for its
    sidecar's sha256: 5-20 s for 10 GB), run here on the Linux writer. A cancel while that read runs (the
    dump verified, the temporary open again) must be heard in it: the dump ends cancelled, nothing kept.
    Before that read heard the dump's tick, nothing after it could: the dump was kept whole (and a
    Windows watcher, giving up after 10 s, left the temporary)."""
    import datetime
    import time

    from dumplib import api
    from dumplib._switch import current
    from dumplib.kinds import DumpKind
    from dumplib.targets import resolve_target

    real = current()
    verified = threading.Event()

    class Verifying:  # the session, saying when the finished dump has been verified
        def __init__(self, session: object) -> None:
            self._session = session

        def __getattr__(self, name: str) -> object:
            return getattr(self._session, name)

        def verify(self, *args: object) -> object:
            said = self._session.verify(*args)  # type: ignore[attr-defined]
            verified.set()
            return said

    def reading_the_temporary() -> bool:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".dumplib-"):
                    return True
            except OSError:
                pass
        return False

    stop = threading.Event()

    def cancel_in_the_read() -> None:
        while not stop.is_set() and not (verified.is_set() and reading_the_temporary()):
            stop.wait(0.001)
        if not stop.is_set():
            dumplib.cancel_dumps(wait=0)

    with run_target([str(target_exe), "--heap", "1024"]) as t:
        opts = api._Options(str(outdir / "x.core"), DumpKind.FULL, None, False, None, None, None, True, False, True,
                            None, None, None, time.monotonic(), datetime.datetime.now(), None, False)
        canceller = threading.Thread(target=cancel_in_the_read, daemon=True)
        canceller.start()
        try:
            with pytest.raises(dumplib.DumpFailed) as failed:
                with real.open(resolve_target(t.pid, real), for_dump=True) as session:
                    # unfollowable: as on Windows, the dump is hashed for its sidecar after it is written
                    api.create_in_session(unfollowable(real), Verifying(session),  # type: ignore[arg-type]
                                          real.normalise_flags(DumpKind.FULL, None), opts)
        finally:
            stop.set()
            canceller.join(10)
        t.assert_running_untraced()
    assert failed.value.reason == "cancelled", failed.value
    assert os.listdir(outdir) == []
