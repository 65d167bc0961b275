"""`dumplib ps`: the processes one could dump, with the memory a dump of each would cover."""
from __future__ import annotations

import json
from typing import List, Optional

import dumplib

from ._common import echo, human_bytes, run
from ._fastparse import Arg, DebugOpt, JsonOpt


def ps(
    filter: Optional[str] = Arg(None, help="Keep processes whose name contains this, or this pid."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """List processes (pid, name, user, private and resident memory) to find a dump target."""
    procs: List[dumplib.ProcessInfo] = run(lambda: dumplib.processes(filter), as_json=as_json, debug=debug)
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
