"""What makes a watcher dump: conditions on sampled figures, and events a debugger sees.

A trigger only answers "does this hold now, and what did you measure?"; how long it must hold, how
many dumps follow, how far apart and how many per window belong to the watcher (``dumplib.watch``).
"""
from __future__ import annotations

import dataclasses
import signal as _signal
from typing import Dict, FrozenSet, Iterable, Optional, Tuple, Union

from .errors import InvalidArgument

__all__ = [
    "Trigger",
    "Sample",
    "CpuAbove",
    "CpuBelow",
    "MemoryAbove",
    "MemoryBelow",
    "ThreadsAbove",
    "HandlesAbove",
    "SignalReceived",
    "ProcessExit",
    "ExceptionRaised",
]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at a process. Figures the OS would not give are None."""

    pid: int
    #: CPU used since the previous sample, in percent of one core (two busy cores: 200).
    cpu_one_core: Optional[float]
    #: The same, in percent of the whole machine (all cores busy: 100), as ProcDump ``-c`` counts.
    cpu_machine: Optional[float]
    #: Linux: resident set size; Windows: private (commit) bytes.
    memory: Optional[int]
    threads: Optional[int]
    #: Open handles on Windows, open file descriptors on Linux.
    handles: Optional[int]
    #: Extra memory figures read only when a trigger asks for them (``pss``, ``private``).
    extra_memory: Tuple[Tuple[str, int], ...] = ()

    def memory_figure(self, measure: str) -> Optional[int]:
        """The memory figure *measure* names (``default``, ``rss``, ``pss``, ``private``); None if not read."""
        if measure == "default":
            return self.memory
        return dict(self.extra_memory).get(measure)


class Trigger:
    """Base class: every trigger has a short description and a kind of firing."""

    #: Seconds the condition must hold without a break before the watcher dumps.
    seconds: float = 0.0
    #: True for triggers a debugger loop answers (signals, exceptions, exit), not the sampler.
    event: bool = False
    #: Fires at most once per process: a threshold of a list, dumped as it is crossed (ProcDump -m 100,200,300).
    once: bool = False

    def describe(self) -> str:
        """What the trigger waits for, in words (shown when watching starts)."""
        raise NotImplementedError

    def measure(self, sample: Sample) -> Optional[float]:
        """The figure this trigger compares (None when the OS would not give it)."""
        raise NotImplementedError

    def holds(self, value: float) -> bool:
        """Whether the figure *value* (from measure) meets the condition at this instant."""
        raise NotImplementedError

    def unit(self) -> str:
        """The unit of the figure, for messages (``%``, ``bytes``...)."""
        return ""

    def token(self) -> str:
        """What ``{event}`` / EXCEPTIONCODE becomes in the name of a dump this trigger took
        (a signal or exception trigger's dump gets the event's own: ``SIGSEGV``, ``C0000005``)."""
        return "NONE"


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(f"{name} must be a positive number, not {value!r}", argument=name, value=value)


class _Cpu(Trigger):
    above = True

    def token(self) -> str:
        return "CPU"

    def __init__(self, percent: float, seconds: float = 10.0, per_cpu: bool = False) -> None:
        _positive("percent", percent, allow_zero=not self.above)
        _positive("seconds", seconds, allow_zero=True)
        if not per_cpu and percent > 100:
            raise InvalidArgument("percent of the whole machine cannot exceed 100; per_cpu=True counts one core",
                                  argument="percent", value=percent)
        self.percent = float(percent)
        self.seconds = float(seconds)
        self.per_cpu = per_cpu

    def measure(self, sample: Sample) -> Optional[float]:
        return sample.cpu_one_core if self.per_cpu else sample.cpu_machine

    def holds(self, value: float) -> bool:
        return value >= self.percent if self.above else value < self.percent

    def unit(self) -> str:
        return "% of one core" if self.per_cpu else "% of all CPUs"

    def describe(self) -> str:
        word = "above" if self.above else "below"
        return f"CPU {word} {self.percent:g}{self.unit()} for {self.seconds:g} s"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.percent:g}, seconds={self.seconds:g}, per_cpu={self.per_cpu})"


class CpuAbove(_Cpu):
    """CPU use at or above *percent* for *seconds* without a break (ProcDump ``-c``; ``-u`` is per_cpu=True).

    *percent* counts the whole machine (100 = every core busy) unless *per_cpu*, where 100 is one
    core and a process busy on two cores measures 200.
    """

    above = True


class CpuBelow(_Cpu):
    """CPU use below *percent* for *seconds* without a break (ProcDump ``-cl``): a hang that went quiet."""

    above = False


#: What a MemoryAbove/MemoryBelow may compare. ``default`` is RSS on Linux and private (commit)
#: bytes on Windows; ``pss`` and ``private`` (Linux) read /proc/PID/smaps_rollup at every sample.
MEMORY_MEASURES = ("default", "rss", "pss", "private")


class _Memory(Trigger):
    above = True

    def token(self) -> str:
        return "MEMORY"

    def __init__(self, bytes: int, measure: str = "default", once: bool = False) -> None:
        if isinstance(bytes, bool) or not isinstance(bytes, int) or bytes <= 0:
            raise InvalidArgument(f"bytes must be a positive whole number, not {bytes!r}", argument="bytes",
                                  value=bytes)
        if measure not in MEMORY_MEASURES:
            raise InvalidArgument(f"measure must be one of {', '.join(MEMORY_MEASURES)}, not {measure!r}",
                                  argument="measure", value=measure)
        self.bytes = bytes
        self.measure_name = measure
        self.once = bool(once)

    def measure(self, sample: Sample) -> Optional[float]:
        value = sample.memory_figure(self.measure_name)
        return None if value is None else float(value)

    def holds(self, value: float) -> bool:
        return value >= self.bytes if self.above else value < self.bytes

    def unit(self) -> str:
        return " bytes"

    def describe(self) -> str:
        word = "above" if self.above else "below"
        what = "memory" if self.measure_name == "default" else self.measure_name.upper()
        return f"{what} {word} {self.bytes} bytes"

    def __repr__(self) -> str:
        once = ", once=True" if self.once else ""
        return f"{type(self).__name__}({self.bytes}, measure={self.measure_name!r}{once})"


class MemoryAbove(_Memory):
    """Memory at or above *bytes* (ProcDump ``-m``). Linux compares the resident set (RSS) unless
    *measure* is ``pss`` (proportional set size) or ``private`` (private clean + dirty); Windows
    compares private (commit) bytes. *once*: dump a process at most once for this threshold, so a
    list of them dumps as each is crossed (``procdump -m 100,200,300`` is
    ``[MemoryAbove(n << 20, once=True) for n in (100, 200, 300)]`` with ``count=3``)."""

    above = True


class MemoryBelow(_Memory):
    """Memory below *bytes* (ProcDump ``-ml``)."""

    above = False


class _Count(Trigger):
    what = ""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument(f"n must be a whole number of at least 1, not {n!r}", argument="n", value=n)
        self.n = n

    def holds(self, value: float) -> bool:
        return value >= self.n

    def unit(self) -> str:
        return f" {self.what}"

    def describe(self) -> str:
        return f"{self.what} at or above {self.n}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n})"


class ThreadsAbove(_Count):
    """At least *n* threads (ProcDump for Linux ``-tc``)."""

    what = "threads"

    def token(self) -> str:
        return "THREADS"

    def measure(self, sample: Sample) -> Optional[float]:
        return None if sample.threads is None else float(sample.threads)


class HandlesAbove(_Count):
    """At least *n* handles on Windows, open file descriptors on Linux (ProcDump for Linux ``-fc``)."""

    what = "handles"

    def token(self) -> str:
        return "HANDLES"

    def measure(self, sample: Sample) -> Optional[float]:
        return None if sample.handles is None else float(sample.handles)


class _Event(Trigger):
    event = True

    def measure(self, sample: Sample) -> Optional[float]:
        return None

    def holds(self, value: float) -> bool:
        return False


SignalSpec = Union[int, str, _signal.Signals]


def _signal_number(spec: SignalSpec) -> int:
    if isinstance(spec, int):
        number = int(spec)
    else:
        text = str(spec).strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            name = text if text.startswith("SIG") else "SIG" + text
            member = getattr(_signal.Signals, name, None) if hasattr(_signal, "Signals") else None
            if member is None:
                raise InvalidArgument(f"{spec!r} is not a signal name or number", argument="signals", value=spec)
            number = int(member)
    if not 1 <= number < 65 or number in (9, 19):
        raise InvalidArgument(f"signal {spec!r} cannot be watched (SIGKILL and SIGSTOP never reach a tracer;"
                              " valid numbers are 1-64)", argument="signals", value=spec)
    return number


class SignalReceived(_Event):
    """Linux: dump when one of *signals* is about to be delivered, before it acts (ProcDump for
    Linux ``-sig``); the signal is then delivered with its original siginfo."""

    def __init__(self, signals: Union[SignalSpec, Iterable[SignalSpec]]) -> None:
        if isinstance(signals, (int, str, _signal.Signals)):
            signals = [signals]
        numbers = frozenset(_signal_number(s) for s in signals)
        if not numbers:
            raise InvalidArgument("SignalReceived needs at least one signal", argument="signals", value=())
        self.signals: FrozenSet[int] = numbers

    def describe(self) -> str:
        names = []
        for n in sorted(self.signals):
            try:
                names.append(_signal.Signals(n).name)
            except ValueError:
                names.append(str(n))
        return "signal " + ",".join(names)

    def __repr__(self) -> str:
        return f"SignalReceived({sorted(self.signals)})"


class ProcessExit(_Event):
    """Dump when the process is about to end (ProcDump ``-t``)."""

    def describe(self) -> str:
        return "process exit"

    def __repr__(self) -> str:
        return "ProcessExit()"


#: Exception names as ProcDump's -f / -fx users write them (case-insensitive; an ``EXCEPTION_`` /
#: ``STATUS_`` prefix, underscores and an ``Exception`` suffix are ignored), with their codes.
EXCEPTION_NAMES: Dict[str, int] = {
    "AccessViolation": 0xC0000005,
    "InPageError": 0xC0000006,
    "InvalidHandle": 0xC0000008,
    "IllegalInstruction": 0xC000001D,
    "NoncontinuableException": 0xC0000025,
    "ArrayBoundsExceeded": 0xC000008C,
    "FltDivideByZero": 0xC000008E,
    "IntDivideByZero": 0xC0000094,
    "IntOverflow": 0xC0000095,
    "PrivInstruction": 0xC0000096,
    "StackOverflow": 0xC00000FD,
    "HeapCorruption": 0xC0000374,
    "StackBufferOverrun": 0xC0000409,
    "GuardPage": 0x80000001,
    "Breakpoint": 0x80000003,
    "SingleStep": 0x80000004,
    "CppEH": 0xE06D7363,
    "Clr": 0xE0434352,
    "ThreadName": 0x406D1388,
    "DbgPrint": 0x40010006,
    "DbgPrintWide": 0x4001000A,
}
#: First-chance "exceptions" that are messages, not faults: naming a thread (MSVC's
#: SetThreadName, 0x406D1388) and debug output (DBG_PRINTEXCEPTION_C / _WIDE_C). `--first-chance`
#: without codes skips them, as ProcDump -e 1 does; naming them includes them.
FIRST_CHANCE_NOISE = frozenset({0x406D1388, 0x40010006, 0x4001000A})
_NAME_KEYS = {k.lower(): v for k, v in EXCEPTION_NAMES.items()}
# The winnt.h spellings where they differ from ProcDump's (EXCEPTION_FLT_DIVIDE_BY_ZERO...).
_NAME_KEYS.update({"floatdividebyzero": 0xC000008E, "integerdividebyzero": 0xC0000094, "integeroverflow": 0xC0000095,
                   "privilegedinstruction": 0xC0000096, "dbgprintexceptionc": 0x40010006,
                   "dbgprintexceptionwidec": 0x4001000A, "cpp": 0xE06D7363})


def exception_code(text: Union[int, str]) -> int:
    """An exception code from a number (``0xC0000005``, ``3221225477``) or a name (``AccessViolation``,
    ``EXCEPTION_STACK_OVERFLOW``, ``CppEH``); InvalidArgument naming the known names otherwise."""
    if isinstance(text, int):
        return text & 0xFFFFFFFF
    word = text.strip()
    try:
        return int(word, 0) & 0xFFFFFFFF
    except ValueError:
        pass
    key = word.lower().replace("_", "").replace("-", "")
    for prefix in ("exception", "status"):
        if key.startswith(prefix) and key[len(prefix):] in _NAME_KEYS:
            key = key[len(prefix):]
    if key.endswith("exception") and key[:-len("exception")] in _NAME_KEYS:
        key = key[:-len("exception")]
    if key in _NAME_KEYS:
        return _NAME_KEYS[key]
    raise InvalidArgument(f"{text!r} is not an exception code or name; give a code like 0xC0000005 or one of: "
                          + ", ".join(EXCEPTION_NAMES), argument="exception", value=text)


class ExceptionRaised(_Event):
    """Windows: dump at an exception whose code is in *codes* (any when None) and not in *exclude*
    (ProcDump ``-f`` / ``-fx``); codes may be numbers or names (``"AccessViolation"``, ``"CppEH"``,
    ``"StackOverflow"``, see EXCEPTION_NAMES). First-chance exceptions count unless *first_chance*
    is False (then only unhandled ones, ProcDump ``-e`` without ``1``); a first-chance thread name
    or debug-output message (FIRST_CHANCE_NOISE) counts only when *codes* names it."""

    def __init__(self, codes: Optional[Iterable[Union[int, str]]] = None, first_chance: bool = True,
                 exclude: Iterable[Union[int, str]] = ()) -> None:
        self.codes: Optional[FrozenSet[int]] = None if codes is None else frozenset(exception_code(c) for c in codes)
        self.exclude: FrozenSet[int] = frozenset(exception_code(c) for c in exclude)
        self.first_chance = first_chance

    def matches(self, code: int, first_chance: bool) -> bool:
        """Whether an exception *code*, first chance or not, is one this trigger dumps."""
        code &= 0xFFFFFFFF
        if first_chance and not self.first_chance:
            return False
        if code in self.exclude:
            return False
        if self.codes is None:
            return not (first_chance and code in FIRST_CHANCE_NOISE)
        return code in self.codes

    def describe(self) -> str:
        codes = "any" if self.codes is None else ",".join(f"0x{c:08X}" for c in sorted(self.codes))
        but = f" but {','.join(f'0x{c:08X}' for c in sorted(self.exclude))}" if self.exclude else ""
        return f"exception {codes}{but}" + (" (first chance too)" if self.first_chance else " (second chance)")

    def __repr__(self) -> str:
        return f"ExceptionRaised({self.codes and sorted(self.codes)}, first_chance={self.first_chance})"
