"""The `dumplib` command: a thin typer layer over the public `dumplib` API (and nothing else)."""
from __future__ import annotations

import json
import signal
import sys
import threading
import traceback
from typing import Any, Callable, List, NoReturn, Optional

import typer

import dumplib

# Documented in README.md ("Exit codes"); one per error class so scripts can branch on them.
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
}
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Take process dump files safely: Windows minidumps, Linux ELF cores.",
)


def exit_code_for(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_INTERNAL


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so every cleanup path runs as for Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise _Terminated()


def _run(action: Callable[[], Any], *, as_json: bool, debug: bool, json_err: bool = False) -> Any:
    """Run *action*, turning errors into one stderr line (or a JSON object) and an exit code.

    *json_err* sends JSON errors to stderr too: when stdout carries the dump itself."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    try:
        return action()
    except dumplib.DumpError as exc:
        _fail(exc, exit_code_for(exc), as_json=as_json, debug=debug, json_err=json_err)
    except KeyboardInterrupt:
        _fail(None, EXIT_SIGINT, as_json=as_json, debug=debug, json_err=json_err,
              message="interrupted; nothing was left behind")
    except _Terminated:
        _fail(None, EXIT_SIGTERM, as_json=as_json, debug=debug, json_err=json_err,
              message="terminated; nothing was left behind")
    except Exception as exc:  # a bug in dumplib: still one line, but say so
        _fail(exc, EXIT_INTERNAL, as_json=as_json, debug=debug, json_err=json_err,
              message=f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(exc: Optional[BaseException], code: int, *, as_json: bool, debug: bool, json_err: bool = False,
          message: Optional[str] = None) -> NoReturn:
    text = message or str(exc)
    if debug and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if as_json:
        error = {"type": type(exc).__name__ if exc is not None else "Interrupted", "message": text, "exit_code": code}
        if isinstance(exc, dumplib.DumpError):
            error.update(exc.details())
        typer.echo(json.dumps({"error": error}), err=json_err)
    else:
        typer.echo(f"dumplib: error: {text}", err=True)
    raise typer.Exit(code)


def _target(text: str) -> "int | str":
    return int(text) if text.isdigit() else text


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


JsonOpt = typer.Option(False, "--json", help="Print the result (or the error) as one JSON object.")
DebugOpt = typer.Option(False, "--debug", help="Show a traceback on errors.")


@app.command()
def dump(
    target: Optional[str] = typer.Argument(None, help="Process id, or process name (e.g. MyProcess or MyProcess.exe)."),
    path: Optional[str] = typer.Argument(
        None,
        help="Dump file or existing directory (default: current directory). Tokens: {name} {pid} {date}"
        " {time} {kind}, and ProcDump's PROCESSNAME PID YYMMDD HHMMSS.",
    ),
    kind: str = typer.Option("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = typer.Option(
        None, "--flags", help="Raw mask overriding --kind: MINIDUMP_TYPE on Windows, coredump_filter on Linux."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    comment: Optional[str] = typer.Option(None, "--comment", help="Text stored in the dump's comment."),
    min_free: Optional[str] = typer.Option(
        None, "--min-free", help="Free space to keep on the volume (default max(1G, 5% of it)), e.g. 2G."
    ),
    no_space_check: bool = typer.Option(False, "--no-space-check", help="Skip the free-space guard and watchdog."),
    fit: bool = typer.Option(False, "--fit", help="Take the largest kind (full, miniplus, mini, triage) that fits."),
    no_sidecar: bool = typer.Option(False, "--no-sidecar", help="Do not write <dump>.json."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Afterwards keep only the newest N dumplib dumps here."),
    max_total: Optional[str] = typer.Option(None, "--max-total", help="Afterwards delete the oldest dumplib dumps here beyond SIZE."),
    compress: Optional[str] = typer.Option(
        None, "--compress", "-z", help="zstd | gzip. On Linux the core streams through the compressor (no raw copy on disk)."
    ),
    compress_level: Optional[int] = typer.Option(None, "--compress-level", help="Compression level (default 1: fast)."),
    all_name: Optional[str] = typer.Option(None, "--all", help="Dump every process of this name, each to its own file (then the argument is PATH)."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Write a dump of TARGET. `dumplib dump MyProcess c:\\temp\\myprocess.dmp --kind full` is `procdump -ma`.

    PATH `-` streams the dump to stdout (e.g. `dumplib dump 1234 - -k full -z zstd | ssh host 'cat > x.core.zst'`);
    then every message goes to stderr.
    """
    if all_name is not None or target is None:
        from .watch import dump_all_command

        dump_all_command(all_name, path or target, kind, dict(
            flags=_flags(flags), overwrite=overwrite, comment=comment, min_free=parse_size(min_free),
            space_check=not no_space_check, fit=fit, sidecar=not no_sidecar, keep=keep,
            max_total=parse_size(max_total), compress=compress, compress_level=compress_level), as_json, debug)
        return
    to_stdout = path == "-"
    progress = _TerminalProgress(f"dumping {target}") if sys.stderr.isatty() and not as_json else None

    def action() -> dumplib.DumpResult:
        try:
            return dumplib.create_dump(
                _target(target), path, kind, flags=_flags(flags), overwrite=overwrite, comment=comment,
                progress=progress, min_free=parse_size(min_free), space_check=not no_space_check, fit=fit,
                sidecar=not no_sidecar, keep=keep, max_total=parse_size(max_total), compress=compress,
                compress_level=compress_level,
            )
        finally:
            if progress is not None:
                progress.close()

    result = _run(action, as_json=as_json, debug=debug, json_err=to_stdout)
    if as_json:
        typer.echo(json.dumps(result.to_dict()), err=to_stdout)
        return
    for warning in result.warnings:
        typer.echo(f"dumplib: warning: {warning}", err=True)
    stopped = f", target stopped {result.stopped_seconds:.3f} s" if result.stopped_seconds is not None else ""
    size = human_bytes(result.size)
    if result.compression:
        size += f" {result.compression}, {human_bytes(result.raw_size)} raw"
    where = "sent the dump to stdout" if to_stdout else f"wrote {result.path}"
    sha = f"; sha256 {result.sha256}" if to_stdout and result.sha256 else ""
    typer.echo(
        f"{where} ({size}, {result.kind} dump of {result.process_name}"
        f" pid {result.pid}, {result.seconds:.1f} s{stopped}){sha}",
        err=to_stdout,
    )


@app.command()
def estimate(
    target: str = typer.Argument(..., help="Process id or name."),
    kind: str = typer.Option("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = typer.Option(None, "--flags", help="Raw mask instead of --kind."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Say how big a dump of TARGET would be, without reading its memory or stopping it."""
    est = _run(lambda: dumplib.estimate(_target(target), kind, flags=_flags(flags)), as_json=as_json, debug=debug)
    if as_json:
        typer.echo(json.dumps(est.to_dict()))
        return
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in est.breakdown.items() if v)
    typer.echo(f"a {est.kind} dump of pid {est.pid} would take ~{human_bytes(est.bytes)} ({parts})")


@app.command()
def info(
    dumpfile: str = typer.Argument(..., help="A minidump (.dmp) or ELF core (.core), plain or .gz/.zst."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Describe a dump file: format, process, kind, threads, modules, memory, comment, completeness."""
    d = _run(lambda: dumplib.info(dumpfile), as_json=as_json, debug=debug)
    if as_json:
        typer.echo(json.dumps(d.to_dict()))
        return
    flags = "-" if d.flags is None else f"0x{d.flags:X}"
    packed = f" ({d.compression}, {human_bytes(d.stored_size)} stored)" if d.compression else ""
    typer.echo(f"{d.path}: {d.format}, {human_bytes(d.file_size)}{packed}, {'complete' if d.complete else 'INCOMPLETE'}")
    typer.echo(f"  process  pid {d.pid} {d.process or ''}")
    typer.echo(f"  kind     {d.kind or '-'} (flags {flags})")
    typer.echo(f"  threads  {d.threads}")
    typer.echo(f"  memory   {d.memory_ranges} ranges, {human_bytes(d.memory_bytes)}")
    typer.echo(f"  modules  {len(d.modules)}" + "".join(f"\n    {m}" for m in d.modules[:50]))
    if d.comment:
        typer.echo(f"  comment  {d.comment}")
    if d.compression:
        tool = {"zstd": "zstd -d", "gzip": "gzip -dk"}[d.compression]
        opener = "WinDbg or Visual Studio" if d.format == "minidump" else "gdb EXE / lldb -c"
        typer.echo(f"  open     {tool} {d.path}, then {opener} on the decompressed file (dumplib reads it as is)")
    for p in d.problems:
        typer.echo(f"  problem  {p}")
    if not d.complete:
        raise typer.Exit(EXIT_CODES[dumplib.InvalidDumpFile])


@app.command()
def ps(
    filter: Optional[str] = typer.Argument(None, help="Keep processes whose name contains this, or this pid."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """List processes (pid, name, user, private and resident memory) to find a dump target."""
    procs: List[dumplib.ProcessInfo] = _run(lambda: dumplib.processes(filter), as_json=as_json, debug=debug)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in procs]))
        return
    typer.echo(f"{'PID':>7}  {'NAME':<28} {'USER':<20} {'PRIVATE':>10} {'RESIDENT':>10} {'FULL DUMP':>10}")
    for p in procs:
        typer.echo(
            f"{p.pid:>7}  {p.name[:28]:<28} {(p.user or '-')[:20]:<20} {human_bytes(p.private_bytes):>10}"
            f" {human_bytes(p.rss_bytes):>10} {human_bytes(p.full_dump_bytes):>10}"
        )


from . import watch as _watch_command  # noqa: E402,F401  (registers `dumplib watch` on the app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dumplib")


if __name__ == "__main__":
    main()
