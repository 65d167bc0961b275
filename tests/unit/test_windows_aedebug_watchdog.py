"""The AeDebug handler's watchdog (--max-seconds), in the Windows interpreter (real Windows, or Wine
through tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python).

MiniDumpWriteDump suspends the crashed process's threads and only its return resumes them. The
watchdog called os._exit(3) at once: a write still running was cut off with the threads suspended.
Now it cancels every write of the handler (InFlightWrites, as a console close does), waits for the
write to return, then releases the crashed process and leaves. The dump's own max_pause is kept
inside the budget, so a stalled write is cancelled by its own bound before the watchdog must.
"""
import sys
import threading
import time

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

from dumplib._windows import aedebug, inflight  # noqa: E402


def test_the_watchdog_cancels_the_write_and_waits_for_its_return_before_it_lets_go():
    writes = inflight.InFlightWrites()  # the registry the handler's writes go through, its own here
    order = []
    cancelled = threading.Event()

    class Write:  # a running write as the registry sees it: its CancelCallback says stop at the next call
        def cancel(self, why):
            order.append(f"cancel: {why}")
            cancelled.set()

    def writer():
        with writes.writing(Write()):
            cancelled.wait(30)
            time.sleep(0.2)  # MiniDumpWriteDump returns at its next CancelCallback, not at once
            order.append("write returned")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while not writes.busy():
        time.sleep(0.01)
    aedebug._give_up(writes, lambda: order.append("release"), lambda code: order.append(f"leave {code}"))
    assert order[0].startswith("cancel: the postmortem handler's time (--max-seconds) was up"), order
    assert order[1:] == ["write returned", "release", "leave 3"], order


def test_with_no_write_running_the_watchdog_lets_go_at_once():
    order = []
    aedebug._give_up(inflight.InFlightWrites(), lambda: order.append("release"), lambda code: order.append(code))
    assert order == ["release", 3]


@pytest.mark.parametrize("budget, pause", [(120.0, 60.0), (40.0, 30.0), (11.0, 1.0), (5.0, 1.0)])
def test_the_dumps_own_max_pause_ends_inside_the_handlers_budget(budget, pause):
    assert aedebug.pause_budget(budget) == pause
