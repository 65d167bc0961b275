"""`dumplib info`: what a dump file holds, and whether it is complete (exit code 12 when it is not)."""
from __future__ import annotations

import json

import dumplib

from ._common import EXIT_CODES, Exit, echo, human_bytes, run
from ._fastparse import Arg, DebugOpt, JsonOpt


def info(
    dumpfile: str = Arg(..., help="A minidump (.dmp) or ELF core (.core), plain or .gz/.zst."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Describe a dump file: format, process, kind, threads, modules, memory, comment, completeness."""
    d = run(lambda: dumplib.info(dumpfile), as_json=as_json, debug=debug)
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
