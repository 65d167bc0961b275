"""`dumplib watch` (dump when a trigger fires) and `dumplib dump --all NAME`, over the public API only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import typer

import dumplib

from . import _fastparse
from ._common import (Exit, FirstSignal, Terminated, echo, exit_code_for_signal, human_bytes, last_words,
                      on_ending_signals, parse_duration, parse_flags, parse_size, parse_snapshot, parse_target,
                      restore_signals, result_line, run, usage_error)

JsonOpt = typer.Option(False, "--json", help="Print each event (or the error) as one JSON object.")
DebugOpt = _fastparse.DebugOpt.to_typer(typer)

#: An --exec command gets this long before it is killed, so a stuck hook cannot stop the watch.
EXEC_TIMEOUT = 300.0
#: How long the watcher's end waits for its hooks' threads to have killed hooks they had just started.
HOOK_END_PATIENCE = 10.0


def _triggers(cpu: Optional[float], below: bool, per_cpu: bool, seconds: float, memory: Optional[str],
              memory_measure: str, threads: Optional[int], handles: Optional[int], exception: Optional[str],
              first_chance: bool, signals: Optional[str], on_exit: bool,
              exception_exclude: Optional[str] = None) -> List[dumplib.Trigger]:
    out: List[dumplib.Trigger] = []
    if cpu is not None:
        out.append((dumplib.CpuBelow if below else dumplib.CpuAbove)(cpu, seconds=seconds, per_cpu=per_cpu))
    if memory is not None:
        sizes = [parse_size(m, "memory") for m in memory.split(",")]
        if len(sizes) == 1:
            out.append((dumplib.MemoryBelow if below else dumplib.MemoryAbove)(sizes[0], measure=memory_measure))
        elif below:
            raise dumplib.InvalidArgument("--below takes one --memory figure, not a list", argument="memory",
                                          value=memory)
        else:  # ProcDump -m 100,200,300: one dump as each is crossed; the highest first, so a leap past
            # several thresholds between two looks is one dump, of the highest
            out.extend(dumplib.MemoryAbove(s, measure=memory_measure, once=True)
                       for s in sorted(set(sizes), reverse=True))
    if threads is not None:
        out.append(dumplib.ThreadsAbove(threads))
    if handles is not None:
        out.append(dumplib.HandlesAbove(handles))
    if exception is not None or exception_exclude:
        words = (exception or "any").strip()
        codes = None if words.lower() in ("", "any") else [c for c in words.split(",") if c.strip()]
        exclude = [c for c in (exception_exclude or "").split(",") if c.strip()]
        out.append(dumplib.ExceptionRaised(codes, first_chance=first_chance, exclude=exclude))
    if signals:
        out.append(dumplib.SignalReceived([s.strip() for s in signals.split(",") if s.strip()]))
    if on_exit:
        out.append(dumplib.ProcessExit())
    if not out:
        raise dumplib.InvalidArgument("say when to dump: --cpu, --memory, --threads, --handles, --exception,"
                                      " --signal or --on-exit", argument="trigger", value=None)
    return out


def _rate(text: Optional[str]) -> Optional[Tuple[int, float]]:
    if text is None:
        return None
    dumps, _, seconds = text.partition("/")
    try:
        return int(dumps), float(seconds)
    except ValueError:
        raise dumplib.InvalidArgument(f"--rate {text!r}: write it as DUMPS/SECONDS, e.g. 5/3600",
                                      argument="rate", value=text) from None


class _Printer:
    """One line per event (or one JSON object per event with --json); dumps also run --exec."""

    def __init__(self, as_json: bool, exec_cmd: Optional[str], status_line: bool = False) -> None:
        self.as_json = as_json
        self.exec_cmd = exec_cmd
        self.status_line = status_line
        self._drawn = False
        #: Dumps written (kept) and dumps abandoned at an interruption (partial file removed).
        self.kept: List[str] = []
        self.abandoned = 0
        #: Hooks running and their threads, from several threads (each source's, the main one): under _lock,
        #: with _closing, so that a hook started as the watcher ends is killed, never left behind.
        self._lock = threading.Lock()
        self._closing = False
        self._hooks: Set["subprocess.Popen[bytes]"] = set()
        #: One per hook thread, set as it ends. Not Thread.is_alive()/join(): a signal's exception raised
        #: inside join() (the ending signals raise on the main thread) leaves Python 3.11's thread marked
        #: stopped while it runs on, and a hook it had just started then outlived the watcher.
        self._hook_ends: List[threading.Event] = []

    def wait_hooks(self) -> None:
        """Let the hooks of the watch's dumps finish (each bounded by EXEC_TIMEOUT), those started while
        waiting too: the watch ended without an interruption. Polled in short sleeps, so that Ctrl-C or
        SIGTERM meanwhile ends them (end_hooks)."""
        while True:
            with self._lock:
                running = [e for e in self._hook_ends if not e.is_set()]
            if not running:
                return
            time.sleep(0.05)

    def end_hooks(self) -> None:
        """Kill every --exec hook still running, with its process group, and any started from now on: the
        watcher is ending. Then wait (bounded) for every hook's thread: one between its hook's start and
        putting it in the set kills it itself once it sees _closing, but only if this program has not
        ended first (at load 10 a hook ran, the watcher was ended, and the hook outlived it, holding the
        watcher's stdout)."""
        with self._lock:
            self._closing = True
            hooks = list(self._hooks)
            ends = list(self._hook_ends)
        for hook in hooks:
            _kill_group(hook)
        deadline = time.monotonic() + HOOK_END_PATIENCE
        while any(not e.is_set() for e in ends) and time.monotonic() < deadline:
            time.sleep(0.05)  # polled: a second signal meanwhile waits its turn (FirstSignal)

    def what_was_kept(self) -> str:
        """What this watch left on disk, for the line said when it is interrupted."""
        kept = (f"{len(self.kept)} dump(s) kept: {', '.join(self.kept)}" if self.kept
                else "no dump was kept")
        if self.abandoned:
            kept += f"; {self.abandoned} dump(s) under way abandoned, their partial files removed"
        return kept

    def sample(self, s: Any) -> None:
        """The live status line (a terminal only): the latest figures of the process just sampled."""
        cpu = "-" if s.cpu_one_core is None else f"{s.cpu_one_core:.0f}%"
        text = (f"pid {s.pid}: cpu {cpu} of one core, memory {human_bytes(s.memory)}, threads {s.threads},"
                f" handles {s.handles}")
        sys.stderr.write(f"\r{text:<78.78}")
        sys.stderr.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()
            self._drawn = False

    def __call__(self, event: dumplib.WatchEvent) -> None:
        self._clear()
        if event.event == "dumped" and event.result is not None:
            self.kept.append(event.result.path)
        elif event.event == "abandoned":
            self.abandoned += 1
        if self.as_json:
            echo(json.dumps(event.to_dict()))
        else:
            self._human(event)
        if event.event == "dumped" and event.result is not None and self.exec_cmd:
            self._start_hook(event.result)

    def _start_hook(self, result: dumplib.DumpResult) -> None:
        """--exec on a thread of its own. The event comes from the thread that watches the process (its
        tracer or debugger, for a signal, an exception or an exit), which must go back to serving the
        target: a hook run there held every signal to the target for as long as the hook ran."""
        ended = threading.Event()

        def run() -> None:
            try:
                self._exec(result)
            finally:
                ended.set()

        thread = threading.Thread(target=run, name="dumplib-exec", daemon=True)
        with self._lock:  # kept before it starts: wait_hooks() must not miss it
            if self._closing:
                return  # the watcher is ending: no new hook
            self._hook_ends = [e for e in self._hook_ends if not e.is_set()] + [ended]
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to spare (a pids limit): said, as a hook that cannot start
            with self._lock:
                self._hook_ends.remove(ended)
            self._note("exec-failed", f"--exec could not start for {result.path} ({exc})", result.pid)

    def _human(self, e: dumplib.WatchEvent) -> None:
        who = f"pid {e.pid} ({e.name})" if e.pid is not None else (e.name or "")
        if e.event == "watching":
            echo(f"watching {who}: dump on {e.message}")
        elif e.event == "waiting":
            echo(e.message or "")
        elif e.event == "fired":
            # An event (signal, exception, exit) is said by its message; a figure needs its unit.
            value = "" if e.value is None or (e.unit is None and e.message) else f": measured {_figure(e.value, e.unit)}"
            detail = f" ({e.message})" if e.message else ""
            echo(f"{who}: {e.trigger}{value}{detail}")
        elif e.event == "dumped" and e.result is not None:
            r = e.result
            echo(result_line(r))
            for w in r.warnings:
                echo(f"dumplib: warning: {w}", err=True)
        elif e.event in ("refused", "failed", "rate-limited", "skipped", "abandoned"):
            echo(f"dumplib: {e.event}: {who}: {e.message}", err=True)
        else:
            echo(f"{who + ': ' if who else ''}{e.message or e.event}")

    def _exec(self, result: dumplib.DumpResult) -> None:
        assert self.exec_cmd is not None
        env = dict(os.environ, DUMPLIB_DUMP_PATH=result.path, DUMPLIB_DUMP_PID=str(result.pid))
        payload = json.dumps(result.to_dict()).encode()
        # A process group of its own, so the hook and whatever it started can be killed as one
        # at its timeout or when the watcher ends, rather than outliving the watcher.
        try:
            hook = subprocess.Popen(self.exec_cmd, shell=True, stdin=subprocess.PIPE, env=env,  # noqa: S602 (the user's own command line)
                                    start_new_session=True)
        except OSError as exc:  # its fork refused (a pids limit, short memory): the dump stands, the watch goes on
            self._note("exec-failed", f"--exec could not start for {result.path} ({exc.strerror})", result.pid)
            return
        with self._lock:
            closing = self._closing
            if not closing:
                self._hooks.add(hook)
        if closing:  # started as the watcher was ending (end_hooks had run): ended with it
            _kill_group(hook)
            hook.wait()
            return
        try:
            hook.communicate(payload, timeout=EXEC_TIMEOUT)
            code: Optional[int] = hook.returncode
        except subprocess.TimeoutExpired:
            _kill_group(hook)
            code = None
        finally:
            with self._lock:
                self._hooks.discard(hook)
                closing = self._closing
        if code != 0 and not closing:  # killed by end_hooks: the "stopped" line says why, not this
            why = "timed out" if code is None else f"exited with {code}"
            self._note("exec-failed", f"--exec {why} for {result.path}", result.pid)

    def _note(self, event: str, message: str, pid: int) -> None:
        self._clear()
        if self.as_json:
            echo(json.dumps({"event": event, "pid": pid, "message": message}))
        else:
            echo(f"dumplib: warning: {message}", err=True)


def _kill_group(hook: "subprocess.Popen[bytes]") -> None:
    try:
        if sys.platform == "win32":
            hook.kill()  # TerminateProcess: Windows has no process groups to signal
        else:
            os.killpg(hook.pid, signal.SIGKILL)  # a session and group of its own: the pgid is its pid
    except OSError:
        pass  # already gone
    try:
        hook.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _figure(value: float, unit: Optional[str]) -> str:
    if unit == "bytes":
        return human_bytes(int(value))
    if unit and unit.startswith("%"):
        return f"{value:.1f}{unit}"
    return f"{value:g} {unit or ''}".rstrip()


def register(app: Any) -> None:
    """Add `dumplib watch` to the typer application."""
    app.command(name="watch", context_settings={"allow_interspersed_args": True})(watch)


def watch(
    args: Optional[List[str]] = typer.Argument(
        None, help="TARGET [PATH]; with --wait/--all just [PATH]; with --launch the command (after --)."),
    wait: Optional[str] = typer.Option(None, "--wait", "-w", help="Wait for a process of this name to start, then watch it."),
    every: Optional[str] = typer.Option(None, "--all", help="Watch every process of this name, now and as they start."),
    launch: bool = typer.Option(False, "--launch", "-x", help="Start the command after -- and watch it."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Dump file or directory (same tokens as `dump`)."),
    cpu: Optional[float] = typer.Option(None, "--cpu", "-c", help="CPU percent (of the whole machine; --per-cpu: of one core)."),
    below: bool = typer.Option(False, "--below", help="--cpu / --memory fire below the figure instead of above."),
    per_cpu: bool = typer.Option(False, "--per-cpu", "-u", help="--cpu counts one core as 100%."),
    seconds: float = typer.Option(10.0, "--seconds", help="How long --cpu must hold without a break."),
    memory: Optional[str] = typer.Option(None, "--memory", "-m", help="Memory threshold, e.g. 2G (Linux RSS; Windows commit); a list 100M,200M,300M dumps as each is crossed."),
    memory_measure: str = typer.Option("default", "--memory-measure", help="Linux: rss (default) | pss | private."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Dump at this many threads."),
    handles: Optional[int] = typer.Option(None, "--handles", help="Dump at this many handles (Linux: open fds)."),
    exception: Optional[str] = typer.Option(None, "--exception", "-e", help="Windows: 'any', or codes or names like"
                                            " 0xC0000005,CppEH,StackOverflow (ProcDump -e -f)."),
    exception_exclude: Optional[str] = typer.Option(None, "--exception-exclude", help="Windows: codes or names that"
                                                    " never dump, e.g. CppEH (ProcDump -fx)."),
    first_chance: bool = typer.Option(False, "--first-chance", help="--exception fires on first-chance exceptions too"
                                      " (thread names and debug output only when named)."),
    signals: Optional[str] = typer.Option(None, "--signal", help="Linux: dump before these signals act, e.g. SEGV,TERM."),
    on_exit: bool = typer.Option(False, "--on-exit", "-t", help="Dump when the process ends, with its threads and memory (ProcDump -t)."),
    count: int = typer.Option(1, "--count", "-n", help="Dumps per process before it is no longer watched."),
    interval: float = typer.Option(10.0, "--interval", "-s", help="Seconds between two dumps of one process."),
    sample_every: float = typer.Option(1.0, "--sample-every", help="Seconds between two looks at the figures."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop watching after this many seconds."),
    rate: Optional[str] = typer.Option(None, "--rate", help="At most DUMPS/SECONDS over every process, e.g. 5/3600."),
    stop_on_refusal: bool = typer.Option(False, "--stop-on-refusal", help="Stop when the disk guard refuses a dump."),
    exec_cmd: Optional[str] = typer.Option(None, "--exec", help="Shell command run after each dump: result JSON on stdin, path in DUMPLIB_DUMP_PATH."),
    kind: str = typer.Option("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = typer.Option(None, "--flags", help="Raw mask overriding --kind."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    comment: Optional[str] = typer.Option(None, "--comment", help="Text stored in each dump's comment."),
    min_free: Optional[str] = typer.Option(None, "--min-free", help="Free space to keep on the volume, e.g. 2G."),
    no_space_check: bool = typer.Option(False, "--no-space-check", help="Skip the free-space guard and watchdog."),
    fit: bool = typer.Option(False, "--fit", help="Take the largest kind that fits."),
    no_sidecar: bool = typer.Option(False, "--no-sidecar", help="Do not write <dump>.json."),
    keep: Optional[int] = typer.Option(None, "--keep", help="After each dump keep only the newest N dumplib dumps there."),
    max_total: Optional[str] = typer.Option(None, "--max-total", help="After each dump delete the oldest beyond SIZE."),
    compress: Optional[str] = typer.Option(None, "--compress", "-z", help="zstd | gzip."),
    compress_level: Optional[int] = typer.Option(None, "--compress-level", help="Compression level."),
    max_pause: str = typer.Option("60s", "--max-pause", metavar="DURATION",
                                  help="Longest each dump may keep the target stopped (e.g. 30s, off)."),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", metavar="[=auto]",
                                           help="Write each dump from a copy-on-write snapshot (=auto: fall back; the"
                                           " Windows default where Windows has snapshots)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Watch a process and dump it when CPU, memory, threads, handles, a signal or an exception say so.

    `dumplib watch MyService -c 80 --seconds 10 -n 3 -s 5 -o /var/dumps` is `procdump -c 80 -s 10 -n 3`.
    Ctrl-C stops watching and leaves every watched process running, untraced.
    """
    positional = list(args or [])
    target: Optional[str] = None
    command: Optional[List[str]] = None
    path = out
    if launch:
        command = positional
    elif wait is None and every is None:
        target = positional.pop(0) if positional else None
    if not launch and positional:
        path = path or positional.pop(0)
    if not launch and positional:
        usage_error(f"unexpected arguments: {' '.join(positional)}", as_json)
    if not launch and target is None and wait is None and every is None:
        usage_error("say what to watch: TARGET, --wait NAME, --all NAME or --launch -- CMD...", as_json)
    printer = _Printer(as_json, exec_cmd, status_line=sys.stderr.isatty() and not as_json)

    def action() -> Optional[List[dumplib.DumpResult]]:
        on_ending_signals(first, {})  # again: run() has just put its own in place (restored when it returns)
        triggers = _triggers(cpu, below, per_cpu, seconds, memory, memory_measure, threads, handles, exception,
                             first_chance, signals, on_exit, exception_exclude)
        thresholds = sum(1 for t in triggers if t.once)
        dumps = max(count, thresholds) if thresholds > 1 and count == 1 else count  # -m A,B,C: a dump for each
        # Unsaid, the library's default stands (Windows: a snapshot where PSS exists).
        snapshot_choice: Dict[str, Any] = {} if snapshot is None else {"snapshot": parse_snapshot(snapshot)}
        try:
            results = dumplib.watch(
                parse_target(target) if target is not None else None, triggers, wait_for=wait, launch=command,
                all=every, count=dumps, interval=interval, sample_every=sample_every, path=path, kind=kind,
                timeout=timeout, on_event=printer, on_sample=printer.sample if printer.status_line else None,
                max_dumps_per=_rate(rate), stop_on_refusal=stop_on_refusal,
                flags=parse_flags(flags), overwrite=overwrite, comment=comment,
                min_free=parse_size(min_free, "min_free"), space_check=not no_space_check, fit=fit,
                sidecar=not no_sidecar, keep=keep, max_total=parse_size(max_total, "max_total"),
                compress=compress, compress_level=compress_level,
                max_pause=parse_duration(max_pause, "max_pause"),
                **snapshot_choice,
            )
            printer.wait_hooks()  # the last dumps' hooks finish; an interruption meanwhile ends them
            return results
        except dumplib.DumpError:
            printer.wait_hooks()  # the watch ended on an error: the dumps written before it keep their hooks
            raise
        except KeyboardInterrupt:
            if not first.taken:  # raised by no handler of ours (a program's own): Ctrl-C's
                first.taken.append(signal.SIGINT)
            return None  # the watch has already let go of every process
        except Terminated:
            return None

    # The first ending signal interrupts the watch; any later one only waits its turn: raised again,
    # it could cut short the letting go of a process held for a dump.
    first = FirstSignal()
    stopped_by = first.taken
    previous: Dict[int, Any] = {}
    try:
        on_ending_signals(first, previous)
        try:
            results = run(action, as_json=as_json, debug=debug)
        finally:
            printer.end_hooks()
        if results is None:
            how = {int(signal.SIGINT): "Ctrl-C (SIGINT)", int(signal.SIGTERM): "SIGTERM",
                   getattr(signal, "SIGHUP", -1): "SIGHUP", getattr(signal, "SIGQUIT", -1): "SIGQUIT",
                   getattr(signal, "SIGBREAK", -1): "Ctrl-Break"}
            last_words(lambda: printer(dumplib.WatchEvent(
                "stopped", message=f"stopped by {how.get(stopped_by[0], stopped_by[0])}; {printer.what_was_kept()};"
                " every watched process runs on, untraced")))
            raise Exit(exit_code_for_signal(stopped_by[0]))
        if not as_json:
            given_up = (f"; {printer.abandoned} under way at the timeout abandoned, their partial files removed"
                        if printer.abandoned else "")
            echo(f"{len(results)} dump(s) written{given_up}")
    finally:
        restore_signals(previous, ended=bool(stopped_by))
