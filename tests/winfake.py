"""A recording fake of the Win32 calls dumplib's Windows backend makes, so its call order (what runs
with SeDebugPrivilege on, what is cancelled and waited for) is checked on Linux too.

The backend's own modules are imported as they are, with ctypes.WinDLL answering from this fake:
every call is recorded with the token's SeDebugPrivilege state at that moment and the calling
thread. The token is modelled as Windows documents it (AdjustTokenPrivileges' PreviousState lists
only what changed; ERROR_NOT_ALL_ASSIGNED when the token does not hold the privilege). What the
real Win32 calls do is proved on Windows (tests/unit/test_windows_native.py, the workflow).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import pytest

from dumplib._platform import Plan, TargetEvent, WriteOptions, WriteReport
from dumplib.kinds import DumpKind
from dumplib._windows.masks import windows_mask
from dumplib.results import ProcessInfo

ERROR_NOT_ALL_ASSIGNED = 1300
SE_PRIVILEGE_ENABLED = 0x2
STILL_ACTIVE = 259
AMD64 = 0x8664
#: The process the fake's tests dump (any pid but the fake's own, GetCurrentProcessId's 4).
PID = 4242
#: Where the fake's dumps are "written" (CreateFileW is recorded, nothing reaches a disk).
TEMP = "C:\\dumps\\x.tmp"
#: Exports Windows has and Wine lacks, or Wine has and Windows lacks: absent unless a test adds them.
ABSENT = {"wine_get_version", "PssCaptureSnapshot", "PssQuerySnapshot", "PssFreeSnapshot"}


@dataclasses.dataclass(frozen=True)
class Call:
    name: str
    args: tuple
    #: SeDebugPrivilege enabled in the (process-wide) token when the call was made.
    privileged: bool
    thread: str


class FakeWin32:
    def __init__(self) -> None:
        self.calls: List[Call] = []
        self.impls: Dict[str, Callable[..., Any]] = {}
        self.absent: Set[str] = set(ABSENT)
        #: The token holds SeDebugPrivilege (an elevated administrator) and whether it is enabled now.
        self.holds_debug = True
        self.debug_enabled = False
        self._lock = threading.Lock()
        self._last_error = threading.local()
        self._next_handle = 0x100
        #: Handles returned and not closed yet, by kind.
        self.open_handles: Dict[int, str] = {}

    # -- what the harness patches in ---------------------------------------------------------------
    def get_last_error(self) -> int:
        return getattr(self._last_error, "code", 0)

    def set_last_error(self, code: int) -> int:
        old = self.get_last_error()
        self._last_error.code = code
        return old

    def fail(self, code: int) -> int:
        """From an impl: fail the call with *code* (the BOOL/HANDLE 0 its errcheck turns into Win32Error)."""
        self.set_last_error(code)
        return 0

    def handle(self, kind: str) -> int:
        with self._lock:
            self._next_handle += 4
            self.open_handles[self._next_handle] = kind
            return self._next_handle

    def record(self, name: str, args: tuple) -> None:
        with self._lock:
            self.calls.append(Call(name, args, self.debug_enabled, threading.current_thread().name))

    def named(self, name: str) -> List[Call]:
        return [c for c in self.calls if c.name == name]

    # -- default behaviour of the calls the backend makes -------------------------------------------
    def default(self, name: str, args: tuple) -> Any:
        if name == "OpenProcess":
            return self.handle("process")
        if name in ("OpenThread", "CreateFileW"):
            return self.handle(name)
        if name == "OpenProcessToken":
            args[2]._obj.value = self.handle("token")
            return 1
        if name == "CloseHandle":
            with self._lock:
                self.open_handles.pop(args[0], None)
            return 1
        if name == "LookupPrivilegeValueW":
            args[2]._obj.LowPart, args[2]._obj.HighPart = 20, 0  # SE_DEBUG_PRIVILEGE's LUID
            return 1
        if name == "AdjustTokenPrivileges":
            return self._adjust(args)
        if name == "GetExitCodeProcess":
            args[1]._obj.value = STILL_ACTIVE
            return 1
        if name == "IsWow64Process2":
            args[1]._obj.value, args[2]._obj.value = 0, AMD64
            return 1
        if name == "GetCurrentProcess":
            return (1 << 64) - 1
        if name == "GetCurrentProcessId":
            return 4
        if name == "WaitForDebugEvent":
            return self.fail(121)  # ERROR_SEM_TIMEOUT: nothing happened
        return 1

    def _adjust(self, args: tuple) -> int:
        token, disable_all, new, size, previous, returned = args
        wanted = bool(new._obj.Privileges[0].Attributes & SE_PRIVILEGE_ENABLED)
        self.set_last_error(0)
        if not self.holds_debug:
            if previous is not None:
                previous._obj.PrivilegeCount = 0
            self.set_last_error(ERROR_NOT_ALL_ASSIGNED)
            return 1
        if previous is not None:
            changed = wanted != self.debug_enabled
            previous._obj.PrivilegeCount = 1 if changed else 0
            previous._obj.Privileges[0].Luid.LowPart = 20
            previous._obj.Privileges[0].Attributes = SE_PRIVILEGE_ENABLED if self.debug_enabled else 0
        self.debug_enabled = wanted
        return 1


class _FakeFunction:
    def __init__(self, fake: FakeWin32, name: str) -> None:
        self._fake, self.__name__ = fake, name
        self.argtypes: Any = None
        self.restype: Any = None
        self.errcheck: Optional[Callable[..., Any]] = None

    def __call__(self, *args: Any) -> Any:
        self._fake.record(self.__name__, args)
        impl = self._fake.impls.get(self.__name__)
        result = impl(*args) if impl is not None else self._fake.default(self.__name__, args)
        if self.errcheck is not None:
            result = self.errcheck(result, self, args)
        return result


class _FakeDLL:
    def __init__(self, fake: FakeWin32, name: str) -> None:
        self._fake, self._name, self._functions = fake, name, {}

    def __getattr__(self, name: str) -> _FakeFunction:
        if name.startswith("_") or name in self._fake.absent:
            raise AttributeError(name)
        if name not in self._functions:
            self._functions[name] = _FakeFunction(self._fake, name)
        return self._functions[name]


#: Every module of dumplib._windows the fake's tests reach, as attributes of the namespace fake_windows yields.
WINDOWS_MODULES = ("_common", "structs", "policy", "privilege", "snapshot", "kernel32", "advapi32", "ntdll",
                   "dbghelp", "debugapi", "wrappers", "host", "access", "estimate", "exception_info", "inflight",
                   "capture", "writer", "verify", "debugloop", "backend")


@contextlib.contextmanager
def fake_windows(monkeypatch: Any, fake: Optional[FakeWin32] = None) -> Iterator[Any]:
    """dumplib._windows imported against *fake*; yields a namespace of its modules (and .fake)."""
    import dumplib._switch
    import dumplib.watching  # noqa: F401 - imported (with dumplib._psutil) for real

    fake = fake or FakeWin32()
    cached = dumplib._switch._cached  # the process's real platform: no fake may stay in its place
    platform = sys.platform
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, **kw: _FakeDLL(fake, name), raising=False)
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", fake.get_last_error, raising=False)
    monkeypatch.setattr(ctypes, "set_last_error", fake.set_last_error, raising=False)
    monkeypatch.setattr(ctypes, "FormatError", lambda code: "fake error", raising=False)
    saved = {k: v for k, v in sys.modules.items() if k == "dumplib._windows" or k.startswith("dumplib._windows.")}
    for k in saved:
        del sys.modules[k]
    try:
        mods = {m: importlib.import_module(f"dumplib._windows.{m}") for m in WINDOWS_MODULES}
        monkeypatch.setattr(sys, "platform", platform)  # only the imports needed it
        ns = type("Windows", (), mods)()
        ns.fake = fake
        yield ns
    finally:
        for k in [k for k in sys.modules if k == "dumplib._windows" or k.startswith("dumplib._windows.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        dumplib._switch._cached = cached


@pytest.fixture()
def win(monkeypatch: Any) -> Iterator[Any]:
    """The Windows modules against a fresh recording fake, with file creation faked too (a recorded
    "file" handle); the real create_new_file stays reachable as ``win.create_new_file``.

    Test modules import this fixture by name (``from winfake import win``)."""
    with fake_windows(monkeypatch) as ns:
        ns.create_new_file = ns.wrappers.create_new_file
        monkeypatch.setattr(ns.wrappers, "create_new_file", lambda path: ns.fake.handle("file"))
        yield ns


def plan_for(pid: int = PID, kind: DumpKind = DumpKind.MINI) -> Plan:
    """A plan for *pid* as session.plan() makes it, without the memory walk the fake cannot answer."""
    return Plan(target=ProcessInfo(pid, "svc.exe"), kind=kind, flags=windows_mask(kind, None))


def dump(win: Any, plan: Optional[Plan] = None, *, platform: Any = None, max_pause: Optional[float] = None,
         event: Optional[TargetEvent] = None, snapshot: Any = False) -> WriteReport:
    """One dump as the pipeline takes it: open the target for dumping, write, close the session."""
    platform = platform or win.backend.WindowsPlatform()
    plan = plan or plan_for()
    with platform.open(plan.target, for_dump=True) as session:
        return session.write(plan, TEMP, WriteOptions(comment=None, signature="{}", max_pause=max_pause,
                                                      event=event, snapshot=snapshot))


def open_kinds(fake: FakeWin32) -> List[str]:
    """What the fake handed out and nobody closed yet, by kind ("process", "file", "token"...)."""
    with fake._lock:
        return sorted(fake.open_handles.values())
