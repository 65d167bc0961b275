"""With --json anywhere on the command line every error is one JSON object on stdout, usage errors too.

A usage error that typer finds (an unknown option, a missing argument or option value, a value of the
wrong type) and one the command finds (a bad kind, size or duration) read the same to a script: one
line of JSON, ``{"error": {"type", "message", "exit_code": 2, ...}}``, exit code 2, nothing on
stderr and never click's box. Without --json, typer's own text stays.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import List

import pytest

import dumplib
from dumplib_cli import _common

#: What click/rich draw a usage error in; none of it may reach a script that asked for JSON.
BOX = "╭╮╰╯│─"

#: pid 1 is never dumped by these: each line is refused before any process is looked at.
CASES = [
    # (command line, error type, text in the message)
    (["dump", "1", "--kind", "bogus", "--json"], "InvalidKind", "bogus"),
    (["dump", "--bogus-option", "1", "--json"], "Usage", "No such option: --bogus-option"),
    (["dump", "1", "--json", "--kind"], "Usage", "requires an argument"),
    (["dump", "1", "--keep", "x", "--json"], "Usage", "--keep"),
    (["dump", "1", "--min-free", "12XB", "--json"], "InvalidArgument", "not a size"),
    (["dump", "1", "--max-total", "lots", "--json"], "InvalidArgument", "not a size"),
    (["dump", "1", "--max-pause", "5q", "--json"], "InvalidArgument", "not a duration"),
    (["dump", "1", "--json=yes"], "Usage", "--json"),
    (["estimate", "--json"], "Usage", "Missing argument"),
    (["info", "--json"], "Usage", "Missing argument"),
    (["ps", "a", "b", "--json"], "Usage", "unexpected extra argument"),
    (["--json", "bogus-command"], "Usage", "No such"),
    (["watch", "1", "--cpu", "x", "--json"], "Usage", "--cpu"),
    (["watch", "1", "--on-exit", "--memory", "1XB", "--json"], "InvalidArgument", "not a size"),
    (["watch", "1", "--on-exit", "--max-pause", "soon", "--json"], "InvalidArgument", "not a duration"),
    (["postmortem", "install", "--json"], "Usage", "Missing option '--dir'"),
    (["dump", "--all", "x", "1", "/tmp", "--json"], "Usage", "give only a PATH"),
    (["dump", "--json"], "Usage", "missing TARGET"),
]


def _cli(args: List[str]) -> subprocess.CompletedProcess:
    # `python -m dumplib_cli`: the package on sys.path (PYTHONPATH) is the one under test.
    return subprocess.run([sys.executable, "-m", "dumplib_cli", *args], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "COLUMNS": "80"})


@pytest.mark.parametrize("args,kind,says", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_with_json_a_usage_error_is_one_json_object_and_exit_2(args, kind, says):
    done = _cli(args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 1 and not any(c in done.stdout for c in BOX), done.stdout
    error = json.loads(done.stdout)["error"]
    assert error["type"] == kind and error["exit_code"] == 2, error
    assert says.lower() in error["message"].lower(), error


@pytest.mark.parametrize("args,says", [(["dump", "--bogus-option", "1"], "No such option"),
                                       (["estimate"], "Missing argument"),
                                       (["dump", "1", "--kind"], "requires an argument")], ids=str)
def test_without_json_a_usage_error_is_typers_text(args, says):
    done = _cli(args)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert says in done.stderr and not done.stderr.lstrip().startswith("{"), done.stderr


def test_json_after_a_double_dash_belongs_to_the_launched_command():
    # `watch --launch -- prog --json`: the --json is prog's, so dumplib's mistake stays typer's text.
    done = _cli(["watch", "--launch", "--bogus", "--", "prog", "--json"])
    assert done.returncode == 2 and done.stdout == "" and "No such option" in done.stderr, done


def test_bad_values_are_usage_errors_by_json_and_by_exit_code():
    done = _cli(["dump", "1", "--min-free", "12XB", "--json"])
    error = json.loads(done.stdout)["error"]
    assert error["argument"] == "min_free" and error["value"] == "12XB", error


@pytest.mark.parametrize("text", ["12XB", "G", "", "1.2.3M", "-"])
def test_a_bad_size_is_invalid_argument_not_invalid_kind(text):
    with pytest.raises(dumplib.InvalidArgument) as caught:
        _common.parse_size(text, "max_total")
    assert not isinstance(caught.value, dumplib.InvalidKind)
    assert caught.value.details() == {"argument": "max_total", "value": text}


@pytest.mark.parametrize("text", ["5q", "0", "-3s", "soon", "", "0ms"])
def test_a_bad_duration_is_invalid_argument_not_invalid_kind(text):
    with pytest.raises(dumplib.InvalidArgument) as caught:
        _common.parse_duration(text, "max_pause")
    assert not isinstance(caught.value, dumplib.InvalidKind)
    assert caught.value.details() == {"argument": "max_pause", "value": text}


def test_good_sizes_and_durations_still_parse():
    assert _common.parse_size("512M", "x") == 512 << 20 and _common.parse_size("1.5GiB", "x") == 3 << 29
    assert _common.parse_size("4096", "x") == 4096 and _common.parse_size(None, "x") is None
    assert _common.parse_duration("500ms", "x") == 0.5 and _common.parse_duration("2m", "x") == 120.0
    assert _common.parse_duration("off", "x") is None and _common.parse_duration(None, "x") is None
