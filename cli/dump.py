"""`dumplib dump`: one dump of a process, or with --all one of every process of a name."""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

import dumplib

from ._common import (EXIT_OK, Exit, echo, error_json, exit_code_for, human_bytes, parse_duration, parse_flags,
                      parse_size, parse_snapshot, parse_target, result_line, run, usage_error)
from ._fastparse import Arg, DebugOpt, JsonOpt, Opt


class _TerminalProgress:
    """Elapsed time and bytes written, redrawn on one stderr line; for a URL also the bytes the store
    has acknowledged and the upload rate over the last few seconds. Silent when stderr is no terminal."""

    #: Seconds the upload rate is measured over.
    WINDOW = 3.0

    def __init__(self, label: str) -> None:
        self.label = label
        self.drawn = False
        self.sent: Optional[int] = None
        self._samples: List[Tuple[float, int]] = []

    def uploaded(self, sent: int, elapsed: float) -> None:
        """Called by dumplib (before each redraw) when the dump goes to a store."""
        self.sent = sent
        self._samples.append((elapsed, sent))
        while len(self._samples) > 2 and elapsed - self._samples[1][0] >= self.WINDOW:
            self._samples.pop(0)

    def rate(self) -> Optional[float]:
        """Bytes per second acknowledged over the window; None before two samples."""
        (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
        return (s1 - s0) / (t1 - t0) if len(self._samples) > 1 and t1 > t0 else None

    def __call__(self, written: int, elapsed: float) -> None:
        line = f"\r{self.label}: {elapsed:6.1f} s, {human_bytes(written)} written"
        if self.sent is not None:
            rate = self.rate()
            line += f", {human_bytes(self.sent)} uploaded" + (f" at {human_bytes(int(rate))}/s" if rate is not None else "")
        sys.stderr.write(line + "   ")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def dump(
    target: Optional[str] = Arg(None, help="Process id, process name (e.g. MyProcess or MyProcess.exe), or"
                                " svc:NAME (a Windows service)."),
    path: Optional[str] = Arg(
        None,
        help="Dump file or existing directory (default: current directory), or a URL: s3://BUCKET/prefix/,"
        " az://CONTAINER/prefix/, https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix/ (docs/egress.md)."
        " Tokens: {name} {pid} {date} {time} {kind}, and ProcDump's PROCESSNAME PID YYMMDD HHMMSS.",
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
    keep_local_on_failure: bool = Opt(
        False, "--keep-local-on-failure",
        help="A URL on Windows: keep the verified raw dump if the upload fails, and say where (else it is deleted)."),
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
    def options() -> Dict[str, Any]:
        # Parsed inside run(): a bad size, duration or mask is reported like any other error.
        return dict(flags=parse_flags(flags), overwrite=overwrite, comment=comment,
                    min_free=parse_size(min_free, "min_free"), space_check=not no_space_check, fit=fit,
                    sidecar=not no_sidecar, keep=keep, max_total=parse_size(max_total, "max_total"),
                    compress=compress, compress_level=compress_level,
                    max_pause=parse_duration(max_pause, "max_pause"),
                    snapshot=parse_snapshot(snapshot), keep_local_on_failure=keep_local_on_failure)

    if all_name is not None or target is None:
        if all_name is not None and path is not None:
            usage_error(f"--all {all_name} dumps every process of that name: give only a PATH, not a TARGET too"
                        f" ({target!r})", as_json)
        dump_all(all_name, path or target, kind, run(options, as_json=as_json, debug=debug), as_json, debug)
        return
    to_stdout = path == "-"
    progress = _TerminalProgress(f"dumping {target}") if sys.stderr.isatty() and not as_json else None

    def action() -> dumplib.DumpResult:
        try:
            return dumplib.create_dump(parse_target(target), path, kind, progress=progress, **options())
        finally:
            if progress is not None:
                progress.close()

    result = run(action, as_json=as_json, debug=debug, json_err=to_stdout)
    if as_json:
        import json  # --json's only: json's import is start-up every dump would pay

        echo(json.dumps(result.to_dict()), err=to_stdout)
        return
    for warning in result.warnings:
        echo(f"dumplib: warning: {warning}", err=True)
    echo(result_line(result, to_stdout), err=to_stdout)


def dump_all(name: Optional[str], path: Optional[str], kind: str, options: Dict[str, Any], as_json: bool,
             debug: bool) -> None:
    """`dumplib dump --all NAME [PATH]`: every process of that name now, each to its own file.

    Exit code: 0 when every process was dumped, else the code of the first error."""
    if name is None:
        usage_error("missing TARGET (a pid or a process name), or --all NAME", as_json)

    outcomes = run(lambda: dumplib.dump_all(name, path, kind, **options), as_json=as_json, debug=debug)
    worst = EXIT_OK
    for o in outcomes:
        if isinstance(o, dumplib.DumpError):
            worst = worst or exit_code_for(o)
            if as_json:  # no exit_code: one failure among several outcomes does not decide the exit alone
                echo(error_json(type(o).__name__, str(o), None, o.details()))
            else:
                echo(f"dumplib: error: {o}", err=True)
        elif as_json:
            import json

            echo(json.dumps(o.to_dict()))
        else:
            echo(result_line(o))
    if worst:
        raise Exit(worst)
