"""What every `dumplib` command shares: the exit-code table, output, errors into an exit, option values.

The bottom of the CLI's import graph: it imports ``dumplib`` and the standard library only, never a
command module and never typer, so that the fast path (see app.py) pays for nothing it does not use.
"""
from __future__ import annotations

import os
import sys
import threading

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, NoReturn, Optional, overload
else:
    def overload(func: Any) -> Any:  # the @overload signatures are for type checkers: the last def replaces them
        return func

import dumplib

if TYPE_CHECKING:
    import signal
else:
    try:  # signal's functions and numbers without the three enums the signal module builds (~4 M instructions)
        import _signal as signal
    except ImportError:
        import signal

# Documented in README.md ("Exit codes"); one per error class so scripts can branch on them. This
# table is the only place the CLI writes an exit code: everything else names one of these.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CODES = {
    dumplib.InvalidKind: EXIT_USAGE,
    dumplib.InvalidCompression: EXIT_USAGE,
    dumplib.InvalidArgument: EXIT_USAGE,
    dumplib.ProcessNotFound: 3,
    dumplib.AmbiguousProcess: 4,
    dumplib.AccessDenied: 5,
    dumplib.DumpExists: 6,
    dumplib.InvalidDumpPath: 7,
    dumplib.DumpFailed: 8,
    dumplib.UnsupportedPlatform: 9,
    dumplib.BitnessMismatch: 10,
    dumplib.TargetRefused: 11,
    dumplib.InvalidDumpFile: 12,
    dumplib.InsufficientDiskSpace: 13,
    dumplib.RemoteDestinationError: 14,
}
#: Ended by a signal: 128 + its number, as a shell reports a process a signal killed.
EXIT_SIGNALLED = 128
EXIT_SIGINT = EXIT_SIGNALLED + signal.SIGINT  # 130
EXIT_SIGTERM = EXIT_SIGNALLED + signal.SIGTERM  # 143


def exit_code_for_signal(signum: int) -> int:
    """The exit code of a command ended by signal *signum* (130 for Ctrl-C)."""
    return EXIT_SIGNALLED + int(signum)


def exit_code_for(exc: BaseException) -> int:
    """The exit code README documents for *exc*: its class's (or nearest base's) row, else internal error."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_INTERNAL


class Exit(SystemExit):
    """Leave with an exit code; a SystemExit, so it passes through typer and click untouched."""


#: The exit code of a command whose reader went away (`dumplib ps | head`): as a shell reports a
#: command SIGPIPE ended (Python ignores SIGPIPE, so the write fails with EPIPE instead).
EXIT_SIGPIPE = EXIT_SIGNALLED + 13  # SIGPIPE is 13 on Linux (Windows has none; the code is the same there)

#: The exit code of a command whose standard output cannot be written (full disk, I/O error, closed):
#: sysexits.h's EX_IOERR, since 1 already means a dumplib bug.
EXIT_OUTPUT = 74


#: True when the command owns the process (the console script, `python -m dumplib_cli`): only then
#: may a stream that failed have its descriptor pointed at /dev/null. main(argv) from a program
#: leaves the program's descriptors alone.
OWN_PROCESS = False


def echo(message: str = "", err: bool = False) -> None:
    """One line to stdout (or stderr), flushed: what typer.echo does for our plain-text output.

    A stream that cannot take the line is output_failed's to handle: a reader gone ends the command
    with EXIT_SIGPIPE, a stdout that cannot be written with EXIT_OUTPUT, and a stderr is given up on."""
    stream = sys.stderr if err else sys.stdout
    try:
        if stream is None:  # a descriptor closed when the program started: Python has no stream for it
            raise OSError(9, f"{'stderr' if err else 'stdout'} was closed when dumplib started")
        stream.write(message + "\n")
        stream.flush()
    except OSError as exc:
        output_failed(exc, err=err)


def output_failed(exc: OSError, err: bool = False) -> None:
    """What a failed write of our output means. A reader gone (EPIPE) ends the command with
    EXIT_SIGPIPE, quietly; a stdout that cannot take it (a full disk, /dev/full, an I/O error, closed
    at start) ends it with EXIT_OUTPUT, said on stderr; a stderr that cannot take it is given up on
    (returns): the command's own exit code still says what happened, and there is nowhere left to say
    more. What was done stays done. After EPIPE, in a process the command owns, the stream's
    descriptor is pointed at /dev/null, as Python's documentation advises (signal module, "Note on
    SIGPIPE"), so the interpreter's own flush at exit meets no second EPIPE."""
    if isinstance(exc, BrokenPipeError):
        if OWN_PROCESS:
            _to_null(sys.stderr if err else sys.stdout)
        raise Exit(EXIT_SIGPIPE) from None
    if err:
        return
    try:
        if sys.stderr is not None:
            sys.stderr.write(f"dumplib: error: cannot write to standard output ({exc.strerror or exc});"
                             " what was done before stays done\n")
            sys.stderr.flush()
    except OSError:
        pass  # stderr cannot take it either: the exit code alone says it
    raise Exit(EXIT_OUTPUT) from None


def _to_null(stream: Any) -> None:
    """Point *stream*'s descriptor at /dev/null: what it still buffers is then flushed there at exit."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # no stream, or no descriptor: nothing will be flushed
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def error_json(kind: str, message: str, code: Optional[int], facts: Optional[Dict[str, Any]] = None) -> str:
    """The one JSON shape every error takes with --json: ``{"error": {"type", "message", "exit_code", facts...}}``.

    *code* None leaves out ``exit_code``: an error among several outcomes (``dump --all``) that does
    not decide how the command exits on its own."""
    error: Dict[str, Any] = {"type": kind, "message": message}
    if code is not None:
        error["exit_code"] = code
    error.update(facts or {})
    import json  # an error's or --json's only: json's import is start-up every dump would pay

    return json.dumps({"error": error})


def usage_error(message: str, as_json: bool) -> NoReturn:
    """A command line that means nothing: typer's JSON or plain shape for it, and the usage exit code.

    Used for mistakes only the command can see (``dump --all NAME TARGET``); typer's own are turned
    into the same JSON by app.py."""
    if as_json:
        echo(error_json("Usage", message, EXIT_USAGE))
    else:
        echo(f"dumplib: error: {message}", err=True)
    raise Exit(EXIT_USAGE)


class Terminated(BaseException):
    """SIGTERM, SIGHUP or SIGQUIT, raised in the main thread so every cleanup path runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Signals that end dumplib the way Ctrl-C does (cleanup, target let go): SIGINT itself, SIGTERM,
#: SIGHUP (a closed terminal or ssh session), SIGQUIT (Ctrl-\) and Windows' SIGBREAK (Ctrl-Break),
#: whose default actions would kill dumplib with a snapshot held or a target stopped mid-write, or
#: held for a hand-over with its signal not yet delivered.
ENDING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGBREAK")
               if hasattr(signal, name))


#: What each ending signal is called in the last message (SIGHUP: "hung up").
_ENDED_BY = {int(signal.SIGTERM): "terminated", getattr(signal, "SIGQUIT", -1): "quit (SIGQUIT)",
             getattr(signal, "SIGBREAK", -1): "stopped by Ctrl-Break"}


class FirstSignal:
    """The handler of the ending signals: the first raises (KeyboardInterrupt for SIGINT, else
    Terminated) and is kept in *taken*; any later one only waits its turn, kept after it. Raised
    again, a second Ctrl-C would cut short the cleanup the first started (a target let go, a
    temporary removed) and turn the last message into a traceback."""

    def __init__(self) -> None:
        self.taken: "List[int]" = []
        #: Set once the command is ending on its own (an error being reported): a signal then only
        #: waits its turn too, so it does not turn the error's line into a traceback.
        self.closed = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.taken.append(signum)
        if len(self.taken) == 1 and not self.closed:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def on_ending_signals(handler: Any, previous: "Dict[int, Any]") -> "Dict[int, Any]":
    """*handler* for each ending signal, adding the handlers it replaces to *previous* (kept there
    as each is replaced, so a signal in between leaves nothing unrestored); main thread only.

    A signal the command started with ignored stays ignored: the parent said so. `nohup` ignores
    SIGHUP so that a closed terminal does not end the command; a shell ignores SIGINT and SIGQUIT
    for a job it starts with `&` without job control, so that Ctrl-C at the terminal does not reach
    it (Python itself leaves an ignored SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return previous
    for sig in ENDING:
        current = signal.getsignal(sig)
        if current == signal.SIG_IGN:
            continue
        previous.setdefault(sig, current)
        signal.signal(sig, handler)
    return previous


def restore_signals(previous: "Dict[int, Any]", ended: bool) -> None:
    """Put *previous* back, unless the command is *ended* by a signal in a process it owns
    (OWN_PROCESS): then its handler stays, and a signal sent while the process exits still only
    waits its turn instead of raising in the interpreter's teardown (a traceback, another exit
    code). A program calling main(argv) gets its own handlers back in any case."""
    if ended and OWN_PROCESS:
        return
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run(action: Callable[[], Any], *, as_json: bool, debug: bool, json_err: bool = False) -> Any:
    """Run *action*, turning errors into one stderr line (or a JSON object) and an exit code.

    The ending signals (ENDING) end it as Ctrl-C does, with the first one's exit code and message;
    *json_err* sends JSON errors to stderr too: when stdout carries the dump itself."""
    first = FirstSignal()
    previous: "Dict[int, Any]" = {}
    try:
        on_ending_signals(first, previous)
        return action()
    except dumplib.DumpError as exc:
        first.closed = True
        _fail(exc, exit_code_for(exc), as_json=as_json, debug=debug, json_err=json_err)
    except KeyboardInterrupt:
        _fail(None, EXIT_SIGINT, as_json=as_json, debug=debug, json_err=json_err,
              message="interrupted; nothing was left behind")
    except Terminated as ended:
        _fail(None, exit_code_for_signal(ended.signum), as_json=as_json, debug=debug, json_err=json_err,
              message=f"{_ENDED_BY.get(ended.signum, 'hung up')}; nothing was left behind")
    except Exception as exc:  # a bug in dumplib: still one line, but say so
        first.closed = True
        _fail(exc, EXIT_INTERNAL, as_json=as_json, debug=debug, json_err=json_err,
              message=f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
    finally:
        restore_signals(previous, ended=bool(first.taken))


def _fail(exc: Optional[BaseException], code: int, *, as_json: bool, debug: bool, json_err: bool = False,
          message: Optional[str] = None) -> NoReturn:
    """Say *exc* (or *message*) and exit with *code*. With no *exc* the command was ended by a signal,
    whose code stands even if the line cannot be written (last_words)."""
    if exc is None:
        last_words(lambda: _say(exc, code, as_json=as_json, debug=debug, json_err=json_err, message=message))
    else:
        _say(exc, code, as_json=as_json, debug=debug, json_err=json_err, message=message)
    raise Exit(code)


def last_words(say: Callable[[], None]) -> None:
    """*say* the last line of a command a signal ends; a stream that cannot take it does not change
    the exit code, which stays the signal's. A closed terminal is the usual case: its SIGHUP ends the
    command, and the terminal it hung up fails the line that says so (EIO), which would otherwise
    turn 129 into EXIT_OUTPUT (74); a reader that Ctrl-C ended with us, into EXIT_SIGPIPE."""
    try:
        say()
    except Exit:
        pass


def _say(exc: Optional[BaseException], code: int, *, as_json: bool, debug: bool, json_err: bool,
         message: Optional[str]) -> None:
    text = message or str(exc)
    if debug and exc is not None:
        import traceback  # only for --debug: it costs start-up otherwise

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if as_json:
        facts = exc.details() if isinstance(exc, dumplib.DumpError) else None
        echo(error_json(type(exc).__name__ if exc is not None else "Interrupted", text, code, facts), err=json_err)
    else:
        echo(f"dumplib: error: {text}", err=True)


def human_bytes(n: Optional[int]) -> str:
    """*n* bytes as people read them: ``512 B``, ``3.0 MiB``; ``-`` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def result_line(result: dumplib.DumpResult, to_stdout: bool = False) -> str:
    """The one line a written dump gets: where, how big, of what, how long, how long the target stopped.

    Shared by `dump`, `dump --all` and `watch`, so a dump reads the same whichever command took it."""
    stopped = f", target stopped {result.stopped_seconds:.3f} s" if result.stopped_seconds is not None else ""
    if result.snapshot:
        stopped += " (snapshot" + (f", cost {human_bytes(result.snapshot_bytes)})" if result.snapshot_bytes else ")")
    size = human_bytes(result.size)
    if result.compression:
        size += f" {result.compression}, {human_bytes(result.raw_size)} raw"
    if result.upload_seconds is not None:  # a URL destination: how long the store took, and the rate
        rate = result.size / result.upload_seconds if result.upload_seconds > 0 else None
        stopped += f", uploaded in {result.upload_seconds:.1f} s" + (f" at {human_bytes(int(rate))}/s" if rate else "")
    where = "sent the dump to stdout" if to_stdout else f"wrote {result.path}"
    sha = f"; sha256 {result.sha256}" if to_stdout and result.sha256 else ""
    return (f"{where} ({size}, {result.kind} dump of {result.process_name}"
            f" pid {result.pid}, {result.seconds:.1f} s{stopped}){sha}")


# Option values as the commands read them. Each parser takes the text typer (or the fast parser)
# handed over and raises dumplib's own error for a value that means nothing, so a bad value is
# reported, and exits, like any other error (--json too).


def parse_target(text: str) -> "int | str":
    """A pid when *text* is one, else a process name (``svc:NAME`` included)."""
    # ASCII digits only: str.isdigit() is also true for "²" and "٣", which are names, not pids.
    return int(text) if text.isascii() and text.isdigit() else text


def parse_flags(text: Optional[str]) -> Optional[int]:
    """``--flags``: a raw mask in any base Python reads (``0x1826``, ``6182``)."""
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        # InvalidKind, not InvalidArgument: the mask stands for a kind, as create_dump's own check says.
        raise dumplib.InvalidKind(f"--flags {text!r} is not an integer; write it like 0x1826", flags=None) from None


_SIZE = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
         "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


@overload
def parse_size(text: str, argument: str) -> int: ...
@overload
def parse_size(text: None, argument: str) -> None: ...
@overload
def parse_size(text: Optional[str], argument: str) -> Optional[int]: ...
def parse_size(text: Optional[str], argument: str) -> Optional[int]:
    """``512M``, ``2G``, ``1.5GiB`` or plain bytes (binary units); *argument* names the option in the error."""
    if text is None:
        return None
    number = text.strip().upper().rstrip()
    unit = number.lstrip("0123456789.")
    digits = number[: len(number) - len(unit)]
    try:
        return int(float(digits) * _SIZE[unit.strip()])
    except (ValueError, KeyError):
        raise dumplib.InvalidArgument(f"{text!r} is not a size; write it like 512M, 2G or 1073741824",
                                      argument=argument, value=text) from None


_SECONDS = {"": 1.0, "S": 1.0, "MS": 0.001, "M": 60.0, "MIN": 60.0, "H": 3600.0}


def parse_duration(text: Optional[str], argument: str) -> Optional[float]:
    """``90``, ``90s``, ``500ms``, ``2m``, ``1h`` as seconds; ``off`` for no bound."""
    if text is None or text.strip().lower() == "off":
        return None
    number = text.strip().upper()
    unit = number.lstrip("0123456789.")
    try:
        seconds = float(number[: len(number) - len(unit)]) * _SECONDS[unit.strip()]
    except (ValueError, KeyError):
        seconds = 0.0
    if not seconds > 0:
        raise dumplib.InvalidArgument(f"{text!r} is not a duration; write it like 30, 90s, 2m or 500ms (or off)",
                                      argument=argument, value=text)
    return seconds


def parse_snapshot(text: Optional[str]) -> "bool | str":
    """`--snapshot` (on), `--snapshot=auto`, `--snapshot=off` -> create_dump's *snapshot*."""
    if text is None:
        return False
    value = text.strip().lower()
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    if value == "auto":
        return "auto"
    raise dumplib.InvalidArgument(f"--snapshot={text!r}: write --snapshot, --snapshot=auto or --snapshot=off",
                                  argument="snapshot", value=text)
