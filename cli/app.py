"""The `dumplib` command: a thin layer over the public `dumplib` API (and nothing else).

Start-up is most of a small dump's time, so a complete, valid command line is parsed without
importing typer (_fastparse.py): typer 0.29 imports pydantic and builds a validator per parameter
while it parses (more before any work than gcore takes for a whole small dump). `--help`,
mistakes and anything that parser does not know go to typer, built here from the same declarations,
so help and error messages are typer's. docs/benchmarks.md has the measurements.

This module only assembles: it knows the commands and builds the typer application; each command
lives in a module of its own over the shared helpers (_common.py; _fastparse.py for the parser and
the declarations it reads), and none of them imports this one back (tests/unit/test_cli_imports.py).
A valid command line loads only its own command's module: each module is start-up paid.
"""
from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

import dumplib

from . import _common
from ._common import EXIT_USAGE, Exit, echo, error_json, output_failed
from ._fastparse import bare_flags, declarations, quick_parse, wants_json

HELP = "Take process dump files safely: Windows minidumps, Linux ELF cores."

#: The commands the fast parser may take, in the order `--help` lists them. `watch` and
#: `postmortem` need typer to parse (callbacks, groups): typer_app() adds them.
QUICK_COMMANDS = ("dump", "estimate", "info", "ps")


def quick_command(name: str) -> Optional[Callable[..., None]]:
    """The function of command *name* if the fast parser may take it, importing its module only."""
    # One import per branch, written out: a loop over importlib would cost its import at start-up
    # and hide the arrows from the import-graph test.
    if name == "dump":
        from .dump import dump
        return dump
    if name == "estimate":
        from .estimate import estimate
        return estimate
    if name == "info":
        from .info import info
        return info
    if name == "ps":
        from .ps import ps
        return ps
    return None


def commands() -> Dict[str, Callable[..., None]]:
    """Every quick-parsed command by name, in QUICK_COMMANDS' order (typer's app and the tests)."""
    return {name: func for name in QUICK_COMMANDS if (func := quick_command(name)) is not None}

#: How a test replaces running a command: called with the command and its parsed keyword arguments.
if TYPE_CHECKING:
    Call = Callable[[Callable[..., None], Dict[str, Any]], None]
else:  # a type alias: at run time only its name (dumplib/_typing.py)
    Call = object


def typer_app(call: Optional[Call] = None) -> Any:
    """The typer application for every command; *call(func, kwargs)* replaces running a command (tests)."""
    import inspect
    import typing

    import typer

    # Imported here, not at the top: both import typer, which the fast path must not pay for.
    from . import postmortem, watch

    # add_completion: `dumplib --install-completion` / `--show-completion`, typer's tab completion (README).
    app = typer.Typer(add_completion=True, no_args_is_help=True, help=HELP)

    def show_version(value: bool) -> None:
        if value:
            print(f"dumplib {dumplib.__version__}")
            raise typer.Exit()

    @app.callback()
    def options(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                             help="Print dumplib's version and exit.")) -> None:
        """Take process dump files safely: Windows minidumps, Linux ELF cores."""

    for name, func in commands().items():
        # The command modules import typing's names for type checkers only (dumplib/_typing.py): the
        # annotations' strings find them here, the module's own names first.
        hints = typing.get_type_hints(func, localns={**vars(typing), **func.__globals__})
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec.to_typer(typer),
                                    annotation=hints[n]) for n, spec in declarations(func).items()]
        app.command(name=name)(_typer_command(func, inspect.Signature(params), call))
    watch.register(app)  # `dumplib watch`: parsed by typer always (its options need it)
    postmortem.register(app)  # `dumplib postmortem ...`: a typer group
    return app


def _typer_command(func: Callable[..., None], signature: Any, call: Optional[Call]) -> Callable[..., None]:
    def command(**kwargs: Any) -> None:
        if call is None:
            func(**kwargs)
        else:
            call(func, kwargs)

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return command


def _typer_json_errors(args: List[str]) -> None:
    """Run typer, a usage error (a bad or missing option, a bad value) as one JSON error object on
    stdout and exit code 2, as every other error is with --json, instead of click's boxed text."""
    try:
        code = typer_app()(args=args, prog_name="dumplib", standalone_mode=False)
    except Exception as exc:
        # click's UsageError, from click or from the copy typer 0.29 carries: told apart by its
        # ClickException interface, not its module.
        if not (hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == EXIT_USAGE):
            raise
        echo(error_json("Usage", exc.format_message(), EXIT_USAGE))
        raise Exit(EXIT_USAGE) from None
    if isinstance(code, int) and code:
        raise Exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point: the fast parser for a valid command line, typer for everything else.

    Called without *argv* (the console script, ``python -m dumplib_cli``), a quick command ends the
    process as soon as it is done (see _leave); given *argv* (tests, a program), it returns."""
    if argv is None:
        _common.OWN_PROCESS = True
        _hold_standard_descriptors()
        # The cyclic collector's passes over what a quick command imports cost a small dump ~4 M
        # instructions (~1.3 ms) and free next to nothing (83 objects); reference counting frees the
        # rest, and what cycles a long dump leaves wait for its exit (_leave). Off from the parse on
        # (it imports the command's module); on again for typer's commands (`watch` runs on).
        gc.disable()
    args = bare_flags(sys.argv[1:] if argv is None else list(argv))
    func = quick_command(args[0]) if args else None
    kwargs = quick_parse(func, args[1:]) if func is not None else None
    if func is None or kwargs is None:
        if argv is None:
            gc.enable()
        _through_typer(args)
    elif argv is None:
        try:
            func(**kwargs)
        except SystemExit as done:
            if done.code is not None and not isinstance(done.code, int):
                raise
            _leave(done.code or 0)
        _leave(0)
    else:
        func(**kwargs)


def _through_typer(args: List[str]) -> None:
    """typer's path (help, --version, usage errors, the commands it parses). Its own writes to stdout
    (click's echo, print, flushed by click before it exits) that fail end the command as echo's do
    (output_failed), not in a traceback."""
    try:
        if wants_json(args):
            _typer_json_errors(args)
        else:
            typer_app()(args=args, prog_name="dumplib")
    except OSError as exc:
        output_failed(exc)


class _GivingUp:
    """sys.stderr for the console script: a line it cannot take (a full disk, a closed pipe, an I/O
    error) is dropped, output_failed's rule for stderr, so that no diagnostic, ours or typer's or a
    traceback's, turns into another traceback or another exit code. The rest is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)  # type: ignore[no-any-return]
        except OSError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._gone()

    def _gone(self) -> None:
        try:
            _common._to_null(self._stream)  # what the stream still buffers goes there at exit
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _hold_standard_descriptors() -> None:
    """Descriptors 0, 1 and 2 closed when the command started (`2>&-`) are opened on /dev/null.

    Otherwise the first file dumplib opens, the dump's temporary, takes the number, and whatever is
    written to "stderr" (the interpreter's own last words, a child's) lands in the dump. A closed
    stdout gets a stream every write to which fails, so a line for it still ends the command with
    EXIT_OUTPUT; a closed stderr becomes /dev/null's, where the command's diagnostics go unread. And
    stderr, closed or not, gives up on a line it cannot take (_GivingUp)."""
    for fd in (0, 1, 2):  # in order: the lowest free number is then fd itself
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (the process's stderr for its life)
    sys.stderr = _GivingUp(sys.stderr)
    if sys.stdout is None:
        sys.stdout = _closed_stdout()


def _closed_stdout() -> Any:
    """A stdout for a command started with it closed: the first line written to it fails (EBADF), so
    the command ends with EXIT_OUTPUT whoever writes it (echo, click, print), rather than losing it;
    what is still buffered then is dropped, so the interpreter's flush at exit has nothing to fail on."""
    import io

    class Closed(io.RawIOBase):
        failed = False

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            if not self.failed:
                self.failed = True
                raise OSError(9, "stdout was closed when dumplib started")
            return len(b)

    return io.TextIOWrapper(io.BufferedWriter(Closed()), encoding="utf-8", line_buffering=True)


def _leave(code: int) -> None:
    """End the process now with *code*, skipping the interpreter's teardown, when nothing is left to it.

    Tearing down the ~200 modules a dump loaded costs ~22 M instructions (~8 ms; docs/benchmarks.md),
    more than the bare interpreter's whole teardown. Only when nothing depends on it: no atexit
    callback registered (coverage, logging, a program's own), and no thread left that the interpreter
    would wait for (a thread of dumplib's still releasing a target; the pools joined at exit).
    Otherwise, and if the output cannot be flushed, the ordinary exit."""
    import atexit
    import threading

    alive = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if atexit._ncallbacks() or alive:
        raise SystemExit(code)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: a descriptor closed when the command started (`>&-`)
                stream.flush()
    except (OSError, ValueError):  # a closed or broken pipe: the ordinary exit reports it as it would
        raise SystemExit(code) from None
    os._exit(code)


if __name__ == "__main__":
    main()
