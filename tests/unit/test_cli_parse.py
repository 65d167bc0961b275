"""The CLI's quick parser (no typer on a valid command line) gives exactly what typer would.

Every command line is parsed both ways: typer's own parse (run with standalone_mode=False and the
command replaced by a recorder) is the reference; the quick parser must agree or hand over (None).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from dumplib_cli._fastparse import quick_parse
from dumplib_cli.app import QUICK_COMMANDS, commands, typer_app

COMMANDS = commands()

ROOT = Path(__file__).resolve().parents[2]


def typer_parse(args: List[str]) -> Optional[Dict[str, Any]]:
    got: List[Dict[str, Any]] = []
    try:
        typer_app(lambda func, kwargs: got.append(kwargs))(args=args, prog_name="dumplib", standalone_mode=False)
    except Exception:  # click's usage errors: the command line is not valid
        return None
    return got[0] if got else None


VALID = [
    ["dump", "1234"],
    ["dump", "1234", "/tmp/x.core"],
    ["dump", "myproc", "-", "--kind", "full", "-z", "zstd", "--compress-level", "3"],
    ["dump", "1234", "--kind=triage", "--overwrite", "--no-sidecar", "--json", "--debug"],
    ["dump", "-kfull", "1234", "/tmp", "--comment", "-starts-with-dash", "--keep", "5", "--max-total", "2G"],
    ["dump", "1234", "--flags", "0x1826", "--min-free", "512M", "--no-space-check", "--fit"],
    ["dump", "1234", "--kind", "mini", "--kind", "full"],  # the last one wins
    ["dump", "--", "-5"],  # after --, a dash-led word is the target
    ["dump", "1234", "--keep", "-1"],
    ["dump", "1234", "--comment="],
    ["estimate", "1234", "-k", "full", "--json"],
    ["info", "/tmp/x.core", "--json"],
    ["ps"],
    ["ps", "python", "--json"],
    ["dump"],  # no target: parsed, then refused by the command (TARGET or --all NAME), exit 2
]

HANDED_OVER = [
    ["dump", "--help"],
    ["dump", "1234", "--no-such-option"],
    ["dump", "1234", "--keep", "x"],
    ["dump", "1234", "--keep", "1.5"],
    ["dump", "1234", "--keep"],  # option without its value
    ["dump", "1234", "--overwrite=yes"],
    ["dump", "1234", "/tmp", "extra"],
    ["info"],
    ["ps", "-h"],
]


@pytest.mark.parametrize("argv", VALID, ids=" ".join)
def test_quick_parse_agrees_with_typer(argv):
    reference = typer_parse(argv)
    assert reference is not None, "the reference rejected a command line meant to be valid"
    assert quick_parse(COMMANDS[argv[0]], argv[1:]) == reference


@pytest.mark.parametrize("argv", HANDED_OVER, ids=" ".join)
def test_quick_parse_hands_over_what_it_does_not_take(argv):
    assert quick_parse(COMMANDS[argv[0]], argv[1:]) is None


def test_a_keyword_that_changes_parsing_sends_the_line_to_typer():
    from dumplib_cli._fastparse import Arg, Opt

    def plain(target: str = Arg(..., help="x"), n: Optional[int] = Opt(None, "--n", metavar="N")) -> None: ...

    def shouted(target: str = Arg(...), n: Optional[str] = Opt(None, "--n", callback=lambda v: v and v.upper())) -> None:
        ...

    assert quick_parse(plain, ["1", "--n", "2"]) == {"target": "1", "n": 2}
    assert quick_parse(shouted, ["1", "--n", "x"]) is None  # typer would run the callback: "X"


def test_every_command_is_quick_parsed():
    # A command whose parameters the quick parser cannot read would silently go through typer.
    assert tuple(COMMANDS) == QUICK_COMMANDS, "a quick command app.quick_command() does not load"
    for name, func in COMMANDS.items():
        required = [a for a in VALID if a[0] == name]
        assert required, f"no VALID command line exercises {name}"
        assert all(quick_parse(func, a[1:]) is not None for a in required), name


PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
from dumplib_cli.app import main
main(sys.argv[1:])
"""


def _cli_modules(*args: str) -> set:
    # The child writes in its console's code page (cp1252 in the Windows interpreter under Wine), where
    # rich may shorten a help line with an ellipsis byte that is not UTF-8: read what it says, not its bytes.
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, encoding="utf-8", errors="replace")
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done


#: Never on the dump path: the parser framework, compressors and retention not asked for, the other platform, and on
#: Linux what /proc and os.uname() answer more cheaply (psutil; socket for the host name; platform).
HEAVY_FOR_THE_CLI = ("typer", "click", "pydantic", "pydantic_core", "rich", "zstandard", "gzip", "traceback",
                     "dumplib.retention",
                     # tempfile (with shutil and random) is a compressed dump's scratch file only; the SDKs and
                     # dumplib._egress a URL destination's only.
                     "tempfile", "shutil", "dumplib._egress", "boto3", "azure") + (
    ("dumplib._linux",) if sys.platform == "win32" else
    # random: Windows' dump path (not tuned for start-up; it keeps dataclasses) still imports it.
    ("dumplib._windows", "dumplib.formats.minidump", "dumplib._psutil", "psutil", "socket", "platform", "random",
     # Records, not dataclasses (dumplib/_record.py): dataclasses loads inspect, ast, dis and tokenize.
     "dataclasses", "inspect", "ast", "dis", "tokenize"))


def test_the_dump_path_imports_no_parser_framework(tmp_path):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        modules, done = _cli_modules("dump", str(worker.pid), str(tmp_path), "--kind", "mini")
    finally:
        worker.kill()
        worker.wait()
    assert done.returncode == 0, done.stderr
    assert [p for p in tmp_path.iterdir() if p.suffix in (".core", ".dmp")], done.stdout
    heavy = sorted(m for m in modules for h in HEAVY_FOR_THE_CLI if m == h or m.startswith(h + "."))
    assert heavy == [], heavy


def test_help_still_comes_from_typer():
    modules, done = _cli_modules("dump", "--help")
    assert done.returncode == 0
    assert "typer" in modules and "--compress-level" in done.stdout


def test_a_bare_snapshot_reaches_create_dump_as_on(monkeypatch):
    # main() gives a bare --snapshot its value before either parser sees it, and leaves a word after
    # `--` alone (there it is a PATH). The write itself is replaced: only what reaches it counts.
    import dumplib

    from dumplib_cli.app import main

    seen: List[Dict[str, Any]] = []

    def record(target: Any, path: Any, kind: Any, **options: Any) -> None:
        seen.append(dict(options, target=target, path=path))
        raise KeyboardInterrupt  # the command's own interruption exit: no result to print

    monkeypatch.setattr(dumplib, "create_dump", record)
    with pytest.raises(SystemExit) as ended:
        main(["dump", "--snapshot", "--", "1234", "--snapshot"])
    assert ended.value.code == 130
    assert [(s["target"], s["path"], s["snapshot"]) for s in seen] == [(1234, "--snapshot", True)]
