"""A console closed while no MiniDumpWriteDump runs (the read-back, the compression, the sidecar) leaves
no temporary file: Windows ends the process about 5 s after CTRL_CLOSE_EVENT, and the console handler
returned at once when no write was registered, so the main thread's cleanup never ran. Now every
temporary dumplib creates is known (inflight.TEMPORARIES) until placed or removed, and the handler
interrupts the main thread that made one and waits (CONSOLE_GRACE) until it is gone.

In the Windows interpreter (real Windows, or Wine through
tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python), with real files; each
test has its own registries (the process-wide ones would refuse every later write once ended).
"""
import os
import sys
import threading
import time

import pytest

if sys.platform != "win32":
    pytest.skip("Windows backend: run inside Windows python.exe (real Windows, or Wine via the Wine tests)",
                allow_module_level=True)

from dumplib._windows import inflight, wrappers  # noqa: E402
from dumplib._windows.host import WindowsHost  # noqa: E402
from dumplib.errors import DumpFailed  # noqa: E402

WHY = DumpFailed("the dump was cancelled because its console was closed; nothing was kept", reason="cancelled")


def _temporary(tmp_path, name=".dumplib-0123456789abcdef.tmp"):
    path = str(tmp_path / name)
    wrappers.close_handle(wrappers.create_new_file(path))
    return path


def test_every_temporary_dumplib_creates_is_known_until_it_is_placed_or_removed(tmp_path):
    placed, removed = _temporary(tmp_path), _temporary(tmp_path, ".dumplib-fedcba9876543210.tmp")
    other = str(tmp_path / "final.dmp.part")
    wrappers.close_handle(wrappers.create_new_file(other))
    left = inflight.TEMPORARIES.left()
    assert left.get(placed) == left.get(removed) == threading.get_ident() and other not in left
    WindowsHost().place_new(placed, str(tmp_path / "final.dmp"))
    os.remove(removed)
    assert placed not in inflight.TEMPORARIES.left() and removed not in inflight.TEMPORARIES.left()


def test_a_console_close_with_no_write_running_waits_for_the_main_threads_cleanup(tmp_path):
    """The main thread is busy after its write (say, compressing): the handler, on Windows' own thread,
    interrupts it; its cleanup removes the temporary; the handler returns only then."""
    temporaries = inflight.OpenTemporaries()
    path = _temporary(tmp_path)
    temporaries.add(path)  # made by this (the main) thread
    assert threading.current_thread() is threading.main_thread()
    returned = threading.Event()
    seen = {}

    def console_thread():
        inflight.console_cleanup(inflight.InFlightWrites(), temporaries, WHY, 30.0)
        seen["left"] = os.path.exists(path)
        returned.set()

    handler = threading.Thread(target=console_thread, daemon=True)
    try:
        handler.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the dump's later work, in Python (the interrupt lands here)
            time.sleep(0.01)
        pytest.fail("the main thread was never interrupted")
    except KeyboardInterrupt:
        assert not returned.is_set()  # still waiting: the temporary is there
        os.remove(path)  # what the dump's cleanup does
    assert returned.wait(30) and seen["left"] is False


def test_a_temporary_another_thread_made_is_waited_for_not_interrupted(tmp_path):
    temporaries = inflight.OpenTemporaries()
    path = str(tmp_path / ".dumplib-00000000000000aa.tmp")
    interrupted = []

    def worker():
        wrappers.close_handle(wrappers.create_new_file(path))
        temporaries.add(path)
        time.sleep(0.3)  # its work after the write, then its own cleanup
        os.remove(path)

    thread = threading.Thread(target=worker)
    thread.start()
    while not temporaries.left():
        time.sleep(0.01)
    inflight.console_cleanup(inflight.InFlightWrites(), temporaries, WHY, 30.0, interrupt=lambda: interrupted.append(1))
    assert not os.path.exists(path) and interrupted == []
    thread.join(30)


def test_with_nothing_in_flight_the_handler_returns_at_once(tmp_path):
    interrupted = []
    inflight.console_cleanup(inflight.InFlightWrites(), inflight.OpenTemporaries(), WHY, 30.0,
                             interrupt=lambda: interrupted.append(1))
    assert interrupted == []
