"""Two dumps of one process at once, from two threads of one program (a library caller, a watcher's
sampled dump beside an explicit one): each holds its own session on the target, neither releases the
other's pidfd, the second stop waits for the first to let the target go, and both cores are whole."""
import os
import re
import threading
import time
from typing import Dict, List

import pytest

import dumplib
from linuxrig import gdb, run_target

pytestmark = pytest.mark.linux


def _threads_in(out: str) -> int:
    return len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP|process)", out, re.M))


@pytest.mark.parametrize("same_directory", [False, True], ids=["two-directories", "one-directory"])
def test_two_dumps_of_one_process_from_two_threads_both_succeed(target_exe, tmp_path, same_directory):
    with run_target([str(target_exe), "--threads", "3", "--heap", "64"]) as t:
        start = threading.Barrier(2)
        results: Dict[str, dumplib.DumpResult] = {}
        failures: List[BaseException] = []
        spans: Dict[str, List[float]] = {}

        def dump(name: str, kind: str) -> None:
            # One directory: both get the name dumplib chooses in the same second; the second to be
            # placed takes the next free -N name instead of failing after its stop.
            out = tmp_path / ("shared" if same_directory else name)
            out.mkdir(exist_ok=True)
            try:
                start.wait(30)
                spans[name] = [time.monotonic()]
                results[name] = dumplib.create_dump(t.pid, str(out), kind)
            except BaseException as exc:  # noqa: B036 - the test reports it
                failures.append(exc)
            finally:
                spans[name].append(time.monotonic())

        workers = [threading.Thread(target=dump, args=("a", "full")), threading.Thread(target=dump, args=("b", "full"))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        assert not any(w.is_alive() for w in workers), "a dump never ended"
        assert failures == [] and sorted(results) == ["a", "b"], failures
        # Each call was under way while the other was: both held the target at once.
        assert max(s[0] for s in spans.values()) < min(s[1] for s in spans.values()), spans
        for name, result in results.items():
            assert os.path.dirname(result.path) == str(tmp_path / ("shared" if same_directory else name))
            assert os.path.exists(result.path + ".json")
            out = gdb(str(target_exe), result.path, "info threads", f"x/s {t.marker_address}")
            assert _threads_in(out) == t.threads, out
            assert f'"{t.marker.decode()}"' in out, out
        assert results["a"].path != results["b"].path
        t.assert_running_untraced()
