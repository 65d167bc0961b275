"""The `dumplib` command: a thin layer over the public `dumplib` API (and nothing else).

Start-up is most of a small dump's time, so a complete, valid command line is parsed here without
importing typer: typer 0.29 imports pydantic and builds a validator per parameter while it parses
(~100 ms before any work, more than gcore takes for a whole small dump). `--help`, mistakes and
anything this parser does not know go to typer, built from the same declarations, so help and
error messages are typer's. docs/benchmarks.md has the measurements.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

import dumplib

# Documented in README.md ("Exit codes"); one per error class so scripts can branch on them.
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
}
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

HELP = "Take process dump files safely: Windows minidumps, Linux ELF cores."


class Exit(SystemExit):
    """Leave with an exit code; a SystemExit, so it passes through typer and click untouched."""


def echo(message: str = "", err: bool = False) -> None:
    """One line to stdout (or stderr), flushed: what typer.echo does for our plain-text output."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def exit_code_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_INTERNAL


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so every cleanup path runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise _Terminated(signum)


#: Signals that end dumplib the way Ctrl-C does (cleanup, target let go): SIGTERM, SIGHUP (a closed
#: terminal or ssh session) and Windows' SIGBREAK (Ctrl-Break), whose default actions would kill
#: dumplib with a snapshot held or a target suspended mid-write.
_ENDING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name))


#: What each ending signal is called in the last message (SIGHUP: "hung up").
_ENDED_BY = {EXIT_SIGTERM - 128: "terminated", getattr(signal, "SIGBREAK", -1): "stopped by Ctrl-Break"}


def _run(action: Callable[[], Any], *, as_json: bool, debug: bool, json_err: bool = False) -> Any:
    """Run *action*, turning errors into one stderr line (or a JSON object) and an exit code.

    *json_err* sends JSON errors to stderr too: when stdout carries the dump itself."""
    previous = ({sig: signal.signal(sig, _raise_terminated) for sig in _ENDING}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        return action()
    except dumplib.DumpError as exc:
        _fail(exc, exit_code_for(exc), as_json=as_json, debug=debug, json_err=json_err)
    except KeyboardInterrupt:
        _fail(None, EXIT_SIGINT, as_json=as_json, debug=debug, json_err=json_err,
              message="interrupted; nothing was left behind")
    except _Terminated as ended:
        _fail(None, 128 + ended.signum, as_json=as_json, debug=debug, json_err=json_err,
              message=f"{_ENDED_BY.get(ended.signum, 'hung up')}; nothing was left behind")
    except Exception as exc:  # a bug in dumplib: still one line, but say so
        _fail(exc, EXIT_INTERNAL, as_json=as_json, debug=debug, json_err=json_err,
              message=f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(exc: Optional[BaseException], code: int, *, as_json: bool, debug: bool, json_err: bool = False,
          message: Optional[str] = None) -> NoReturn:
    text = message or str(exc)
    if debug and exc is not None:
        import traceback  # only for --debug: it costs start-up otherwise

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if as_json:
        error = {"type": type(exc).__name__ if exc is not None else "Interrupted", "message": text, "exit_code": code}
        if isinstance(exc, dumplib.DumpError):
            error.update(exc.details())
        echo(json.dumps({"error": error}), err=json_err)
    else:
        echo(f"dumplib: error: {text}", err=True)
    raise Exit(code)


def _target(text: str) -> "int | str":
    # ASCII digits only: str.isdigit() is also true for "²" and "٣", which are names, not pids.
    return int(text) if text.isascii() and text.isdigit() else text


def _flags(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise dumplib.InvalidKind(f"--flags {text!r} is not an integer; write it like 0x1826", flags=None) from None


_SIZE = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
         "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_size(text: Optional[str]) -> Optional[int]:
    """``512M``, ``2G``, ``1.5GiB`` or plain bytes (binary units)."""
    if text is None:
        return None
    number = text.strip().upper().rstrip()
    unit = number.lstrip("0123456789.")
    digits = number[: len(number) - len(unit)]
    try:
        return int(float(digits) * _SIZE[unit.strip()])
    except (ValueError, KeyError):
        raise dumplib.InvalidKind(f"{text!r} is not a size; write it like 512M, 2G or 1073741824") from None


_SECONDS = {"": 1.0, "S": 1.0, "MS": 0.001, "M": 60.0, "MIN": 60.0, "H": 3600.0}


def parse_duration(text: Optional[str]) -> Optional[float]:
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
        raise dumplib.InvalidKind(f"{text!r} is not a duration; write it like 30, 90s, 2m or 500ms (or off)")
    return seconds


def human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class _TerminalProgress:
    """Elapsed time and bytes written, redrawn on one stderr line; silent when stderr is no terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.drawn = False

    def __call__(self, written: int, elapsed: float) -> None:
        sys.stderr.write(f"\r{self.label}: {elapsed:6.1f} s, {human_bytes(written)} written   ")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Param:
    """What typer.Argument / typer.Option take, as a plain record: typer is imported only when needed."""

    #: typer keywords that change only --help, so quick_parse may ignore them; any other keyword
    #: (a callback, a count, a range...) sends the command line to typer.
    HELP_ONLY = frozenset({"help", "metavar", "show_default", "rich_help_panel", "hidden"})

    def __init__(self, typer_name: str, default: Any, decls: Tuple[str, ...], options: Dict[str, Any]) -> None:
        self.typer_name, self.default, self.decls, self.options = typer_name, default, decls, options

    @property
    def is_option(self) -> bool:
        return self.typer_name == "Option"

    @property
    def quick(self) -> bool:
        return self.options.keys() <= self.HELP_ONLY

    def to_typer(self, typer: Any) -> Any:
        return getattr(typer, self.typer_name)(self.default, *self.decls, **self.options)


def Arg(default: Any, **options: Any) -> Any:  # noqa: N802 - reads like typer.Argument
    return Param("Argument", default, (), options)


def Opt(default: Any, *decls: str, **options: Any) -> Any:  # noqa: N802 - reads like typer.Option
    return Param("Option", default, decls, options)


#: The commands, by name, in the order `--help` lists them.
COMMANDS: Dict[str, Callable[..., None]] = {}


def command(func: Callable[..., None]) -> Callable[..., None]:
    COMMANDS[func.__name__] = func
    return func


JsonOpt = Opt(False, "--json", help="Print the result (or the error) as one JSON object.")
DebugOpt = Opt(False, "--debug", help="Show a traceback on errors.")


@command
def dump(
    target: Optional[str] = Arg(None, help="Process id, process name (e.g. MyProcess or MyProcess.exe), or"
                                " svc:NAME (a Windows service)."),
    path: Optional[str] = Arg(
        None,
        help="Dump file or existing directory (default: current directory). Tokens: {name} {pid} {date}"
        " {time} {kind}, and ProcDump's PROCESSNAME PID YYMMDD HHMMSS.",
    ),
    kind: str = Opt("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = Opt(
        None, "--flags", help="Raw mask overriding --kind: MINIDUMP_TYPE on Windows, coredump_filter on Linux."
    ),
    overwrite: bool = Opt(False, "--overwrite", help="Replace an existing file."),
    comment: Optional[str] = Opt(None, "--comment", help="Text stored in the dump's comment."),
    min_free: Optional[str] = Opt(
        None, "--min-free", help="Free space to keep on the volume (default max(1G, 5% of it)), e.g. 2G."
    ),
    no_space_check: bool = Opt(False, "--no-space-check", help="Skip the free-space guard and watchdog."),
    fit: bool = Opt(False, "--fit", help="Take the largest kind (full, miniplus, mini, triage) that fits."),
    no_sidecar: bool = Opt(False, "--no-sidecar", help="Do not write <dump>.json."),
    keep: Optional[int] = Opt(None, "--keep", help="Afterwards keep only the newest N dumplib dumps here."),
    max_total: Optional[str] = Opt(None, "--max-total", help="Afterwards delete the oldest dumplib dumps here beyond SIZE."),
    compress: Optional[str] = Opt(
        None, "--compress", "-z", help="zstd | gzip. On Linux the core streams through the compressor (no raw copy on disk)."
    ),
    compress_level: Optional[int] = Opt(None, "--compress-level", help="Compression level (default 1: fast)."),
    max_pause: str = Opt(
        "60s", "--max-pause", metavar="DURATION",
        help="Longest the target may stay stopped (e.g. 30s, 2m, off); past it the target is let go and the dump"
        " abandoned (exit 8).",
    ),
    snapshot: Optional[str] = Opt(
        None, "--snapshot", metavar="[=auto]",
        help="Write from a copy-on-write snapshot: the target is stopped only while it is taken. --snapshot=auto"
        " falls back to a normal dump (with a warning) where none can be taken.",
    ),
    all_name: Optional[str] = Opt(
        None, "--all", help="Dump every process of this name, each to its own file (then the argument is PATH)."),
    service: Optional[str] = Opt(
        None, "--service", help="Windows: dump this service's process (then the argument is PATH); same as svc:NAME."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Write a dump of TARGET. `dumplib dump MyProcess c:\\temp\\myprocess.dmp --kind full` is `procdump -ma`.

    PATH `-` streams the dump to stdout (e.g. `dumplib dump 1234 - -k full -z zstd | ssh host 'cat > x.core.zst'`);
    then every message goes to stderr.
    """
    if service is not None:
        target, path = f"svc:{service}", path or target
    if all_name is not None or target is None:
        from .watch import _usage, dump_all_command

        if all_name is not None and path is not None:
            _usage(f"--all {all_name} dumps every process of that name: give only a PATH, not a TARGET too"
                   f" ({target!r})", as_json)

        options = _run(lambda: dict(
            flags=_flags(flags), overwrite=overwrite, comment=comment, min_free=parse_size(min_free),
            space_check=not no_space_check, fit=fit, sidecar=not no_sidecar, keep=keep,
            max_total=parse_size(max_total), compress=compress, compress_level=compress_level,
            max_pause=parse_duration(max_pause), snapshot=parse_snapshot(snapshot)), as_json=as_json, debug=debug)
        dump_all_command(all_name, path or target, kind, options, as_json, debug)
        return
    to_stdout = path == "-"
    progress = _TerminalProgress(f"dumping {target}") if sys.stderr.isatty() and not as_json else None

    def action() -> dumplib.DumpResult:
        try:
            return dumplib.create_dump(
                _target(target), path, kind, flags=_flags(flags), overwrite=overwrite, comment=comment,
                progress=progress, min_free=parse_size(min_free), space_check=not no_space_check, fit=fit,
                sidecar=not no_sidecar, keep=keep, max_total=parse_size(max_total), compress=compress,
                compress_level=compress_level, max_pause=parse_duration(max_pause),
                snapshot=parse_snapshot(snapshot),
            )
        finally:
            if progress is not None:
                progress.close()

    result = _run(action, as_json=as_json, debug=debug, json_err=to_stdout)
    if as_json:
        echo(json.dumps(result.to_dict()), err=to_stdout)
        return
    for warning in result.warnings:
        echo(f"dumplib: warning: {warning}", err=True)
    echo(result_line(result, to_stdout), err=to_stdout)


def result_line(result: dumplib.DumpResult, to_stdout: bool = False) -> str:
    """The one line a written dump gets: where, how big, of what, how long, how long the target stopped."""
    stopped = f", target stopped {result.stopped_seconds:.3f} s" if result.stopped_seconds is not None else ""
    if result.snapshot:
        stopped += " (snapshot" + (f", cost {human_bytes(result.snapshot_bytes)})" if result.snapshot_bytes else ")")
    size = human_bytes(result.size)
    if result.compression:
        size += f" {result.compression}, {human_bytes(result.raw_size)} raw"
    where = "sent the dump to stdout" if to_stdout else f"wrote {result.path}"
    sha = f"; sha256 {result.sha256}" if to_stdout and result.sha256 else ""
    return (f"{where} ({size}, {result.kind} dump of {result.process_name}"
            f" pid {result.pid}, {result.seconds:.1f} s{stopped}){sha}")


@command
def estimate(
    target: str = Arg(..., help="Process id or name."),
    kind: str = Opt("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = Opt(None, "--flags", help="Raw mask instead of --kind."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Say how big a dump of TARGET would be, without reading its memory or stopping it."""
    est = _run(lambda: dumplib.estimate(_target(target), kind, flags=_flags(flags)), as_json=as_json, debug=debug)
    if as_json:
        echo(json.dumps(est.to_dict()))
        return
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in est.breakdown.items() if v)
    echo(f"a {est.kind} dump of pid {est.pid} would take ~{human_bytes(est.bytes)} ({parts})")


@command
def info(
    dumpfile: str = Arg(..., help="A minidump (.dmp) or ELF core (.core), plain or .gz/.zst."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Describe a dump file: format, process, kind, threads, modules, memory, comment, completeness."""
    d = _run(lambda: dumplib.info(dumpfile), as_json=as_json, debug=debug)
    if as_json:
        echo(json.dumps(d.to_dict()))
    else:
        _show_info(d)
    if not d.complete:  # a script reading --json branches on the exit code just as one reading text
        raise Exit(EXIT_CODES[dumplib.InvalidDumpFile])


def _show_info(d: dumplib.DumpInfo) -> None:
    # dumplib.info already escaped the text that came out of the file (undecodable bytes, controls).
    flags = "-" if d.flags is None else f"0x{d.flags:X}"
    packed = f" ({d.compression}, {human_bytes(d.stored_size)} stored)" if d.compression else ""
    echo(f"{d.path}: {d.format}, {human_bytes(d.file_size)}{packed}, {'complete' if d.complete else 'INCOMPLETE'}")
    echo(f"  process  pid {d.pid} {d.process or ''}")
    by = f", written by dumplib {d.dumplib_version}" if d.dumplib_version else ""
    echo(f"  kind     {d.kind or '-'} (flags {flags}){by}")
    echo(f"  threads  {d.threads}")
    echo(f"  memory   {d.memory_ranges} ranges, {human_bytes(d.memory_bytes)}")
    echo(f"  modules  {len(d.modules)}" + "".join(f"\n    {m}" for m in d.modules[:50]))
    if d.comment:
        echo(f"  comment  {d.comment}")
    if d.compression:
        tool = {"zstd": "zstd -d", "gzip": "gzip -dk"}[d.compression]
        opener = "WinDbg or Visual Studio" if d.format == "minidump" else "gdb EXE / lldb -c"
        echo(f"  open     {tool} {d.path}, then {opener} on the decompressed file (dumplib reads it as is)")
    for p in d.problems:
        echo(f"  problem  {p}")


@command
def ps(
    filter: Optional[str] = Arg(None, help="Keep processes whose name contains this, or this pid."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """List processes (pid, name, user, private and resident memory) to find a dump target."""
    procs: List[dumplib.ProcessInfo] = _run(lambda: dumplib.processes(filter), as_json=as_json, debug=debug)
    if as_json:
        echo(json.dumps([p.to_dict() for p in procs]))
        return
    echo(f"{'PID':>7}  {'NAME':<28} {'USER':<20} {'PRIVATE':>10} {'RESIDENT':>10} {'FULL DUMP':>10}")
    def figure(n: Optional[int]) -> str:
        return "?" if n is None else human_bytes(n)  # unknown: not readable, or its reads stuck

    for p in procs:
        echo(
            f"{p.pid:>7}  {p.name[:28]:<28} {(p.user or '?')[:20]:<20} {figure(p.private_bytes):>10}"
            f" {figure(p.rss_bytes):>10} {figure(p.full_dump_bytes):>10}"
        )


#: Annotations (strings, under `from __future__ import annotations`) that quick_parse converts itself.
_QUICK_TYPES: Dict[str, type] = {"str": str, "Optional[str]": str, "bool": bool, "int": int, "Optional[int]": int}


def quick_parse(func: Callable[..., None], args: List[str]) -> Optional[Dict[str, Any]]:
    """*func*'s keyword arguments from *args*, parsed as click would; None leaves it to typer.

    Only complete, valid command lines are taken: a missing argument, an unknown option, --help, a
    value that is not plainly what the parameter's type wants, all go to typer for its messages.
    """
    specs = _declarations(func)
    types = {n: _QUICK_TYPES.get(str(func.__annotations__.get(n))) for n in specs}
    if not all(isinstance(s, Param) and s.quick for s in specs.values()) or None in types.values():
        return None
    values: Dict[str, Any] = {n: spec.default for n, spec in specs.items()}
    by_decl = {d: n for n, spec in specs.items() if spec.is_option for d in spec.decls}
    positional = [n for n, spec in specs.items() if not spec.is_option]
    given: List[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            given.extend(rest)
        elif arg == "-" or not arg.startswith("-"):
            given.append(arg)
        else:
            decl, inline = _split_option(arg)
            name = by_decl.get(decl)
            if name is None:
                return None
            if types[name] is bool:
                if inline is not None:
                    return None
                values[name] = True
                continue
            value = _convert(inline if inline is not None else next(rest, None), types[name])
            if value is None:
                return None
            values[name] = value
    if len(given) > len(positional):
        return None
    for name, text in zip(positional, given):
        values[name] = _convert(text, types[name])
        if values[name] is None:
            return None
    if any(v is ... for v in values.values()):  # a required argument is missing
        return None
    return values


def _declarations(func: Callable[..., Any]) -> Dict[str, Any]:
    """Parameter name -> its Arg/Opt declaration, in order, read without the inspect module (start-up)."""
    code = func.__code__
    return dict(zip(code.co_varnames[: code.co_argcount], func.__defaults__ or ()))


def _split_option(arg: str) -> Tuple[str, Optional[str]]:
    """`--kind=full` -> (`--kind`, `full`); `-kfull` -> (`-k`, `full`); `--fit` -> (`--fit`, None)."""
    if arg.startswith("--"):
        decl, eq, value = arg.partition("=")
        return decl, (value if eq else None)
    return arg[:2], (arg[2:] or None)


def _convert(text: Optional[str], kind: Optional[type]) -> Any:
    if text is None:
        return None
    if kind is int:
        digits = text[1:] if text.startswith("-") else text
        return int(text) if digits.isascii() and digits.isdigit() else None
    return text


Call = Callable[[Callable[..., None], Dict[str, Any]], None]


def typer_app(call: Optional[Call] = None) -> Any:
    """The typer application for COMMANDS; *call(func, kwargs)* replaces running a command (tests)."""
    import inspect
    import typing

    import typer

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

    for name, func in COMMANDS.items():
        hints = typing.get_type_hints(func)
        params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=spec.to_typer(typer),
                                    annotation=hints[n]) for n, spec in _declarations(func).items()]
        app.command(name=name)(_typer_command(func, inspect.Signature(params), call))
    from .watch import register  # `dumplib watch`: parsed by typer always (its options need it)

    register(app)
    from .postmortem import register as register_postmortem  # `dumplib postmortem ...`: a typer group

    register_postmortem(app)
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


#: Options that may stand alone as a flag or take a value: a bare ``--snapshot`` means ``--snapshot=on``.
FLAG_OR_VALUE = {"--snapshot": "on"}


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


def _bare_flags(args: List[str]) -> List[str]:
    """Give each bare FLAG_OR_VALUE option its value, up to a `--` (after it come a launched command's words)."""
    out: List[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        out.append(f"{arg}={FLAG_OR_VALUE[arg]}" if arg in FLAG_OR_VALUE else arg)
    return out


def _wants_json(args: List[str]) -> bool:
    """--json among the options (not in a command after ``--``, which belongs to that command)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


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
        echo(json.dumps({"error": {"type": "Usage", "message": exc.format_message(), "exit_code": EXIT_USAGE}}))
        raise Exit(EXIT_USAGE) from None
    if isinstance(code, int) and code:
        raise Exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    args = _bare_flags(sys.argv[1:] if argv is None else list(argv))
    func = COMMANDS.get(args[0]) if args else None
    kwargs = quick_parse(func, args[1:]) if func is not None else None
    if func is None or kwargs is None:
        if _wants_json(args):
            _typer_json_errors(args)
        else:
            typer_app()(args=args, prog_name="dumplib")
    else:
        func(**kwargs)


if __name__ == "__main__":
    main()
