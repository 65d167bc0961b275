"""`dumplib estimate`: how big a dump would be, without reading the target's memory or stopping it."""
from __future__ import annotations

import json
from typing import Optional

import dumplib

from ._common import echo, human_bytes, parse_flags, parse_target, run
from ._fastparse import Arg, DebugOpt, JsonOpt, Opt


def estimate(
    target: str = Arg(..., help="Process id or name."),
    kind: str = Opt("mini", "--kind", "-k", help="mini | miniplus | full | triage."),
    flags: Optional[str] = Opt(None, "--flags", help="Raw mask instead of --kind."),
    as_json: bool = JsonOpt,
    debug: bool = DebugOpt,
) -> None:
    """Say how big a dump of TARGET would be, without reading its memory or stopping it."""
    est = run(lambda: dumplib.estimate(parse_target(target), kind, flags=parse_flags(flags)), as_json=as_json,
              debug=debug)
    if as_json:
        echo(json.dumps(est.to_dict()))
        return
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in est.breakdown.items() if v)
    echo(f"a {est.kind} dump of pid {est.pid} would take ~{human_bytes(est.bytes)} ({parts})")
