"""Watch processes and dump them when a trigger says so (ProcDump's everyday use).

The watcher never writes a dump itself: every dump is ``create_dump``, so the disk guard, naming,
kinds, compression, sidecar and retention apply to each. What belongs to the watcher is when:
sampling, how long a condition must hold, ``count`` dumps ``interval`` seconds apart per process,
and a rate limit over all processes so a flapping trigger cannot become a dump storm.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import subprocess
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

from ._psutil import psutil  # not bare psutil: on Windows its import enables SeDebugPrivilege (the shim puts it back)

from ._platform import EventSource, Firing, HandOver, Platform, WatchSupport
from .api import create_dump
from .remote import is_remote
from .errors import (AccessDenied, BitnessMismatch, DumpError, DumpFailed, InsufficientDiskSpace, InvalidArgument,
                     ProcessNotFound, TargetRefused)
from .kinds import DumpKind
from .placement import PathLike, expand_event_token
from .results import DumpResult
from .targets import Target, _name_key, resolve_target
from .triggers import (CpuAbove, CpuBelow, ExceptionRaised, HandlesAbove, MemoryAbove, MemoryBelow, ProcessExit, Sample,
                       SignalReceived, ThreadsAbove, Trigger)

__all__ = ["watch", "dump_all", "WatchEvent", "EventSource", "Sample", "Trigger", "CpuAbove", "CpuBelow", "MemoryAbove",
           "MemoryBelow", "ThreadsAbove", "HandlesAbove", "SignalReceived", "ProcessExit", "ExceptionRaised"]

#: ProcDump -s: seconds between two dumps of one process.
DEFAULT_INTERVAL = 10.0
#: How often figures are sampled (CPU is averaged over this period).
DEFAULT_SAMPLE_EVERY = 1.0


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """Something the watcher did or saw; the CLI prints one line (or one JSON object) per event.

    *event* is one of ``watching`` (a process is now watched), ``waiting`` (for a process of a
    name), ``fired`` (a trigger held; *value* is what it measured), ``dumped`` (*result*),
    ``refused`` (the disk guard said no; watching goes on), ``rate-limited``, ``failed`` (a dump
    failed for another reason), ``exited`` (a watched process ended), ``timeout``, ``done``.
    """

    event: str
    pid: Optional[int] = None
    name: Optional[str] = None
    trigger: Optional[str] = None
    value: Optional[float] = None
    unit: Optional[str] = None
    message: Optional[str] = None
    result: Optional[DumpResult] = None
    error: Optional[Dict[str, Any]] = None
    at: float = dataclasses.field(default_factory=time.time)

    def to_dict(self) -> Dict[str, Any]:
        """The event as a JSON-friendly dict, unknown facts left out (``dumplib watch --json``)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "result"}
        if self.result is not None:
            out["result"] = self.result.to_dict()
        return out


def _event_support(platform: Platform) -> WatchSupport:
    support = platform.watch_events()
    if support is None:
        raise InvalidArgument("this platform cannot watch for signals, exceptions or exit", argument="triggers",
                              value=None)
    return support


class RateLimit:
    """At most *dumps* dumps in any *seconds* window, across every watched process."""

    def __init__(self, dumps: int, seconds: float) -> None:
        if isinstance(dumps, bool) or not isinstance(dumps, int) or dumps < 1 or seconds <= 0:
            raise InvalidArgument(f"max_dumps_per must be (N >= 1, seconds > 0), not {(dumps, seconds)!r}",
                                  argument="max_dumps_per", value=(dumps, seconds))
        self.dumps = dumps
        self.seconds = float(seconds)
        self._times: Deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.seconds:
            self._times.popleft()
        return len(self._times) < self.dumps

    def record(self, now: float) -> None:
        self._times.append(now)


#: How long reading a process's smaps_rollup (pss, private) may take before the sample goes without it.
EXTRA_MEMORY_SECONDS = 5.0


class _Sampler:
    """Figures of one process from psutil; CPU as the share of wall time since the last sample."""

    def __init__(self, proc: psutil.Process, extra_memory: Sequence[str], platform: Platform,
                 cpu_seconds: Optional[Callable[[int], Optional[float]]] = None) -> None:
        self.proc = proc
        self.platform = platform
        self.cpu_seconds = cpu_seconds
        self.extra_memory = tuple(m for m in extra_memory if m not in ("default", "rss"))
        self.wants_rss = "rss" in extra_memory
        self._last: Optional[Tuple[float, float]] = None
        self._cpus = psutil.cpu_count() or 1

    def sample(self) -> Sample:
        proc = self.proc
        with proc.oneshot():
            used = self.cpu_seconds(proc.pid) if self.cpu_seconds is not None else None
            if used is None:
                times = proc.cpu_times()
                used = times.user + times.system
            now = time.monotonic()
            cpu = None
            if self._last is not None and now > self._last[0]:
                cpu = max(0.0, 100.0 * (used - self._last[1]) / (now - self._last[0]))
            self._last = (now, used)
            mem = proc.memory_info()
            threads = proc.num_threads()
            handles = self.platform.open_handles(proc)
        memory = self.platform.watched_memory(mem)
        extra = [("rss", mem.rss)] if self.wants_rss else []
        if self.extra_memory:
            from ._bounded import call_within, unanswered

            try:  # smaps_rollup takes the process's mmap lock: held for good, this sample has no such figure
                full = call_within(proc.memory_full_info, EXTRA_MEMORY_SECONDS, ("mm", proc.pid))
            except Exception as exc:  # or no thread to read it in (a pids limit): unknown this time too
                if not unanswered(exc):
                    raise
                full = None
            for name in self.extra_memory if full is not None else ():
                value = getattr(full, "uss" if name == "private" else name, None)
                if value is not None:
                    extra.append((name, int(value)))
        return Sample(pid=proc.pid, cpu_one_core=cpu, cpu_machine=None if cpu is None else cpu / self._cpus,
                      memory=int(memory), threads=threads, handles=handles, extra_memory=tuple(extra))


class _Watched:
    """One process under watch: its sampler, how long each trigger has held, its dumps."""

    def __init__(self, proc: psutil.Process, name: str, sampled: Sequence[Trigger], platform: Platform) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.name = name
        measures = [getattr(t, "measure_name", "default") for t in sampled]
        support = platform.watch_events() if any(isinstance(t, (CpuAbove, CpuBelow)) for t in sampled) else None
        self.sampler = _Sampler(proc, measures, platform, support.cpu_seconds if support is not None else None)
        self.held_since: Dict[int, Optional[float]] = {i: None for i in range(len(sampled))}
        self.dumps = 0
        self.quiet_until = 0.0
        self.source: Optional[EventSource] = None
        self.finished = False
        self.busy = False
        #: The event source reported the process's exit (ProcessExit), dumped or not.
        self.exit_seen = False
        #: Indexes of the sampled ``once`` triggers (thresholds of a list) this process has crossed.
        self.crossed: Set[int] = set()

    def alive(self) -> bool:
        try:
            return self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


class _Watcher:
    def __init__(self, platform: Platform, triggers: Sequence[Trigger], *, count: int, interval: float,
                 sample_every: float,
                 rate: Optional[RateLimit], dump: Callable[[int, Firing], DumpResult], on_dump: Optional[Callable[[DumpResult], Any]],
                 on_event: Optional[Callable[[WatchEvent], Any]], stop_on_refusal: bool) -> None:
        self.platform = platform
        self.sampled = [t for t in triggers if not t.event]
        self.events = [t for t in triggers if t.event]
        self.count = count
        self.interval = interval
        self.sample_every = sample_every
        self.rate = rate
        self.dump = dump
        self.on_dump = on_dump
        self.on_event = on_event
        self.stop_on_refusal = stop_on_refusal
        self.on_sample: Optional[Callable[[Sample], Any]] = None
        self.results: List[DumpResult] = []
        self.watched: Dict[Tuple[int, float], _Watched] = {}
        self.lock = threading.RLock()
        self.failure: Optional[BaseException] = None
        self.stop_requested = threading.Event()
        #: Set when the watch ends with a dump under way (interrupted, or at its timeout): the dump gives up
        #: at its next read (abandon_check).
        self.abandon = _Abandon()
        #: The loop ended because the timeout passed.
        self.timed_out = False
        #: Watching every process of a name: one refused for good is reported and the others are watched on.
        self.many = False
        #: A look for processes by name failed once (no-resources): said once, not at every sample.
        self.scan_failed = False

    # -- events ------------------------------------------------------------------------------------
    def emit(self, event: str, w: Optional[_Watched] = None, **facts: Any) -> None:
        if self.on_event is not None:
            self.on_event(WatchEvent(event, pid=w.pid if w else facts.pop("pid", None),
                                     name=w.name if w else facts.pop("name", None), **facts))

    # -- adding processes --------------------------------------------------------------------------
    def add(self, proc: psutil.Process, name: str, by_name: bool = False) -> Optional[_Watched]:
        """Watch *proc*; *by_name* (``all``/``wait_for``): a process that cannot be watched is reported, not raised."""
        try:
            key = (proc.pid, proc.create_time())
        except psutil.Error:
            return None
        if key in self.watched:
            return None
        w = _Watched(proc, name, self.sampled, self.platform)
        if self.events:
            w.source = _event_support(self.platform).source(proc.pid, self.events,
                                               lambda pid, firing, hand: self._on_source(w, firing, hand))
        self.watched[key] = w
        if w.source is not None:
            try:
                w.source.start()
            except Exception as exc:
                if not by_name or _passes(exc, w) is None:
                    raise
                w.source, w.finished = None, True
                self.emit("failed", w, message=f"not watched: {exc}",
                          error={"type": type(exc).__name__, **(exc.details() if isinstance(exc, DumpError) else {})})
                return None
        what = "; ".join(t.describe() for t in self.sampled + self.events)
        self.emit("watching", w, message=what)
        try:
            w.sampler.sample()  # primes the CPU figure
        except psutil.Error:
            pass
        return w

    # -- firing ------------------------------------------------------------------------------------
    def _on_source(self, w: _Watched, firing: Firing, hand_over: HandOver) -> None:
        """An event trigger fired on the source's thread: dump there, while it holds the process."""
        if isinstance(firing.trigger, ProcessExit):
            w.exit_seen = True
        try:
            self.fire(w, firing, lambda: hand_over(lambda: self.dump(w.pid, firing)))
        except BaseException as exc:  # surfaced on the main thread, which stops the watch
            self.failure = exc
            self.stop_requested.set()

    def fire(self, w: _Watched, firing: Firing, take: Callable[[], DumpResult]) -> None:
        """Dump *w* for *firing* (on an event source's thread, or the main loop's) and report it.

        Each outcome's event is emitted before _after() marks the process done: the main loop ends the
        watch ("done") once every process is done, and an event source's thread emitting after that
        mark lost the race under load: "done" came first and the CLI exited without the "dumped"."""
        trig = firing.trigger
        if self.abandon.is_set() or not self._may_dump(w, firing):
            return
        result: Optional[DumpResult] = None
        finished = False
        ended = None  # when take() returned: the interval runs from the dump's end, not its receivers'
        try:
            try:
                result = take()
            except InsufficientDiskSpace as exc:
                ended = time.monotonic()
                self.emit("refused", w, trigger=trig.describe(), message=str(exc),
                          error={"type": type(exc).__name__, **exc.details()})
                if self.stop_on_refusal:
                    raise
                return
            except Exception as exc:
                ended = time.monotonic()
                if isinstance(exc, DumpFailed) and exc.reason == "cancelled" and self.abandon.is_set():
                    finished = True
                    self.emit("abandoned", w, trigger=trig.describe(), message=str(exc),
                              error={"type": type(exc).__name__, **exc.details()})
                    return
                verdict = _passes(exc, w)
                if verdict is None or (verdict == "process-done" and not self.many and w.alive()):
                    # One process watched and refused for good: the watch has nothing left to do but say why.
                    raise
                finished = verdict == "process-done"
                if isinstance(exc, DumpError):
                    error = {"type": type(exc).__name__, **exc.details()}
                    text = str(exc)
                else:  # the process went away under a step that does not say so (a /proc read)
                    error = {"type": "ProcessNotFound", "pid": w.pid}
                    text = (f"process {w.pid} ended while it was being dumped ({type(exc).__name__}: {exc});"
                            " nothing was kept")
                self.emit("failed", w, trigger=trig.describe(), message=text, error=error)
                return
            ended = time.monotonic()
            self.emit("dumped", w, trigger=trig.describe(), result=result, message=result.path)
            if self.on_dump is not None:
                self.on_dump(result)
        finally:
            self._after(w, result, finished=finished, ended=ended)

    def _may_dump(self, w: _Watched, firing: Firing) -> bool:
        """Report the firing and decide (count, interval, rate limit); the lock is never held while
        dumping, since a dump may need another thread (an event source) that may be firing too."""
        trig = firing.trigger
        with self.lock:
            now = time.monotonic()
            self.emit("fired", w, trigger=trig.describe(), value=firing.value, unit=trig.unit().strip() or None,
                      message=firing.detail)
            if w.dumps >= self.count or w.finished or w.busy:
                return False
            if now < w.quiet_until:
                self.emit("skipped", w, trigger=trig.describe(),
                          message=f"within {self.interval:g} s of the previous dump of this process")
                return False
            if self.rate is not None and not self.rate.allow(now):
                self.emit("rate-limited", w, trigger=trig.describe(),
                          message=f"already {self.rate.dumps} dumps in the last {self.rate.seconds:g} s")
                return False
            if self.rate is not None:
                self.rate.record(now)
            w.busy = True
            return True

    def _after(self, w: _Watched, result: Optional[DumpResult], finished: bool = False,
               ended: Optional[float] = None) -> None:
        with self.lock:
            w.busy = False
            w.quiet_until = (time.monotonic() if ended is None else ended) + self.interval
            if result is not None:
                w.dumps += 1
                self.results.append(result)
            if finished or w.dumps >= self.count:
                w.finished = True

    def take_for(self, w: _Watched, firing: Firing) -> Callable[[], DumpResult]:
        if w.source is None:
            return lambda: self.dump(w.pid, firing)
        source = w.source
        return lambda: source.dump_now(lambda: self.dump(w.pid, firing))

    def tick(self, w: _Watched) -> None:
        """Sample one process and fire the first sampled trigger that has held long enough."""
        if w.finished or not self.sampled:
            return
        try:
            sample = w.sampler.sample()
        except psutil.Error:
            return
        if self.on_sample is not None:
            self.on_sample(sample)
        now = time.monotonic()
        for i, trig in enumerate(self.sampled):
            if i in w.crossed:
                continue
            value = trig.measure(sample)
            if value is None or not trig.holds(value):
                w.held_since[i] = None
                continue
            since = w.held_since[i]
            if since is None:
                # CPU is an average over the last period: it has held since that period began.
                since = w.held_since[i] = now - (self.sample_every if trig.seconds else 0.0)
            if now - since + 1e-6 >= trig.seconds and now >= w.quiet_until:
                if trig.once:  # every threshold this figure is past is crossed now, by one dump
                    w.crossed.update(j for j, t in enumerate(self.sampled) if t.once and _holds(t, sample))
                firing = Firing(trig, value)
                self.fire(w, firing, self.take_for(w, firing))
                for j in w.held_since:
                    w.held_since[j] = None  # the next dump needs the condition to hold anew
                return

    def stop_sources(self) -> None:
        for w in self.watched.values():
            if w.source is not None:
                w.source.stop()


def _holds(trig: Trigger, sample: Sample) -> bool:
    value = trig.measure(sample)
    return value is not None and trig.holds(value)


def _matching(name: str, platform: Platform) -> List[Tuple[psutil.Process, str]]:
    from .targets import _exact_for

    wanted = _name_key(name.strip(), platform.names_fold_case)
    me = os.getpid()
    out = []
    for pid, pname in sorted(_exact_for(wanted, platform.process_table(), platform).items()):
        if pid != me and _name_key(pname, platform.names_fold_case) == wanted:
            try:
                out.append((psutil.Process(pid), pname))
            except psutil.Error:
                continue
    return out


def _scan(watcher: "_Watcher", name: str) -> List[Tuple[psutil.Process, str]]:
    """The processes named *name* now, for a watch by name; none this time when the names could not be
    read (no thread to read a long name's command line in: a pids limit), said once, tried again at the
    next sample. A stuck read makes the name unknown, not this; a name read wrong would say "none"."""
    from ._bounded import unanswered

    try:
        return _matching(name, watcher.platform)
    except Exception as exc:
        if not unanswered(exc):
            raise
        if not watcher.scan_failed:
            watcher.scan_failed = True
            watcher.emit("failed", name=name, message=f"could not look for processes named {name!r} this time: {exc};"
                                           " looking again at every sample")
        return []


def _launch(argv: Sequence[str], held: bool, platform: Platform) -> "subprocess.Popen[bytes]":
    if not argv:
        raise InvalidArgument("launch needs a command", argument="launch", value=list(argv))
    if held:
        return _event_support(platform).launch_held(list(argv))
    try:
        return subprocess.Popen(list(argv))
    except OSError as exc:
        from ._bounded import refused_fork

        if refused_fork(exc):  # the system's refusal, not the command's fault
            raise DumpFailed.no_resources(f"the command {argv[0]!r}", exc.strerror, exc.errno) from None
        raise InvalidArgument(f"cannot start {argv[0]!r}: {exc.strerror}", argument="launch", value=list(argv)) from None


def watch(
    target: Optional[Target] = None,
    triggers: Union[Trigger, Sequence[Trigger]] = (),
    *,
    wait_for: Optional[str] = None,
    launch: Optional[Sequence[str]] = None,
    all: Optional[str] = None,
    count: int = 1,
    interval: float = DEFAULT_INTERVAL,
    sample_every: float = DEFAULT_SAMPLE_EVERY,
    path: Optional[PathLike] = None,
    kind: Union[DumpKind, str] = DumpKind.MINI,
    timeout: Optional[float] = None,
    on_dump: Optional[Callable[[DumpResult], Any]] = None,
    on_event: Optional[Callable[[WatchEvent], Any]] = None,
    on_sample: Optional[Callable[[Sample], Any]] = None,
    max_dumps_per: Optional[Tuple[int, float]] = None,
    stop_on_refusal: bool = False,
    **dump_options: Any,
) -> List[DumpResult]:
    """Watch a process (or every process of a name) and dump it when a trigger fires.

    Exactly one of *target* (pid or name), *wait_for* (a name: wait until it starts, ProcDump
    ``-w``), *launch* (a command to start and watch, ProcDump ``-x``) or *all* (every process of
    that name, present and future) says what to watch. *triggers* are ``CpuAbove``, ``MemoryAbove``,
    ``ThreadsAbove``, ``SignalReceived``... (any one firing dumps). Each process gets up to *count*
    dumps, at least *interval* seconds apart (ProcDump ``-n`` / ``-s``); *max_dumps_per* ``(N,
    seconds)`` caps dumps over all processes. Figures are sampled every *sample_every* seconds.

    Every dump is ``create_dump(pid, path, kind, **dump_options)``; without a *snapshot* option,
    Windows dumps are written from a snapshot where Windows has them (``snapshot="auto"``: the
    target is suspended only while it is taken). When the disk guard refuses one,
    a ``refused`` event is reported and watching goes on (*stop_on_refusal* re-raises instead).
    *on_dump* gets each DumpResult, *on_event* each WatchEvent, *on_sample* each Sample taken. Returns the results when every
    watched process has had its *count* dumps or ended, or at *timeout* (None: no limit; *all*
    watches until the timeout; a dump under way then on an event source's thread is abandoned at its
    next read, as at an interruption).
    KeyboardInterrupt detaches from everything first, then propagates.
    """
    trigger_list = [triggers] if isinstance(triggers, Trigger) else list(triggers)
    if not trigger_list:
        raise InvalidArgument("watch needs at least one trigger", argument="triggers", value=[])
    chosen = [x for x in (target, wait_for, launch, all) if x is not None]
    if len(chosen) != 1:
        raise InvalidArgument("give exactly one of target, wait_for, launch or all", argument="target",
                              value=chosen)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"count must be at least 1, not {count!r}", argument="count", value=count)
    if interval < 0 or sample_every <= 0:
        raise InvalidArgument("interval must be >= 0 and sample_every > 0", argument="interval",
                              value=(interval, sample_every))
    rate = RateLimit(*max_dumps_per) if max_dumps_per is not None else None
    kind = DumpKind.parse(kind)
    from ._switch import current  # a public entry point: it picks the platform and passes it down

    platform = current()
    dump_options.setdefault("snapshot", platform.watch_snapshot)
    _check_names_differ(path, count=count, interval=interval, every=all is not None)
    if is_remote(path):
        from ._egress import check_destination  # an SDK: only for a URL

        check_destination(str(path))  # refuse to start (RemoteDestinationError) rather than fail at each dump

    abandon = _Abandon()
    progress = dump_options.pop("progress", None)

    def dump(pid: int, firing: Firing) -> DumpResult:
        event = firing.event
        label = event.label if event is not None else firing.trigger.token()
        return create_dump(pid, expand_event_token(path, label), kind, _event=event,
                           progress=_abandon_check(pid, abandon, progress), **dump_options)

    watcher = _Watcher(platform, trigger_list, count=count, interval=interval, sample_every=sample_every, rate=rate,
                       dump=dump, on_dump=on_dump, on_event=on_event, stop_on_refusal=stop_on_refusal)
    watcher.abandon = abandon
    watcher.many = all is not None
    watcher.on_sample = on_sample
    deadline = None if timeout is None else time.monotonic() + timeout
    launched = None
    try:
        if launch is not None:
            launched = _launch(launch, held=bool(watcher.events), platform=platform)
            proc = psutil.Process(launched.pid)
            watcher.add(proc, os.path.basename(launch[0]))
            if watcher.events:
                _event_support(platform).let_run(launched)  # attached before its first instruction: now let it run
        elif target is not None:
            info = resolve_target(target, platform)
            watcher.add(psutil.Process(info.pid), info.name)
        elif wait_for is not None:
            watcher.emit("waiting", name=wait_for, message=f"waiting for a process named {wait_for}")
        else:
            watcher.emit("waiting", name=all, message=f"watching every process named {all}, present and future")
        _loop(watcher, deadline, wait_for=wait_for, every=all)
        if watcher.timed_out:
            # The timeout bounds the watch: a dump under way on an event source's thread is given up at its
            # next read as at an interruption, not waited for (a full dump can take minutes), nor left
            # running as this program ends (its partial file left behind). Windows' debugger cancels its
            # write there too.
            abandon.set_for(f"the watch's timeout ({timeout:g} s) passed")
    except BaseException:
        abandon.set_for("the watch was interrupted")  # a dump under way (on a source's thread) gives up at its next read
        _let_go(watcher)  # a second interruption meanwhile is dropped: this one is already on its way
        raise
    again = _let_go(watcher)
    if again is not None:
        raise again
    if watcher.failure is not None:
        raise watcher.failure
    return watcher.results



_TIME_TOKEN = re.compile(r"\{time\}|(?<![A-Za-z0-9])HHMMSS(?![A-Za-z0-9])")
_PID_TOKEN = re.compile(r"\{pid\}|(?<![A-Za-z0-9])PID(?![A-Za-z0-9])")


def _check_names_differ(path: Optional[PathLike], *, count: int, interval: float, every: bool) -> None:
    """Refuse, before anything is watched, a file name that would be the same for two dumps: the
    second would meet the first (DumpExists) and end the watch. A directory gets a fresh name per dump."""
    if path is None:
        return
    text = os.fspath(path)
    if not isinstance(text, str) or text == "-" or text.endswith(("/", os.sep)) or os.path.isdir(text):
        return
    why = tokens = None
    if count > 1 and not (_TIME_TOKEN.search(text) and interval >= 1):
        why = (f"count={count} dumps of one process" + (" less than a second apart" if _TIME_TOKEN.search(text)
                                                       else ""))
        tokens = "{pid} and {time} in the file name (with an interval of at least 1 s)"
    elif every and not _PID_TOKEN.search(text):
        why = "dumps of every process of a name"
        tokens = "{pid} in the file name" + (" (and {time}, with an interval of at least 1 s)" if count > 1 else "")
    if why:
        raise InvalidArgument(f"{text!r} would name {why} alike, so only the first could be written: give a"
                              f" directory (each dump then gets a name of its own), or put {tokens}",
                              argument="path", value=text)


#: Refusals of one dump that may not recur (TargetRefused reasons): reported, and the process is
#: watched on. Documented in docs/watch.md ("When a dump fails").
PASSING_REFUSALS = ("thread-not-stopping", "traced", "snapshot-unavailable", "memory-map-locked")
#: DumpFailed reasons that end the watch: the output itself is gone, so every later dump would fail too.
FATAL_FAILURES = ("broken-pipe",)


def _passes(exc: Exception, w: _Watched) -> Optional[str]:
    """How a failed dump of one process affects the watch: None ends it (a mistake in the options or
    the output, which every later dump would meet too); ``"watch-on"`` reports it and keeps watching
    the process; ``"process-done"`` reports it and stops watching that process only."""
    # ESRCH from a /proc read: the process is past the point where it can be read, though it may
    # not look dead yet (an exiting task keeps its state until it is a zombie).
    if isinstance(exc, (ProcessNotFound, ProcessLookupError)) or not w.alive():
        return "process-done"  # gone at whatever step: an event for that process alone
    if isinstance(exc, TargetRefused):
        return "watch-on" if exc.reason in PASSING_REFUSALS else "process-done"
    if isinstance(exc, (AccessDenied, BitnessMismatch)):
        return "process-done"
    if isinstance(exc, DumpFailed):
        return None if exc.reason in FATAL_FAILURES else "watch-on"
    return None


class _Abandon(threading.Event):
    """Set when the watch ends with dumps under way; *why* is said in each abandoned dump's error."""

    why = "the watch was interrupted"

    def set_for(self, why: str) -> None:
        if not self.is_set():  # the first cause stands (a Ctrl-C during the timeout's letting go)
            self.why = why
        self.set()


def _abandon_check(pid: int, abandon: "_Abandon",
                   progress: Optional[Callable[[int, float], Any]]) -> Callable[[int, float], Any]:
    """create_dump's progress callback: raises DumpFailed reason ``cancelled`` once the watch is
    interrupted, so the dump lets its target go and removes its partial file; then the caller's own."""
    def check(written: int, elapsed: float) -> Any:
        if abandon.is_set():
            raise DumpFailed(f"the dump of process {pid} was abandoned after {elapsed:.1f} s because {abandon.why};"
                             " what it had written was removed, and nothing was kept",
                             pid=pid, reason="cancelled")
        return progress(written, elapsed) if progress is not None else None
    return check


def _let_go(watcher: _Watcher) -> Optional[BaseException]:
    """Stop every event source (each lets its process go, re-delivering what it held). A Ctrl-C,
    SIGTERM or SIGHUP arriving meanwhile must not cut this short, or a process handed over for a
    dump would stay stopped: the work goes on, and the first such interruption is returned."""
    again: Optional[BaseException] = None
    while True:
        try:
            watcher.stop_sources()
            return again
        except BaseException as exc:
            watcher.abandon.set_for("the watch was interrupted")
            again = again or exc


def _loop(watcher: _Watcher, deadline: Optional[float], *, wait_for: Optional[str], every: Optional[str]) -> None:
    next_tick = time.monotonic()
    while not watcher.stop_requested.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            watcher.timed_out = True
            watcher.emit("timeout", message="the timeout passed")
            return
        if wait_for is not None and not watcher.watched:
            found = _scan(watcher, wait_for)
            if found:
                watcher.add(*found[0], by_name=True)
        if every is not None:
            for proc, name in _scan(watcher, every):
                watcher.add(proc, name, by_name=True)
        for key, w in list(watcher.watched.items()):
            if w.busy:
                # A dump of it is under way on an event source's thread: its outcome is told first, then
                # the process is counted (ended or not). Judged here meanwhile, a process that died of the
                # very signal being dumped was "exited" and the watch "done" before its "dumped", and
                # watch() returned without that dump in its results.
                continue
            if w.finished and (w.source is None or w.source.ended):
                if every is not None and not w.alive():
                    del watcher.watched[key]  # a long watch of a name must not grow with every process seen
                continue
            with watcher.lock:  # judged with no dump starting meanwhile (_may_dump takes the lock to begin one)
                gone = not w.busy and (not w.alive() or (w.source is not None and w.source.ended))
                newly = gone and not w.finished
                if gone:
                    w.finished = True  # a firing from now on dumps nothing: the process is over
            if gone:
                if newly:
                    watcher.emit("exited", w, message=_ended(watcher, w))
                continue
            if w.busy:
                continue  # a dump began between the look above and this one
            watcher.tick(w)
        if every is None and watcher.watched and all(w.finished and not w.busy for w in watcher.watched.values()):
            watcher.emit("done", message="every watched process has its dumps or has ended")
            return
        next_tick += watcher.sample_every
        pause = next_tick - time.monotonic()
        if pause < 0:
            next_tick = time.monotonic()  # fell behind (a long dump): do not try to catch up
            pause = 0
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        _nap(watcher.stop_requested, pause)


def _nap(stop: threading.Event, seconds: float) -> None:
    """Sleep up to *seconds*, ending early once *stop* is set. Polled, not Event.wait(): a Ctrl-C or
    SIGTERM landing inside a lock wait can leave the lock in a state the way out trips over."""
    end = time.monotonic() + seconds
    while not stop.is_set():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.25))


def _ended(watcher: _Watcher, w: _Watched) -> str:
    if any(isinstance(t, ProcessExit) for t in watcher.events) and not w.exit_seen:
        # SIGKILL is caught at exit on the kernels tested; one that skips the exit stop ends here.
        return "the process ended without its exit being seen (nothing stopped it on the way out), so it was not dumped"
    return "the process ended"


def dump_all(name: str, path: Optional[PathLike] = None, kind: Union[DumpKind, str] = DumpKind.MINI,
             **dump_options: Any) -> List[Union[DumpResult, DumpError]]:
    """Dump every process named *name* now (``dumplib dump --all NAME``), each to its own file.

    Returns one entry per process, in pid order: its DumpResult, or the DumpError that stopped it
    (one process refusing, exiting or not fitting does not stop the others). ProcessNotFound when
    no process has that name; InvalidArgument, before any process is looked at, for a file *path*
    without ``{pid}`` (every dump would get that one name, and only the first could be written).
    """
    from ._switch import current

    _check_names_differ(path, count=1, interval=0.0, every=True)  # before any process is touched
    found = _matching(name, current())
    if not found:
        raise ProcessNotFound(name)
    out: List[Union[DumpResult, DumpError]] = []
    for proc, _ in found:
        try:
            out.append(create_dump(proc.pid, path, kind, **dump_options))
        except DumpError as exc:
            out.append(exc)
    return out
