import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dumplib
from dumplib_cli._common import exit_code_for, human_bytes


def test_import_dumplib_never_imports_typer():
    code = "import sys, dumplib; assert 'typer' not in sys.modules, 'typer imported'; print(dumplib.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == dumplib.__version__


def test_import_dumplib_works_with_typer_unavailable():
    code = "import sys; sys.modules['typer'] = None; import dumplib; dumplib.DumpKind.parse('full')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _readme_exit_codes() -> "dict[int, str]":
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = text.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([\d /]+) \| (.+?) \|$", table, re.M)
    assert rows, "README.md has no exit-code table"
    return {int(code): meaning for codes, meaning in rows for code in codes.split(" / ")}


def test_exit_codes_are_the_ones_the_readme_table_documents():
    # The expected codes come from README.md's table, not from the mapping under test.
    documented = _readme_exit_codes()
    named = {}
    for code, meaning in documented.items():
        first = meaning.split(" ", 1)[0]
        cls = getattr(dumplib, first, None)
        if isinstance(cls, type) and issubclass(cls, dumplib.DumpError):
            named[cls] = code
    assert len(named) >= 11, named  # every error class README names has a row
    for cls, code in named.items():
        assert exit_code_for(cls.__new__(cls)) == code, (cls.__name__, code)
    assert documented[2].startswith("bad usage") and "unknown kind" in documented[2] and "compression" in documented[2]
    assert exit_code_for(dumplib.InvalidKind("x")) == exit_code_for(dumplib.InvalidCompression("x")) == 2
    assert "--keep" in documented[2] and exit_code_for(dumplib.InvalidArgument("x", argument="keep", value=0)) == 2
    assert documented[1].startswith("internal error") and exit_code_for(RuntimeError()) == 1
    assert documented[0].startswith("dump written") and documented[130].startswith("interrupted")
    public = {getattr(dumplib, n) for n in dumplib.__all__ if isinstance(getattr(dumplib, n), type)
              and issubclass(getattr(dumplib, n), dumplib.DumpError) and getattr(dumplib, n) is not dumplib.DumpError}
    usage = {dumplib.InvalidKind, dumplib.InvalidCompression, dumplib.InvalidArgument}
    assert public - usage <= set(named), public - set(named)


def test_human_bytes():
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"


def test_errors_carry_their_facts():
    exc = dumplib.DumpFailed("boom", pid=7, winerror=299, hresult=0x8007012B)
    assert exc.details() == {"pid": 7, "winerror": 299, "hresult": 0x8007012B, "errno": None, "reason": None,
                             "max_pause": None, "kept": None}
    amb = dumplib.AmbiguousProcess("python", [dumplib.ProcessInfo(1, "python"), dumplib.ProcessInfo(2, "python")])
    assert "pid 1 python" in str(amb) and "pid 2 python" in str(amb)
    assert [c["pid"] for c in amb.details()["candidates"]] == [1, 2]


def test_license_file_is_the_mit_license_pyproject_declares():
    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text()
    # PEP 639: an SPDX expression and the files it ships (the table form stops building after 2027-02-18).
    assert re.search(r'^license = "MIT"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
    text = (root / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the dumplib authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def _readme_usage() -> "dict[str, set[str]]":
    """Every option README.md's usage blocks list, by the command they are listed under."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed: "dict[str, set[str]]" = {}
    blocks: "list[list[str]]" = []
    fence: "str | None" = None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = line[3:] if fence is None else None
            if fence == "":  # a plain block: usage (sh and python blocks are commands and code)
                blocks.append([])
        elif fence == "":
            blocks[-1].append(line)
    for block in blocks:
        command = None
        for line in block:
            head = re.match(r"dumplib (\w+)", line)
            if head:
                command = head.group(1)
            elif not line.startswith(" "):
                command = None  # output or a comment, not usage
            if command:
                listed.setdefault(command, set()).update(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line))
    return listed


def _help(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # no option name cut by the box
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", *args, "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_option_the_readme_lists_is_in_that_commands_help():
    listed = _readme_usage()
    assert {"dump", "estimate", "info", "ps", "watch"} <= set(listed), listed
    assert {"--kind", "--compress", "--max-pause", "--snapshot", "--json"} <= listed["dump"]
    for command, options in listed.items():
        shown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", _help(command)))
        assert options <= shown, (command, sorted(options - shown))


def test_shell_completion_and_version_are_offered_and_documented():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    top = _help()
    for option in ("--install-completion", "--show-completion", "--version"):
        assert option in top and f"dumplib {option}" in readme, option
    # typer finds the shell among its parents (a suite run in the background may have none): bash it is,
    # where there is a bash (the Windows interpreter the Wine run uses has none; PowerShell's script is
    # typer's own and shown by the workflow on real Windows).
    if shutil.which("bash") is not None:
        script = subprocess.run(["bash", "-c", '"$0" -m dumplib_cli --show-completion; exit $?', sys.executable],
                                capture_output=True, text=True, timeout=120)
        assert script.returncode == 0 and "_DUMPLIB_COMPLETE=complete_bash" in script.stdout, script.stdout
    else:
        assert sys.platform == "win32", "no bash on a POSIX system running the suite"
    version = subprocess.run([sys.executable, "-m", "dumplib_cli", "--version"], capture_output=True, text=True,
                             timeout=120)
    assert version.stdout == f"dumplib {dumplib.__version__}\n"
