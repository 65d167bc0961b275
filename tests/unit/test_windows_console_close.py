"""A console closed while no MiniDumpWriteDump runs (the read-back, the compression, the sidecar) leaves
no temporary file: Windows ends the process about 5 s after CTRL_CLOSE_EVENT, and the console handler
returned at once when no write was registered, so the main thread's cleanup never ran. Now every
temporary dumplib creates is known (inflight.TEMPORARIES) until placed or removed, and the handler
interrupts the main thread that made one and waits (CONSOLE_GRACE) until it is gone.

In the Windows interpreter (real Windows, or Wine through
tests/e2e_wine/test_wine_dumps.py::test_unit_tests_pass_inside_windows_python), with real files; each
test has its own registries (the process-wide ones would refuse every later write once ended).
"""
import ctypes
import os
import sys
import threading
import time
from ctypes import wintypes as wt

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


#: The child of the real console-close test: its own console, the handler dumplib installs before a
#: write, a temporary made by its main thread, then Python work that only its cleanup would stop.
CHILD = r"""
import ctypes, os, sys, time
from dumplib._windows import inflight, wrappers
temp, ready = sys.argv[1], sys.argv[2]
inflight._install_console_handler()
wrappers.close_handle(wrappers.create_new_file(temp))
hwnd = ctypes.WinDLL("kernel32").GetConsoleWindow()
with open(ready + ".part", "w") as f:
    f.write(str(hwnd or 0))
os.replace(ready + ".part", ready)
try:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.01)
except KeyboardInterrupt:
    os.remove(temp)  # what a dump's cleanup does with its temporary
    while True:  # Windows ends the process once the handler returns; nothing here ends it
        time.sleep(0.01)
"""


def test_a_real_console_close_removes_the_temporary_before_windows_ends_the_process(tmp_path):
    """Real CTRL_CLOSE_EVENT: a child with a console of its own (CREATE_NEW_CONSOLE) is sent WM_CLOSE on
    its console window, as clicking Close does; its temporary is gone when Windows has ended it."""
    from dumplib._windows.ntdll import UNDER_WINE

    if UNDER_WINE:
        pytest.skip("real Windows only: Wine gives a CREATE_NEW_CONSOLE child no console window"
                    " (GetConsoleWindow is NULL)")
    import subprocess

    temp, ready = str(tmp_path / ".dumplib-1111111111111111.tmp"), str(tmp_path / "ready")
    child = subprocess.Popen([sys.executable, "-c", CHILD, temp, ready], creationflags=subprocess.CREATE_NEW_CONSOLE)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ready) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(ready), f"the child never got ready (exit code {child.poll()})"
        hwnd = int(open(ready).read())
        assert hwnd, "the child has no console window"
        assert os.path.exists(temp)
        user32 = ctypes.WinDLL("user32", use_last_error=True)
        user32.PostMessageW.argtypes = [wt.HWND, wt.UINT, wt.WPARAM, wt.LPARAM]
        assert user32.PostMessageW(hwnd, 0x0010, 0, 0), ctypes.get_last_error()  # WM_CLOSE
        child.wait(60)  # Windows ends it about 5 s after the event, whatever its handler does
        assert not os.path.exists(temp), "the console close left the temporary"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
