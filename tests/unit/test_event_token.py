"""The dump name's {event} / EXCEPTIONCODE token (ProcDump's), and what each event makes of it."""
import datetime
import sys
from pathlib import Path

import dumplib
from dumplib._platform import TargetEvent
from dumplib.kinds import DumpKind
from dumplib.placement import expand_event_token, expand_tokens
from dumplib.results import ProcessInfo

PROC = ProcessInfo(pid=4242, name="svc.exe")
WHEN = datetime.datetime(2026, 11, 26, 7, 5, 9)


def test_each_event_names_itself_as_procdump_and_the_docs_say():
    assert TargetEvent("exception", code=0xC0000005).label == "C0000005"
    assert TargetEvent("exception", code=-1073741819).label == "C0000005"  # a signed NTSTATUS
    assert TargetEvent("signal", code=11).label == "SIGSEGV"
    assert TargetEvent("exit", code=3).label == "EXIT3"
    assert TargetEvent("exit", code=0).label == "EXIT0"
    assert TargetEvent("exit", code=0xC0000005).label == "EXITC0000005"
    if sys.platform != "win32":  # signal events are Linux's; Windows Python has no SIGKILL to name
        assert TargetEvent("exit", signal=9).label == "SIGKILL"


def test_the_token_is_filled_by_the_watcher_first_and_is_none_otherwise():
    template = "/d/PROCESSNAME_EXCEPTIONCODE_{event}_PID"
    filled = expand_event_token(template, "SIGSEGV")
    assert filled == "/d/PROCESSNAME_SIGSEGV_SIGSEGV_PID"
    assert expand_tokens(str(filled), PROC, DumpKind.MINI, WHEN) == "/d/svc_SIGSEGV_SIGSEGV_4242"
    assert expand_tokens(template, PROC, DumpKind.MINI, WHEN) == "/d/svc_NONE_NONE_4242"


def test_the_token_is_a_whole_word_and_its_value_one_harmless_component():
    assert expand_event_token("/d/MYEXCEPTIONCODES", "C0000005") == "/d/MYEXCEPTIONCODES"
    assert expand_event_token("/d/x-EXCEPTIONCODE", "../../etc") == "/d/x-_.._etc"
    assert expand_event_token(None, "C0000005") is None
    path = Path("/d/plain")
    assert expand_event_token(path, "C0000005") is path  # no token: the caller's object, untouched


def test_sampled_triggers_name_what_fired():
    assert [t.token() for t in (dumplib.CpuAbove(50), dumplib.CpuBelow(5), dumplib.MemoryAbove(1 << 20),
                                dumplib.ThreadsAbove(3), dumplib.HandlesAbove(3))] == \
        ["CPU", "CPU", "MEMORY", "THREADS", "HANDLES"]
