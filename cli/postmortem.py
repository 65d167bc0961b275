"""`dumplib postmortem install|uninstall|status|list` (and `wer` on Windows), over dumplib.postmortem only."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import typer

from dumplib import postmortem

from . import _fastparse
from ._common import echo, human_bytes, parse_size, run

JsonOpt = _fastparse.JsonOpt.to_typer(typer)
DebugOpt = _fastparse.DebugOpt.to_typer(typer)
StateOpt = typer.Option(None, "--state-dir", help="Linux: where the handler, its settings and backup live"
                                                  " (default /var/lib/dumplib/postmortem).")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Crash dumps of processes nobody is watching: register dumplib as the crash handler.")


def register(root: Any) -> None:
    """Add `dumplib postmortem` to the typer application."""
    root.add_typer(app, name="postmortem")


def _platform(state_dir: Optional[str], sysctl_file: Optional[str] = None) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if state_dir:
        out["state_dir"] = state_dir
    if sysctl_file:
        out["sysctl_file"] = sysctl_file
    return out


def _show_status(st: Dict[str, Any]) -> None:
    echo(f"registered: {st['registered']}")
    if st.get("platform") == "windows":
        echo(f"AeDebug: {json.dumps(st.get('aedebug'))}")
    else:
        echo(f"core_pattern: {st['core_pattern']}")
    config = st.get("config")
    if config:
        echo(f"dumps to: {config['dir']} (kind {config['kind']}{', fit' if config.get('fit') else ''},"
             f" max per {config.get('max_per')}, min free {human_bytes(config.get('min_free'))})")
    backup = st.get("backup")
    if backup:
        echo(f"backup: core_pattern {backup['core_pattern']!r}, core_pipe_limit {backup['core_pipe_limit']},"
             f" {backup['sysctl_file']} {'existed' if backup['sysctl_file_existed'] else 'did not exist'}"
             f" (previous handler: {backup.get('previous_handler') or 'none'})")
    if st.get("platform") == "windows":
        return
    echo(f"kernel pidfd (%F): {'yes' if st.get('kernel_pidfd') else 'no: %P with a start-time check'};"
         f" suid_dumpable {st.get('suid_dumpable')}; log {st.get('log')}")
    if st.get("warning"):
        echo(f"warning: {st['warning']}")


@app.command()
def install(
    dir: str = typer.Option(..., "--dir", help="Existing directory, writable by root only, for the dumps; Linux: or a"
                                               " store prefix, s3://BUCKET/prefix/ or az://CONTAINER/prefix/."),
    kind: str = typer.Option("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    fit: bool = typer.Option(False, "--fit", help="Take the largest kind that fits instead of refusing."),
    compress: Optional[str] = typer.Option(None, "--compress", help="zstd | gzip: compressed as it streams."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Keep at most N dumps in DIR (oldest go first)."),
    max_total: Optional[str] = typer.Option(None, "--max-total", help="Keep DIR's dumps under this size, e.g. 20G."),
    min_free: Optional[str] = typer.Option(None, "--min-free", help="Free space to keep on DIR's volume (default"
                                                                   " max(1G, 5%))."),
    max_per: str = typer.Option("10:3", "--max-per", help="At most N dumps per MINUTES per executable (MINUTES:N)."),
    max_exes_per_user: Optional[int] = typer.Option(None, "--max-exes-per-user",
                                                    help="Linux: at most N distinct executables of one user dumped per"
                                                         " --max-per window (a copy is a new path; default 16)."),
    max_seconds: float = typer.Option(120.0, "--max-seconds", help="The longest a crashed process is held (Windows: the"
                                                                    " handler's budget; a quarter of it at most"
                                                                    " waiting for the second chance)."),
    no_pidfd: bool = typer.Option(False, "--no-pidfd", help="Linux: use %P and a start-time check even where the"
                                                            " kernel has %F."),
    env_file: Optional[str] = typer.Option(None, "--env-file", help="Linux, a URL --dir: a root-only file of AWS_*/"
                                                                    "AZURE_* lines, the handler's store credentials."),
    state_dir: Optional[str] = StateOpt,
    sysctl_file: Optional[str] = typer.Option(None, "--sysctl-file", help="Linux: the sysctl.d file that keeps it"
                                                                          " across reboots."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Register dumplib as the crash handler (root), backing up what was registered."""
    def action() -> Dict[str, Any]:
        extra = _platform(state_dir, sysctl_file)
        extra.update(max_seconds=max_seconds)
        if max_exes_per_user is not None:
            extra["max_exes_per_user"] = max_exes_per_user
        if no_pidfd:
            extra["pidfd"] = False
        if env_file is not None:
            extra["env_file"] = env_file
        return postmortem.install(dir, kind=kind, fit=fit, compress=compress, keep=keep,
                                  max_total=parse_size(max_total, "max_total"),
                                  min_free=parse_size(min_free, "min_free"), max_per=max_per, **extra)

    st = run(action, as_json=as_json, debug=debug)
    echo(json.dumps(st)) if as_json else _show_status(st)


@app.command()
def uninstall(
    force: bool = typer.Option(False, "--force", help="Put back the backup even if core_pattern is no longer"
                                                      " dumplib's."),
    state_dir: Optional[str] = StateOpt,
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Put back exactly what install found (refused if the handler in place is not dumplib's)."""
    st = run(lambda: postmortem.uninstall(force=force, **_platform(state_dir)), as_json=as_json, debug=debug)
    echo(json.dumps(st)) if as_json else _show_status(st)


@app.command()
def status(state_dir: Optional[str] = StateOpt, as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """What is registered now (dumplib's handler or someone else's), settings and backup."""
    st = run(lambda: postmortem.status(**_platform(state_dir)), as_json=as_json, debug=debug)
    echo(json.dumps(st)) if as_json else _show_status(st)


@app.command(name="list")
def list_(
    dir: Optional[str] = typer.Option(None, "--dir", help="The dumps directory (default: the installed one's)."),
    state_dir: Optional[str] = StateOpt,
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """The crash dumps written, newest first (like coredumpctl list)."""
    rows = run(lambda: postmortem.list_dumps(dir, **_platform(state_dir)), as_json=as_json, debug=debug)
    if as_json:
        echo(json.dumps(rows))
        return
    echo(f"{'TIME':<24} {'PID':>7} {'SIGNAL':<10} {'KIND':<8} {'SIZE':>10}  PROCESS / DUMP")
    for r in rows:
        echo(f"{r['finished_at']:<24} {r['pid'] or '-':>7} {str(r['signal'] or '-'):<10} {str(r['kind']):<8}"
             f" {human_bytes(r['size']):>10}  {r['process_name']!r} {r['path']}")


wer = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Windows: WER LocalDumps (DumpFolder, DumpCount, DumpType) with dumplib's free-space guard.")
app.add_typer(wer, name="wer")


@wer.command(name="enable")
def wer_enable(
    folder: str = typer.Option(..., "--dir", help="Existing folder for WER's dumps (not the system drive)."),
    count: int = typer.Option(10, "--count", help="DumpCount: dumps WER keeps."),
    kind: str = typer.Option("mini", "--kind", "-k", help="mini | miniplus | full | triage (DumpType/CustomDumpFlags)."),
    exe: Optional[str] = typer.Option(None, "--exe", help="Only for this program (e.g. app.exe)."),
    min_free: Optional[str] = typer.Option(None, "--min-free", help="Free space to keep (default max(1G, 5%))."),
    per_dump: Optional[str] = typer.Option(None, "--per-dump", help="Size of one dump when no such process runs."),
    allow_system_drive: bool = typer.Option(False, "--allow-system-drive", help="Allow a folder on the system drive."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Point WER LocalDumps at a folder that can hold COUNT dumps plus the reserve."""
    st = run(lambda: postmortem.wer_enable(folder, count=count, kind=kind, exe=exe,
                                           min_free=parse_size(min_free, "min_free"),
                                           allow_system_drive=allow_system_drive,
                                           per_dump=parse_size(per_dump, "per_dump")),
             as_json=as_json, debug=debug)
    echo(json.dumps(st))


@wer.command(name="disable")
def wer_disable(exe: Optional[str] = typer.Option(None, "--exe", help="The program given to enable."),
                as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """Put back the LocalDumps values found before enable."""
    echo(json.dumps(run(lambda: postmortem.wer_disable(exe), as_json=as_json, debug=debug)))


@wer.command(name="status")
def wer_status(exe: Optional[str] = typer.Option(None, "--exe", help="A program's own LocalDumps key."),
               as_json: bool = JsonOpt, debug: bool = DebugOpt) -> None:
    """The LocalDumps values in force, and dumplib's backup."""
    echo(json.dumps(run(lambda: postmortem.wer_status(exe), as_json=as_json, debug=debug)))
