"""Postmortem on Windows: dumplib as the AeDebug debugger, and WER LocalDumps managed with a guard.

AeDebug: Windows starts ``Debugger`` (with Auto=1, without asking) in the crashing process's context with
its pid, an event to signal and, on Windows, the address of a JIT_DEBUG_INFO (exception record and
context) in the crashed process. Where that structure holds up, the handler dumps through create_dump
with that exception, then signals the event so the process ends. Where it does not (Wine passes an
unrelated pointer), it is the debugger, as ``windbg -p -e -g`` is: attach, signal, dump the
second-chance exception, pass it on unhandled so the system ends the process (dump_as_debugger). A
watchdog signals the event anyway when the handler's time is up.

Both registry views are managed (the WOW6432Node twin serves 32-bit processes). What was there before is
kept, value by value with its registry type, under HKLM\\SOFTWARE\\dumplib\\Postmortem (writable by
administrators only) and put back exactly.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
import datetime
import hashlib
import json
import os
import threading
import time
import winreg
from ctypes import wintypes
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from .._bounded import start_thread
from ..errors import DumpError, DumpFailed, InvalidArgument

if TYPE_CHECKING:  # imported where used: the handler's start-up stays small
    from .._platform import Firing, HandOver, TargetEvent
    from ..kinds import DumpKind
    from ..results import DumpResult
from . import eventlog

AEDEBUG = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion\AeDebug"
LOCALDUMPS = r"SOFTWARE\Microsoft\Windows\Windows Error Reporting\LocalDumps"
OURS = r"SOFTWARE\dumplib\Postmortem"
VIEWS = {"64": winreg.KEY_WOW64_64KEY, "32": winreg.KEY_WOW64_32KEY}
AEDEBUG_VALUES = ("Debugger", "Auto")
WER_VALUES = ("DumpFolder", "DumpCount", "DumpType", "CustomDumpFlags")
MARKER = "dumplib._windows.aedebug"


class PostmortemRefused(InvalidArgument):
    """install/uninstall refused: what is in place, or what was given, is not safe to act on."""


# -- the registry, value by value, exactly --------------------------------------------------------------


def read_values(path: str, names: Sequence[str], view: int) -> Optional[Dict[str, Optional[List[Any]]]]:
    """{name: [type, data] or None (absent)} of key *path* in *view*; None if the key does not exist.
    Data winreg gives as bytes (REG_BINARY, and REG_NONE or any type it does not decode) is kept as
    {"hex": ...}, so it is written back as bytes whatever its type, and text that looks like hex stays text."""
    try:
        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | view)
    except FileNotFoundError:
        return None
    out: Dict[str, Optional[List[Any]]] = {}
    with key:
        for name in names:
            try:
                data, kind = winreg.QueryValueEx(key, name)
                out[name] = [kind, {"hex": data.hex()} if isinstance(data, bytes) else data]
            except FileNotFoundError:
                out[name] = None
    return out


def write_values(path: str, values: Dict[str, Optional[List[Any]]], view: int) -> None:
    """Set each value to its [type, data], delete those given as None."""
    key = winreg.CreateKeyEx(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | winreg.KEY_WRITE | view)
    with key:
        for name, value in values.items():
            if value is None:
                try:
                    winreg.DeleteValue(key, name)
                except FileNotFoundError:
                    pass
            else:
                kind, data = value
                winreg.SetValueEx(key, name, 0, kind, _as_written(kind, data))


def _as_written(kind: int, data: Any) -> Any:
    """The data of a [type, data] pair as winreg.SetValueEx takes it: bytes for {"hex": ...}; a backup
    written before that mark kept REG_BINARY data as a bare hex string."""
    if isinstance(data, dict) and isinstance(data.get("hex"), str):
        return bytes.fromhex(data["hex"])
    if kind == winreg.REG_BINARY and isinstance(data, str):
        return bytes.fromhex(data)
    return data


def _delete_key_if_empty(path: str, view: int) -> None:
    """Delete key *path* of *view* if nothing (no value, no subkey) was put in it since."""
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ | view) as key:
            subkeys, values, _ = winreg.QueryInfoKey(key)
        if subkeys == 0 and values == 0:
            winreg.DeleteKeyEx(winreg.HKEY_LOCAL_MACHINE, path, view, 0)
    except FileNotFoundError:
        pass


def _ours_get(name: str) -> Optional[Dict[str, Any]]:
    got = read_values(OURS, [name], winreg.KEY_WOW64_64KEY)
    value = got.get(name) if got else None
    if value is None:
        return None
    try:
        data = json.loads(value[1])
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ours_set(name: str, data: Optional[Dict[str, Any]]) -> None:
    write_values(OURS, {name: None if data is None else [winreg.REG_SZ, json.dumps(data)]}, winreg.KEY_WOW64_64KEY)


def _is_admin() -> bool:
    try:
        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    except (AttributeError, OSError):
        return False


# -- AeDebug ----------------------------------------------------------------------------------------------


def debugger_command() -> str:
    """The AeDebug Debugger value: this Python running the handler (%p: the JIT_DEBUG_INFO address, in hex)."""
    return f'"{sys.executable}" -I -m {MARKER} -p %ld -e %ld -j %p'


def _check_dir(directory: str) -> str:
    if not os.path.isdir(directory):
        raise PostmortemRefused(f"{directory} is not an existing directory; create it first", argument="dir",
                                value=directory)
    return os.path.realpath(directory)




def _not_python(executable: str) -> Optional[str]:
    """Why *executable* (sys.executable) must not be registered nor run as the handler's interpreter,
    or None. In a program that embeds Python (python3.dll), sys.executable names that program (app.exe):
    it would be run elevated to ask what the handler imports, then at every crash. Only a name of a
    Python interpreter passes (python.exe, pythonw.exe, python3.exe, python3.13t.exe, python_d.exe; a
    venv's Scripts\\python.exe is its launcher, a Python too)."""
    import re

    name = os.path.basename(executable or "")
    if re.fullmatch(r"pythonw?(\d+(\.\d+)?)?[a-z]?(_d)?\.exe", name, re.IGNORECASE) and os.path.isfile(executable):
        return None
    return (f"sys.executable ({executable or 'empty'}) is not a Python interpreter (in a program that embeds Python it"
            " names that program), and the AeDebug debugger would run it, elevated now and at every crash")


def _check_handler_trusted(executable: str, directory: str) -> None:
    """Refuse unless nothing the handler runs, imports or writes in can be changed by anyone but the
    machine's administrators (trust.py): it runs in every crashing process's context, services' too."""
    import subprocess

    from .trust import handler_problems, handler_view

    try:
        sys_path, package = handler_view(executable)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        raise PostmortemRefused(f"cannot ask {executable} what the handler would import ({exc}); nothing changed",
                                argument="interpreter", value=executable) from None
    problems = handler_problems(executable, sys_path, package, directory)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise PostmortemRefused(
            "the AeDebug handler would run in every crashing process's context, services' (SYSTEM) included, from"
            f" files or into a folder someone other than the machine's administrators can change: {shown}."
            " Nothing changed. Install Python for all users (under Program Files) and dumplib into it from an"
            " elevated prompt, give DIR to administrators only (icacls DIR /inheritance:r /grant:r"
            " *S-1-5-32-544:(OI)(CI)F *S-1-5-18:(OI)(CI)F), and install the handler with that python.exe",
            argument="interpreter", value=executable)


def install(directory: str, *, kind: str = "mini", fit: bool = False, compress: Optional[str] = None,
            keep: Optional[int] = None, max_total: Optional[int] = None, min_free: Optional[int] = None,
            max_per: Optional[str] = "10:3", max_seconds: float = 120.0) -> Dict[str, Any]:
    """Register the handler as the AeDebug debugger in both registry views, backing up what was there."""
    from ..limits import check_limits, parse_max_per
    from ..compression import parse_codec
    from ..kinds import DumpKind

    from ..remote import is_remote

    if is_remote(directory):
        # AeDebug starts the debugger as the crashed process's user, with that user's environment: there
        # is no place for store credentials that every crashing user could read and no other user could
        # (the Linux handler runs as root and reads a root-only file). Not built (docs/egress.md).
        shown = directory.split("?", 1)[0]
        raise InvalidArgument(
            f"postmortem dumps on Windows cannot go to a URL ({shown}): the AeDebug handler runs as each crashed"
            " process's user, with no credentials dumplib could give it safely. Install it with a local --dir"
            " and ship the dumps from there", argument="directory", value=shown)
    if not _is_admin():
        raise PostmortemRefused("registering the AeDebug debugger needs an administrator", argument="user",
                                value=os.environ.get("USERNAME"))
    why = _not_python(sys.executable)
    if why is not None:
        raise PostmortemRefused(f"no handler can be installed from here: {why}. Nothing changed. Install it with the"
                                " `dumplib` command, or from python.exe", argument="python", value=sys.executable)
    kind_value = DumpKind.parse(kind).value
    parse_codec(compress)
    check_limits(keep=keep, max_total=max_total, min_free=min_free)

    rate = parse_max_per(max_per)
    if not max_seconds > 0:  # also NaN: the watchdog would end every handler at once, or never
        raise InvalidArgument(f"--max-seconds must be more than 0, not {max_seconds}", argument="max_seconds",
                              value=max_seconds)
    directory = _check_dir(directory)
    _check_handler_trusted(sys.executable, directory)
    if _ours_get("Backup") is not None:
        raise PostmortemRefused("dumplib's AeDebug handler is already installed; uninstall it first",
                                argument="state", value=OURS)
    backup = {name: read_values(AEDEBUG, AEDEBUG_VALUES, view) for name, view in VIEWS.items()}
    command = debugger_command()
    config = {"dir": directory, "kind": kind_value, "fit": fit, "compress": compress, "keep": keep,
              "max_total": max_total, "min_free": min_free, "max_per": rate, "max_seconds": max_seconds,
              "debugger": command}
    _ours_set("Backup", {"aedebug": backup})
    try:
        _ours_set("Config", config)
        for view in VIEWS.values():
            write_values(AEDEBUG, {"Debugger": [winreg.REG_SZ, command], "Auto": [winreg.REG_SZ, "1"]}, view)
    except BaseException:
        _restore_aedebug(backup)
        raise
    return status()


def _restore_aedebug(backup: Dict[str, Any]) -> None:
    for name, view in VIEWS.items():
        values = backup.get(name)
        write_values(AEDEBUG, values if values is not None else {v: None for v in AEDEBUG_VALUES}, view)
        if values is None:  # install made the key (a fresh machine's 32-bit view has none): exactly as before
            _delete_key_if_empty(AEDEBUG, view)
    _ours_set("Config", None)
    _ours_set("Rate", None)
    _ours_set("Backup", None)


def uninstall(*, force: bool = False) -> Dict[str, Any]:
    """Put back the AeDebug values of both views exactly; refuse if the Debugger in place is not dumplib's."""
    saved = _ours_get("Backup")
    config = _ours_get("Config") or {}
    if saved is None:
        raise PostmortemRefused("no dumplib AeDebug installation (no backup); nothing changed", argument="state",
                                value=OURS)
    for name, view in VIEWS.items():
        now = (read_values(AEDEBUG, ["Debugger"], view) or {}).get("Debugger")
        if (now is None or now[1] != config.get("debugger")) and not force:
            raise PostmortemRefused(f"the AeDebug Debugger ({name}-bit view) is now {now and now[1]!r}, not dumplib's:"
                                    " someone registered another debugger since; nothing changed (--force puts"
                                    " back what was there before anyway)", argument="Debugger",
                                    value=now and now[1])
    _restore_aedebug(saved["aedebug"])
    return status()


def status() -> Dict[str, Any]:
    config = _ours_get("Config")
    views = {name: read_values(AEDEBUG, AEDEBUG_VALUES, view) for name, view in VIEWS.items()}
    debugger = ((views.get("64") or {}).get("Debugger") or [None, None])[1]
    ours = config is not None and debugger == config.get("debugger")
    other = None if debugger is None else ("winedbg" if "winedbg" in debugger.lower() else
                                           "procdump" if "procdump" in debugger.lower() else
                                           "vsjitdebugger" if "vsjitdebugger" in debugger.lower() else
                                           "another debugger")
    saved = _ours_get("Backup")
    return {"platform": "windows", "registered": "dumplib" if ours else (other or "none (Windows Error Reporting)"),
            "aedebug": views, "installed": saved is not None, "config": config,
            "backup": None if saved is None else saved.get("aedebug")}


# -- WER LocalDumps -----------------------------------------------------------------------------------------


def _wer_key(exe: Optional[str]) -> str:
    if exe is not None and (not exe or "\\" in exe or "/" in exe):
        raise InvalidArgument(f"--exe {exe!r} must be a file name like app.exe", argument="exe", value=exe)
    return LOCALDUMPS + ("\\" + exe if exe else "")


def wer_enable(folder: str, *, count: int = 10, kind: str = "mini", exe: Optional[str] = None,
               min_free: Optional[int] = None, allow_system_drive: bool = False,
               per_dump: Optional[int] = None) -> Dict[str, Any]:
    """Point WER LocalDumps (for every program, or *exe*) at *folder*, refusing a volume that cannot hold
    *count* dumps of *kind* (estimated from the running processes of that name, else *per_dump*) plus the
    reserve, and the system drive unless *allow_system_drive*. The previous values are backed up."""
    from ..kinds import DumpKind
    from .masks import windows_mask
    from ..space import SpaceGuard, human

    kind_ = DumpKind.parse(kind)
    if count < 1:
        raise InvalidArgument("--count must be at least 1", argument="count", value=count)
    folder = _check_dir(folder)
    system = os.environ.get("SystemDrive", "C:").rstrip("\\").upper()
    if os.path.splitdrive(folder)[0].upper() == system and not allow_system_drive:
        raise PostmortemRefused(f"{folder} is on the system drive {system}: crash dumps there are how system drives"
                                " fill up. Choose another volume, or pass --allow-system-drive",
                                argument="folder", value=folder)
    each = per_dump if per_dump is not None else _largest_estimate(exe, kind_)
    if each is None:
        raise PostmortemRefused(f"no running {exe or 'process'} to estimate a {kind_.value} dump from; give the size"
                                " of one dump (--per-dump SIZE)", argument="per_dump", value=None)
    from .host import WindowsHost

    guard = SpaceGuard(folder, WindowsHost(), min_free)
    needed = count * each
    if needed > guard.room():
        raise PostmortemRefused(f"{count} {kind_.value} dumps of ~{human(each)} need {human(needed)} on the volume of"
                                f" {folder}, which has {human(guard.free())} free with {human(guard.reserve)} to"
                                " stay free; lower --count, choose another volume or a smaller --kind",
                                argument="count", value=count)
    key = _wer_key(exe)
    view = winreg.KEY_WOW64_64KEY
    backups = _ours_get("WerBackup") or {}
    slot = exe or "*"
    if slot not in backups:
        backups[slot] = {"existed": read_values(key, [], view) is not None,
                         "parent_existed": read_values(LOCALDUMPS, [], view) is not None,
                         "values": read_values(key, WER_VALUES, view) or {v: None for v in WER_VALUES}}
        _ours_set("WerBackup", backups)
    dump_type = {DumpKind.FULL: 2, DumpKind.MINI: 1}.get(kind_, 0)
    values: Dict[str, Optional[List[Any]]] = {
        "DumpFolder": [winreg.REG_EXPAND_SZ, folder], "DumpCount": [winreg.REG_DWORD, count],
        "DumpType": [winreg.REG_DWORD, dump_type],
        "CustomDumpFlags": [winreg.REG_DWORD, windows_mask(kind_)] if dump_type == 0 else None}
    write_values(key, values, view)
    return wer_status(exe)


def _largest_estimate(exe: Optional[str], kind: "Union[str, DumpKind]") -> Optional[int]:
    if exe is None:
        return None
    from ..api import estimate
    from .._switch import current

    name = exe.lower().removesuffix(".exe")
    sizes = []
    for pid, pname in current().process_table().items():
        if pname.lower().removesuffix(".exe") == name:
            try:
                sizes.append(estimate(pid, kind).bytes)
            except DumpError:
                continue
    return max(sizes) if sizes else None


def wer_disable(exe: Optional[str] = None) -> Dict[str, Any]:
    """Put back the LocalDumps values (and key) found before wer_enable."""
    backups = _ours_get("WerBackup") or {}
    slot = exe or "*"
    saved = backups.get(slot)
    if saved is None:
        raise PostmortemRefused(f"dumplib did not enable WER LocalDumps for {exe or 'every program'}; nothing changed",
                                argument="exe", value=exe)
    key = _wer_key(exe)
    view = winreg.KEY_WOW64_64KEY
    write_values(key, saved["values"], view)
    if not saved["existed"]:
        try:
            winreg.DeleteKeyEx(winreg.HKEY_LOCAL_MACHINE, key, view, 0)
        except OSError:
            pass
    parent = read_values(LOCALDUMPS, WER_VALUES, view)
    if exe and not saved.get("parent_existed", True) and parent is not None and not any(parent.values()):
        try:  # the LocalDumps key dumplib created for the program's own: fails (kept) if it holds others
            winreg.DeleteKeyEx(winreg.HKEY_LOCAL_MACHINE, LOCALDUMPS, view, 0)
        except OSError:
            pass
    del backups[slot]
    _ours_set("WerBackup", backups or None)
    return wer_status(exe)


def wer_status(exe: Optional[str] = None) -> Dict[str, Any]:
    values = read_values(_wer_key(exe), WER_VALUES, winreg.KEY_WOW64_64KEY)
    return {"exe": exe, "enabled": values is not None, "values": values,
            "dumplib_backup": (_ours_get("WerBackup") or {}).get(exe or "*")}


# -- the handler ----------------------------------------------------------------------------------------------


def _read_remote(process: int, address: int, size: int) -> bytes:
    from . import jitapi

    buf = ctypes.create_string_buffer(size)
    got = ctypes.c_size_t(0)
    jitapi.ReadProcessMemory(process, ctypes.c_void_p(address), buf, size, ctypes.byref(got))
    if got.value != size:
        raise OSError(f"read {got.value} of {size} bytes at 0x{address:x}")
    return buf.raw


class NoJitInfo(Exception):
    """The %p address holds no JIT_DEBUG_INFO of this crash (Wine passes an unrelated pointer): why."""


def exception_from_jit(pid: int, jit_address: int) -> "TargetEvent":
    """The crash's TargetEvent from the JIT_DEBUG_INFO at *jit_address* in process *pid* (record and
    context copied here, so the dump's exception stream is the crash's, not the waiting thread's).

    Raises NoJitInfo unless it proves itself one: its size field, a thread of *pid*, an exception
    record that reads and names the same address, a context that reads."""
    from .._platform import TargetEvent
    from . import debugapi as dbg
    from . import jitapi, kernel32
    from .exception_info import ExceptionParam

    try:
        process = kernel32.OpenProcess(jitapi.PROCESS_VM_READ | jitapi.PROCESS_QUERY_LIMITED_INFORMATION, False,
                                       pid)
    except (OSError, DumpError) as exc:
        raise NoJitInfo(f"process unreadable: {exc}") from None
    try:
        try:
            info = jitapi.JIT_DEBUG_INFO.from_buffer_copy(_read_remote(process, jit_address,
                                                                       ctypes.sizeof(jitapi.JIT_DEBUG_INFO)))
        except (OSError, DumpError) as exc:
            raise NoJitInfo(f"unreadable at 0x{jit_address:x}: {exc}") from None
        if info.dwSize != ctypes.sizeof(jitapi.JIT_DEBUG_INFO):
            # Wine formats %p from whatever is next (a STARTUPINFO, size 104): no JIT_DEBUG_INFO to read.
            raise NoJitInfo(f"size field {info.dwSize}, not {ctypes.sizeof(jitapi.JIT_DEBUG_INFO)}")
        if not info.dwThreadID or _process_of_thread(info.dwThreadID) != pid:
            raise NoJitInfo(f"thread {info.dwThreadID} is not a thread of process {pid}")
        try:
            record = _read_remote(process, info.lpExceptionRecord, jitapi.EXCEPTION_RECORD_SIZE)
            context = _read_remote(process, info.lpContextRecord, jitapi.CONTEXT_SIZE)
        except (OSError, DumpError) as exc:
            raise NoJitInfo(f"record or context unreadable: {exc}") from None
    finally:
        kernel32.CloseHandle(process)
    if (dbg.EXCEPTION_RECORD.from_buffer_copy(record).ExceptionAddress or 0) != info.lpExceptionAddress:
        raise NoJitInfo("its exception record names another address than its lpExceptionAddress")

    class _FromJit(ExceptionParam):
        def __init__(self) -> None:  # the record and context of the crash, not of a live thread
            self.record = dbg.EXCEPTION_RECORD.from_buffer_copy(record)
            raw = ctypes.create_string_buffer(len(context) + 16)
            self._raw = raw
            address = (ctypes.addressof(raw) + 15) & ~15
            ctypes.memmove(address, context, len(context))
            self.pointers = dbg.EXCEPTION_POINTERS(ctypes.pointer(self.record), ctypes.c_void_p(address))
            self.info = dbg.MINIDUMP_EXCEPTION_INFORMATION(info.dwThreadID, ctypes.pointer(self.pointers), False)

    param = _FromJit()
    return TargetEvent(kind="exception", tid=info.dwThreadID, code=param.record.ExceptionCode,
                       address=info.lpExceptionAddress, first_chance=False, raw=param)


def _process_of_thread(tid: int) -> int:
    """The pid thread *tid* belongs to (0: no such thread, or not ours to ask)."""
    from . import debugapi as dbg
    from . import jitapi

    try:
        thread = dbg.OpenThread(jitapi.THREAD_QUERY_LIMITED_INFORMATION, False, tid)
    except (OSError, DumpError):
        return 0
    try:
        return int(jitapi.GetProcessIdOfThread(thread))
    finally:
        dbg.CloseHandle(thread)


#: Seconds the debugger path waits, after signalling the event, for the exception to come back as a
#: second chance (it comes back at once: the faulting thread's filter returns and the exception goes on);
#: at most a quarter of the handler's budget (--max-seconds).
SECOND_CHANCE_PATIENCE = 30.0
#: Seconds it waits for the process to end once its second chance is passed on unhandled.
EXIT_PATIENCE = 10.0


def dump_as_debugger(pid: int, release: Callable[[], None], take: "Callable[[Optional[TargetEvent]], DumpResult]",
                     budget: float = 120.0) -> Dict[str, Any]:
    """The documented debugger path (``windbg -p %ld -e %ld -g``, winedbg), for when there is no
    JIT_DEBUG_INFO: attach (SeDebugPrivilege held, kill-on-exit off), signal the event through
    *release*, and wait in w15's DebugLoop for the crash to come back as a second-chance exception;
    ``take(event)`` dumps it while the event holds the process frozen; the exception is then passed on
    unhandled (DBG_EXCEPTION_NOT_HANDLED), so the system ends the process with the exception code as
    it would without a debugger. *release* is called on every path; every wait is bounded; the loop
    is detached (stop()) whatever happens. Returns facts for the log line; take's error is raised."""
    from ..triggers import ExceptionRaised
    from . import jitapi, wrappers
    from .debugloop import WRITE_PATIENCE, DebugLoop

    facts: Dict[str, Any] = {"via": "debugger"}
    patience = min(SECOND_CHANCE_PATIENCE, budget / 4)
    marks: Dict[str, float] = {"start": time.monotonic()}
    arrived, caught = threading.Event(), threading.Event()
    got: Dict[str, Any] = {}

    def fire(_pid: int, firing: "Firing", hand_over: "HandOver") -> None:
        if arrived.is_set():
            return  # one dump per crash
        arrived.set()
        marks["second_chance"] = time.monotonic()
        got["event"] = firing.event
        # The debug loop fires exceptions with their event; None would only be a loop bug.
        facts["exception"] = firing.event.label if firing.event is not None else None
        facts["event"] = firing.detail
        try:
            got["result"] = hand_over(lambda: take(firing.event))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the handler's thread
            got["error"] = exc
        finally:
            marks["dumped"] = time.monotonic()
            caught.set()

    try:
        handle: Optional[int] = wrappers.open_process(pid, jitapi.PROCESS_QUERY_LIMITED_INFORMATION)
    except DumpError:
        handle = None  # the exit code is then not reported; the rest goes on
    loop = DebugLoop(pid, [ExceptionRaised(first_chance=False)], fire)
    try:
        try:
            loop.start()  # bounded (debugloop.PATIENCE)
        except DumpError as exc:
            raise _Refused("attach-failed", f"could not attach as a debugger: {exc.message}") from None
        finally:
            release()  # attached or not, the faulting thread's filter goes on now
            marks["released"] = time.monotonic()
        began = time.monotonic()
        while not arrived.wait(0.1) and not loop.ended and time.monotonic() - began < patience:
            pass
        if not arrived.is_set():
            why = ("the process ended before its exception came back to the debugger" if loop.ended else
                   f"no second-chance exception within {patience:g} s; detached, it runs on")
            raise _Refused("no-exception", why)
        began = time.monotonic()  # the dump runs on the loop's thread while the event holds the process
        while not caught.wait(0.1) and time.monotonic() - began < WRITE_PATIENCE:
            pass
        if not caught.is_set():
            raise _Refused("failed", f"the dump did not end within {WRITE_PATIENCE:.0f} s; cancelled and detached")
        began = time.monotonic()
        while not loop.ended and time.monotonic() - began < EXIT_PATIENCE:
            time.sleep(0.05)
    finally:
        loop.stop()  # detaches if still attached; bounded
        if handle is not None:
            began = time.monotonic()  # the exit was reported; the process object follows at once
            while (code := wrappers.exit_code(handle)) is None and loop.ended and time.monotonic() - began < 2:
                time.sleep(0.05)
            facts["exit_code"] = None if code is None else f"0x{code:08X}"
            wrappers.close_handle(handle)
    marks["ended"] = time.monotonic()
    # Seconds from the handler's attach to each step: where a crashed process's time goes.
    facts["seconds"] = {k: round(v - marks["start"], 3) for k, v in marks.items() if k != "start"}
    if "error" in got:
        raise got["error"]
    event = got.get("event")
    facts["exception_stream"] = bool(event is not None and event.raw is not None)
    facts["result"] = got.get("result")
    return facts


def _take_rate_slot(exe: str, max_per: Optional[Sequence[int]]) -> None:
    if not max_per:
        return
    minutes, most = int(max_per[0]), int(max_per[1])
    book = _ours_get("Rate") or {}
    key = hashlib.sha256(exe.lower().encode("utf-8", "surrogateescape")).hexdigest()[:32]
    now = time.time()
    times = [t for t in book.get(key, []) if isinstance(t, (int, float)) and t > now - minutes * 60]
    if len(times) >= most:
        raise _Refused("rate-limited", f"{len(times)} dumps of this executable in the last {minutes} minutes")
    book[key] = times + [now]
    _ours_set("Rate", book)


class _Refused(Exception):
    def __init__(self, what: str, why: str) -> None:
        super().__init__(why)
        self.what, self.why = what, why


#: The Application log's source name for the handler's lines (Event Viewer, `Get-WinEvent`).
EVENT_SOURCE = "dumplib-postmortem"
#: Event ids: a dump written, and every other outcome (refused, rate-limited, failed).
EVENT_WRITTEN, EVENT_NOT_WRITTEN = 1000, 1001


def _log(record: Dict[str, Any]) -> None:
    """One line per crash: JSON beside the dumps (postmortem.log) for `postmortem list` and scripts,
    and one event in the Application log saying what was done, as WER reports its own."""
    directory = record.get("dir")
    if directory:
        try:
            _append_line(os.path.join(directory, "postmortem.log"), json.dumps(record, ensure_ascii=True) + "\n")
        except (OSError, DumpError):  # Win32Error is a DumpError
            pass
    _event_log(record)


#: CreateFileW: append only, and create the file when it is missing.
_FILE_APPEND_DATA, _OPEN_ALWAYS = 0x4, 4


def _append_line(path: str, line: str) -> None:
    """Append *line* to the log *path*, opened without following a reparse point (a symbolic link planted
    as postmortem.log is opened itself, and refused), never into another file; a new log inherits the
    folder's DACL (each crashing user's handler appends to it)."""
    import msvcrt

    from . import kernel32, wrappers

    handle = int(kernel32.CreateFileW(path, _FILE_APPEND_DATA, kernel32.FILE_SHARE_READ | kernel32.FILE_SHARE_WRITE,
                                      None, _OPEN_ALWAYS, kernel32.FILE_FLAG_OPEN_REPARSE_POINT, None))
    try:
        info = kernel32.BY_HANDLE_FILE_INFORMATION()
        kernel32.GetFileInformationByHandle(handle, ctypes.byref(info))
        if (kernel32.GetFileType(handle) != kernel32.FILE_TYPE_DISK
                or info.dwFileAttributes & (kernel32.FILE_ATTRIBUTE_REPARSE_POINT | kernel32.FILE_ATTRIBUTE_DIRECTORY)):
            raise OSError(f"{path} is not a regular file")
        fd = msvcrt.open_osfhandle(handle, os.O_WRONLY | os.O_APPEND)
    except BaseException:
        wrappers.close_handle(handle)
        raise
    try:
        os.write(fd, line.encode("ascii"))  # json.dumps(ensure_ascii=True): ascii only
    finally:
        os.close(fd)  # and the handle


def event_text(record: Dict[str, Any]) -> str:
    """The event's one line; ascii() keeps the crashed program's own bytes (its name, its path) from
    forging lines or fields."""
    who = f"process {record.get('pid')} ({ascii(record.get('exe', '?'))}) exception {record.get('exception', '?')}"
    if record.get("outcome") == "written":
        return f"{who}: wrote {ascii(record.get('path'))} ({record.get('kind')})"
    return f"{who}: {record.get('outcome')}: {ascii(record.get('why', ''))}"


def _event_log(record: Dict[str, Any]) -> None:
    try:
        written = record.get("outcome") == "written"
        source = eventlog.RegisterEventSourceW(None, EVENT_SOURCE)
        try:
            strings = (wintypes.LPCWSTR * 1)(event_text(record))
            eventlog.ReportEventW(source, eventlog.EVENTLOG_INFORMATION_TYPE if written else
                                  eventlog.EVENTLOG_WARNING_TYPE, 0, EVENT_WRITTEN if written else EVENT_NOT_WRITTEN,
                                  None, 1, 0, strings, None)
        finally:
            eventlog.DeregisterEventSource(source)
    except Exception:  # noqa: BLE001 - the log must never be why a crash is lost or the process held
        pass


#: Seconds the watchdog gives a write it cancels to return (Windows: at its next CancelCallback, 10 ms).
GIVE_UP_PATIENCE = 5.0
#: Seconds of the handler's budget kept for what follows the write (read-back, sidecar, log) and the
#: watchdog's own wait, so the dump's own max_pause cancels a stalled write before the watchdog must.
PAUSE_MARGIN = 10.0


def pause_budget(budget: float) -> float:
    """The max_pause of a handler with *budget* seconds (--max-seconds): at most create_dump's default
    60 s, and within the budget less PAUSE_MARGIN (never below 1 s: a write needs some time)."""
    return max(1.0, min(60.0, budget - PAUSE_MARGIN))


def _give_up(writes: Any, release: Callable[[], None], leave: Callable[[int], None]) -> None:
    """The handler's time is up: cancel a write still running and wait (GIVE_UP_PATIENCE) for
    MiniDumpWriteDump to return, for only its return resumes the crashed process's threads; then
    release the crashed process and *leave* (os._exit(3): the handler goes, detaching if attached)."""
    try:
        writes.end_and_wait(DumpFailed("the postmortem handler's time (--max-seconds) was up; the dump was"
                                       " cancelled", reason="cancelled"), GIVE_UP_PATIENCE)
    finally:
        release()
        leave(3)


def main(argv: Sequence[str]) -> int:
    """The AeDebug handler: ``-p PID -e EVENT [-j JIT_DEBUG_INFO address]``; always signals the event."""
    from . import jitapi

    args = dict(zip(argv[::2], argv[1::2]))
    try:
        pid, event = int(args["-p"]), int(args["-e"])
    except (KeyError, ValueError):
        return 2
    try:
        jit = int(args.get("-j", "").strip() or "0", 16) or None  # %p prints hex without 0x
    except ValueError:
        jit = None
    config = _ours_get("Config") or {}
    done = threading.Event()

    def release() -> None:
        if not done.is_set():
            done.set()
            try:
                jitapi.SetEvent(event)  # the crashed process goes on to end
            except OSError:
                pass

    budget = float(config.get("max_seconds") or 120)
    from .inflight import WRITES  # imported now, not on the watchdog's path

    def give_up() -> None:  # the handler's time is up: the crashed process goes, the handler too
        _give_up(WRITES, release, os._exit)

    watchdog = threading.Timer(budget, give_up)
    watchdog.daemon = True
    record: Dict[str, Any] = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "pid": pid,
                              "dir": config.get("dir")}
    try:
        # Inside the try: a watchdog the system refuses (short memory) is a failure logged like any other,
        # the crashed process released below; no dump is taken without the bound it keeps.
        start_thread(watchdog, "the postmortem handler's watchdog")
        if not config:
            raise _Refused("not-configured", "no dumplib configuration in the registry")
        from .trust import HELD_DIRECTORY_RIGHTS, chain_problem

        untrusted = chain_problem(str(config.get("dir")), HELD_DIRECTORY_RIGHTS)  # as install judged it
        if untrusted is not None:
            record["dir"] = None  # nor its log: the event log says it
            raise _Refused("untrusted-dir", f"{untrusted}: changed since install, which refuses such a folder;"
                                            " nothing written (give it back to administrators only)")
        from .._switch import current

        name = current().name_of(pid) or "process"
        record["name"] = name
        _take_rate_slot(name, config.get("max_per"))
        from ..api import create_dump

        def take(crash: "Optional[TargetEvent]") -> "DumpResult":
            return create_dump(pid, config["dir"], config.get("kind") or "mini", fit=bool(config.get("fit")),
                               compress=config.get("compress"), keep=config.get("keep"),
                               max_total=config.get("max_total"), min_free=config.get("min_free"),
                               comment=f"postmortem: {crash.label if crash else 'crash'}", _event=crash,
                               max_pause=pause_budget(budget))

        try:
            crash = exception_from_jit(pid, jit) if jit else None
            record["jit"] = "valid" if crash is not None else "none"
        except NoJitInfo as exc:
            crash, record["jit"] = None, f"none: {exc}"
        if crash is not None:  # Windows: the record and context are in hand; the process waits on the event
            record.update(via="jit", exception=crash.label, exception_stream=True)
            result = take(crash)
            record["did"] = (f"dumped exception 0x{crash.label} from JIT_DEBUG_INFO on thread {crash.tid};"
                             " signalled the event: the process ends as without a debugger")
        else:  # Wine (or a JIT_DEBUG_INFO that does not hold up): be the debugger, as windbg -p -e -g is
            facts = dump_as_debugger(pid, release, take, budget)
            result = facts.pop("result")
            record.update(facts)
            missing = "" if facts["exception_stream"] else " (no exception stream: its context was unreadable)"
            record["did"] = (f"attached as a debugger, dumped the {facts['event']}{missing},"
                             " passed it on unhandled: the process ended with exit code"
                             f" {facts.get('exit_code') or 'unknown (still running when detached)'}")
        record.update(outcome="written", path=result.path, kind=result.kind, size=result.size)
    except _Refused as exc:
        record.update(outcome=exc.what, why=exc.why)
    except DumpError as exc:
        record.update(outcome="refused-for-space" if type(exc).__name__ == "InsufficientDiskSpace" else "failed",
                      why=exc.message)
    except Exception as exc:  # noqa: BLE001 - logged; the event is signalled whatever happened
        record.update(outcome="failed", why=f"{type(exc).__name__}: {exc}")
    finally:
        release()
        watchdog.cancel()
    _log(record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
