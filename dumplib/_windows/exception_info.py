"""The exception a watched process raised, as MiniDumpWriteDump's ExceptionParam takes it: built by
the debugger loop while the debug event holds the target, passed to the writer with the dump's event."""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
from typing import TYPE_CHECKING, Optional

from .._platform import TargetEvent
from . import debugapi as dbg
from . import wrappers
from .policy import CONTEXT_LAYOUTS, DUMPER_MACHINE

if TYPE_CHECKING:
    from _ctypes import _CArgObject


def exception_param(event: Optional[TargetEvent]) -> "Optional[_CArgObject]":
    """MiniDumpWriteDump's ExceptionParam for a dump taken at *event*: a pointer to its
    MINIDUMP_EXCEPTION_INFORMATION, or None (no event, or not an exception)."""
    if event is None or event.kind != "exception" or not isinstance(event.raw, ExceptionParam):
        return None
    return ctypes.byref(event.raw.info)


class ExceptionParam:
    """MINIDUMP_EXCEPTION_INFORMATION in this process's memory (ClientPointers FALSE): the record
    from the debug event and the faulting thread's registers, read while the event holds it, in
    the CONTEXT of the dumper's own machine (what its GetThreadContext fills and its dbghelp reads)."""

    def __init__(self, record: dbg.EXCEPTION_RECORD, tid: int, machine: Optional[int] = None) -> None:
        self.record = dbg.EXCEPTION_RECORD.from_buffer_copy(record)
        layout = CONTEXT_LAYOUTS[machine if machine is not None else DUMPER_MACHINE]
        raw = ctypes.create_string_buffer(layout.size + layout.align)
        self._raw = raw  # keeps the buffer alive; the CONTEXT itself starts at its declared alignment
        address = (ctypes.addressof(raw) + layout.align - 1) & ~(layout.align - 1)
        ctypes.c_uint32.from_address(address + layout.flags_offset).value = layout.all_flags
        with wrappers.DEBUG_PRIVILEGE.held():  # a service's threads answer no one else
            thread = dbg.OpenThread(dbg.THREAD_GET_CONTEXT | dbg.THREAD_QUERY_INFORMATION, False, tid)
        try:
            dbg.GetThreadContext(thread, ctypes.c_void_p(address))
        finally:
            wrappers.close_handle(thread)
        self.context_address = address
        self.pointers = dbg.EXCEPTION_POINTERS(ctypes.pointer(self.record), ctypes.c_void_p(address))
        self.info = dbg.MINIDUMP_EXCEPTION_INFORMATION(tid, ctypes.pointer(self.pointers), False)
