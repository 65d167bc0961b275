"""`import dumplib` stays cheap: it loads no backend, reader, compressor, psutil or ctypes until used.

Asserted on sys.modules in a fresh interpreter, not on timings (the machine is shared and loaded);
docs/benchmarks.md has the measured milliseconds.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dumplib

ROOT = Path(__file__).resolve().parents[2]

#: What a bare `import dumplib` must not pull in: each costs milliseconds of start-up, and a program
#: that imports dumplib but never dumps (or the CLI's `--help`) should not pay for them.
HEAVY = (
    "psutil", "ctypes", "hashlib", "json", "socket", "zlib", "dataclasses", "enum", "tempfile", "typing", "re",
    "importlib", "functools", "collections",
    "typer", "click", "pydantic", "zstandard",
    "dumplib.api", "dumplib._platform", "dumplib._switch", "dumplib._linux", "dumplib._windows", "dumplib.formats",
    "dumplib.compression", "dumplib.outputs", "dumplib.dumpinfo", "dumplib.targets", "dumplib.errors",
)


def _modules_loaded_by(code: str) -> set:
    """The modules that *code* adds to sys.modules in a fresh interpreter, measured inside it.

    The probe imports nothing before the diff (json or re would hide what `code` pulls in: both load
    enum, functools and re, the bulk of typing's cost); the list comes back as a repr."""
    probe = f"import sys\n_before = set(sys.modules)\n{code}\nprint(repr(sorted(set(sys.modules) - _before)))"
    # -S: the machine's site-packages .pth hooks import things on their own; they are not dumplib's.
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return set(ast.literal_eval(done.stdout.splitlines()[-1]))


def test_import_dumplib_loads_only_dumplib():
    # Counted, not timed: any module beyond these two is start-up every user pays (typing alone,
    # with the re/enum/functools it loads, was ~10 ms of the 12 ms `import dumplib` cost).
    loaded = _modules_loaded_by("import dumplib")
    assert loaded == {"dumplib", "dumplib._version"}, f"import dumplib also loaded {sorted(loaded - {'dumplib', 'dumplib._version'})}"


def test_import_dumplib_loads_nothing_heavy():
    loaded = _modules_loaded_by("import dumplib")
    heavy = sorted(m for m in loaded for h in HEAVY if m == h or m.startswith(h + "."))
    assert heavy == [], f"import dumplib loaded {heavy}"


def test_public_names_resolve_on_first_use_and_from_import():
    # `from dumplib import X` goes through the module's __getattr__ too.
    after = _modules_loaded_by("from dumplib import DumpKind, DumpError; assert DumpKind.FULL.value == 'full'")
    assert "dumplib.kinds" in after and "dumplib.api" not in after and "psutil" not in after


def test_every_public_name_resolves_to_its_defining_module():
    for name in dumplib.__all__:
        value = getattr(dumplib, name)
        if name != "__version__":
            assert value.__module__ == f"dumplib.{dumplib._WHERE[name]}", name
    assert set(dumplib._WHERE) == set(dumplib.__all__) - {"__version__"}
    assert set(dir(dumplib)) >= set(dumplib.__all__)


def test_type_checkers_see_the_same_names():
    # The TYPE_CHECKING block is what mypy and IDEs read; it must import each name from where
    # __getattr__ finds it, or `from dumplib import X` would type-check against the wrong thing.
    tree = ast.parse((ROOT / "dumplib" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) and node.module != "typing"
            for alias in node.names}
    assert seen == dumplib._WHERE


def test_unknown_attribute_is_an_attribute_error():
    try:
        dumplib.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("dumplib.no_such_name did not raise")


#: The stores' SDKs (the azure and s3 extras): loaded only when a dump goes to a URL (docs/egress.md).
SDKS = ("azure", "boto3", "botocore", "s3transfer", "msal", "dumplib._egress")


def test_the_dump_pipeline_and_url_parsing_load_no_store_sdk():
    # Not -S: with site-packages, so an SDK that is installed could be imported (and must not be).
    probe = ("import sys\n_before = set(sys.modules)\n{}\nprint(repr(sorted(set(sys.modules) - _before)))")
    done = subprocess.run([sys.executable, "-c", probe.format(
        "import dumplib.api, dumplib.outputs, dumplib.watching, dumplib.postmortem, dumplib.remote\n"
        "dumplib.remote.parse_url('s3://bucket/dumps/'); dumplib.remote.parse_url('az://ctr/x.core')\n"
        "assert dumplib.remote.is_remote('https://acct.blob.core.windows.net/c/x')")],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    loaded = set(ast.literal_eval(done.stdout.splitlines()[-1]))
    sdk = sorted(m for m in loaded for s in SDKS if m == s or m.startswith(s + "."))
    assert sdk == [], f"the local pipeline loaded {sdk}"


def test_printable_skips_its_pattern_only_for_text_with_nothing_to_escape():
    # dumplib/_text.py compiles its pattern on the first text that needs it, and skips it for text that
    # str.isprintable() passes: right only while every character the pattern escapes is non-printable.
    import re

    from dumplib import _text

    hidden = re.compile(_text._HIDDEN_CHARS)
    escaped = [chr(c) for c in range(0x3000) if hidden.match(chr(c))]
    assert len(escaped) == 32 + 33 + 2 + 5 + 4
    assert not any(ch.isprintable() for ch in escaped)
    assert _text.printable("a\u202eb\x1bc\x9b") == "a\\u202eb\\x1bc\\x9b"
    assert _text.printable("caf\u00e9 \u00a0x") == "caf\u00e9 \u00a0x"  # not printable to isprintable, nothing to escape


def _quoted_type_expressions(path: Path, root: Path = ROOT) -> list:
    """Module-level assignments (outside `if TYPE_CHECKING:`) whose subscript holds a quoted name."""
    found = []

    def scan(body: list) -> None:
        for node in body:
            if isinstance(node, ast.If) and getattr(node.test, "id", "") != "TYPE_CHECKING":
                scan(node.body)
                scan(node.orelse)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                for sub in (s for s in ast.walk(node.value) if isinstance(s, ast.Subscript)):
                    if any(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in ast.walk(sub.slice)):
                        found.append(f"{path.relative_to(root)}:{node.lineno}")

    scan(ast.parse(path.read_text()).body)
    return found


def test_no_module_builds_a_forward_reference_at_import():
    # `PathLike = Union[str, "os.PathLike[str]"]` made typing compile the quoted text when placement.py
    # was imported: ~4 ms of every dump's start-up. Quoted names belong in annotations (strings under
    # `from __future__ import annotations`, never evaluated) or under `if TYPE_CHECKING:`.
    files = sorted((ROOT / "dumplib").rglob("*.py")) + sorted((ROOT / "cli").glob("*.py"))
    assert len(files) > 50
    found = [hit for f in files for hit in _quoted_type_expressions(f)]
    assert found == [], found



def test_the_forward_reference_finder_finds_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('from typing import Union\nTYPE_CHECKING = False\nif TYPE_CHECKING:\n    A = Union[str, "B"]\n'
                      'if True:\n    C = Union[int, "os.PathLike[str]"]\nD = Union[int, str]\n')
    assert _quoted_type_expressions(sample, tmp_path) == ["sample.py:6"]


COMPILES = """
import sys
seen = []
sys.addaudithook(lambda event, args: seen.append((repr(args[0])[:80], str(args[1]))) if event == "compile" else None)
from dumplib_cli.app import main
try:
    main(sys.argv[1:])
finally:
    print(repr(seen), file=sys.stderr)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux dump path (Windows' keeps dataclasses)")
def test_a_small_dump_compiles_no_python_source(tmp_path):
    # Every compile(), exec() or eval() of a string raises the `compile` audit event. The first compile()
    # in a process costs ~10 M instructions (~4 ms) besides its own (exec and eval do not); a dataclass
    # compiles five or six methods; a typing ForwardRef (a quoted type in an alias, a class-form
    # NamedTuple under `from __future__ import annotations`) compile()s its text. A small dump compiles
    # only the __init__ of the records it makes 16 times or more (dumplib/_record.py: Region and Segment
    # here) and a call-form NamedTuple's __new__ (collections.namedtuple's eval, cheap).
    worker = subprocess.Popen(["sleep", "120"])
    try:
        done = subprocess.run([sys.executable, "-c", COMPILES, "dump", str(worker.pid), str(tmp_path), "--kind", "mini"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(_cli_dir(tmp_path))]), "PATH": "/usr/bin:/bin"})
    finally:
        worker.kill()
        worker.wait()
    assert done.returncode == 0, done.stderr
    assert [p for p in tmp_path.iterdir() if p.suffix == ".core"], done.stdout
    seen = ast.literal_eval(done.stderr.strip().splitlines()[-1])
    compiled = [source for source, filename in seen if not filename.endswith(".py")]  # not a module without bytecode
    assert any(source.startswith("b'def __init__(self, start, end") for source in compiled), compiled  # Region's
    unexpected = [s for s in compiled if not s.startswith(("b'def __init__(self, ", "b'lambda _cls, "))]
    assert unexpected == [], unexpected
    assert len(compiled) <= 6, compiled


def _cli_dir(tmp_path: Path) -> Path:
    """A directory where `dumplib_cli` is this checkout's cli/ (pyproject.toml's package-dir)."""
    links = tmp_path / "path"
    links.mkdir()
    (links / "dumplib_cli").symlink_to(ROOT / "cli")
    return links


#: What a small dump's command must not load, found by `python -X importtime` and callgrind
#: (docs/benchmarks.md, "The one-shot command's start-up"), each for its cost in instructions:
NOT_ON_A_SMALL_DUMP = (
    # typing, ~13 M: every module of the path imports its names under TYPE_CHECKING (run-time
    # stand-ins for the few used outside annotations: dumplib/_typing.py).
    "typing",
    # OpenSSL's libcrypto, ~12 M: a dump estimated under 1 MiB is hashed by the interpreter's own
    # sha256 (dumplib/_hashing.py new_sha256).
    "hashlib", "_hashlib",
    # json, ~6 M (six regular expressions compiled at its import): dumplib/_jsontext.py writes the sidecar.
    "json",
    # zlib: a gzip-compressed dump's only.
    "zlib",
    # datetime.py (~5.5 M) and signal.py's enums (~3.9 M): their C modules instead (dumplib/_accel.py);
    # contextvars.py (~1 M, a file found and run to re-export _contextvars's classes) too.
    "datetime", "signal", "contextvars",
    # A URL destination's (urllib.parse with ipaddress) and a non-ASCII process name's (unicodedata) only.
    "urllib", "urllib.parse", "ipaddress", "unicodedata",
    # The errors' Reason enum, ~3 M (27 members): built at the first error that carries a reason.
    "dumplib._reasons",
    # The coredump_filter IntFlag, ~1.5 M: raw masks (--flags) only.
    "dumplib._linux.core.corefilter",
    # mmap, ~0.6 M (a C module loaded): only a core of MAP_AT_LEAST or more is written through a mapping
    # (dumplib/_linux/core/memory.py FileSink.prepare).
    "mmap",
    # The mapped output's rules and libc calls, ~0.7 M: only a core estimated at MAP_AT_LEAST or more
    # asks them (dumplib/_linux/backend.py, FileSink).
    "dumplib._linux.core.mapped",
    # The staged copy's memory, likewise (dumplib/_linux/core/staged.py).
    "dumplib._linux.core.staged",
    # A URL destination's parsing and naming, ~0.9 M (a record class built): dumplib/api.py imports
    # dumplib/remote.py only for a path holding "://".
    "dumplib.remote",
)

MODULES_AT_EXIT = """
import atexit, sys
atexit.register(lambda: print(repr(sorted(sys.modules)), file=sys.stderr))
from dumplib_cli.app import main
main(sys.argv[1:])
"""


def _small_dump_under(probe: str, tmp_path: Path) -> "subprocess.CompletedProcess[str]":
    """`dump PID TMP_PATH --kind mini` of a sleeping process, run by *probe* (a `python -S -c` script
    that reports on stderr at exit) with nothing but this checkout on its path; it must succeed."""
    worker = subprocess.Popen(["sleep", "120"])
    try:
        done = subprocess.run([sys.executable, "-S", "-c", probe, "dump", str(worker.pid), str(tmp_path),
                               "--kind", "mini"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(_cli_dir(tmp_path))]),
                                   "PATH": "/usr/bin:/bin"})
    finally:
        worker.kill()
        worker.wait()
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux dump path (Windows' is not tuned for start-up)")
def test_a_small_dump_loads_none_of_what_it_does_not_need(tmp_path):
    # -S: nothing of the machine's site-packages (.pth hooks, an editable install's finder) is loaded
    # first and hides a module the dump path pulls in. The probe itself imports only atexit and sys.
    done = _small_dump_under(MODULES_AT_EXIT, tmp_path)
    core = next(p for p in tmp_path.iterdir() if p.suffix == ".core")
    loaded = set(ast.literal_eval(done.stderr.strip().splitlines()[-1]))
    assert "dumplib._linux.backend" in loaded and "dumplib.sidecar" in loaded  # the probe saw the dump's path
    assert sorted(loaded & set(NOT_ON_A_SMALL_DUMP)) == []
    # The built-in sha256 the sidecar then holds, against coreutils' reader of the file.
    sidecar = json.loads(Path(str(core) + ".json").read_text())
    digest = subprocess.run(["sha256sum", str(core)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert sidecar["sha256"] == digest


THREADS_AT_EXIT = """
import atexit, sys, threading
names = []
real_start = threading.Thread.start
def start(self):
    names.append(self.name)
    real_start(self)
threading.Thread.start = start
atexit.register(lambda: print(repr(names), file=sys.stderr))
from dumplib_cli.app import main
main(sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux dump path (Windows' is not tuned for start-up)")
def test_a_small_dump_is_hashed_once_verified_by_no_thread_of_its_own(tmp_path):
    # A dump estimated at 1 MiB or less (dumplib/_hashing.py SMALL_HASH) is hashed after its write, not
    # followed by a hashing thread: one thread less to start (docs/benchmarks.md, eleventh session).
    # Larger dumps are followed once the target runs (tests/e2e_linux/test_sidecar_hash.py).
    done = _small_dump_under(THREADS_AT_EXIT, tmp_path)
    names = ast.literal_eval(done.stderr.strip().splitlines()[-1])
    assert any(name.startswith("dumplib-tracer") for name in names), names  # the probe saw the dump's threads
    assert "dumplib-sha256" not in names, names
    core = next(p for p in tmp_path.iterdir() if p.suffix == ".core")
    sidecar = json.loads(Path(str(core) + ".json").read_text())
    digest = subprocess.run(["sha256sum", str(core)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert sidecar["sha256"] == digest


COLLECTIONS_AT_EXIT = """
import atexit, gc, sys
from dumplib_cli.app import main
passes = []
gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))
atexit.register(lambda: print(repr(passes), file=sys.stderr))
sys.argv = ["dumplib"] + sys.argv[1:]
main()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux dump path (Windows' is not tuned for start-up)")
def test_the_dump_command_runs_no_cyclic_collection(tmp_path):
    # The console script's quick command, as `dumplib dump` runs it (main() without arguments): the
    # collector's passes over its imports cost start-up and free next to nothing.
    done = _small_dump_under(COLLECTIONS_AT_EXIT, tmp_path)
    assert [p for p in tmp_path.iterdir() if p.suffix == ".core"], done.stdout
    assert ast.literal_eval(done.stderr.strip().splitlines()[-1]) == []


def test_a_command_typer_parses_keeps_the_cyclic_collector(tmp_path):
    # `watch` and every command line the quick parser does not take run under typer, and may run on.
    probe = COLLECTIONS_AT_EXIT.replace("print(repr(passes)", "print(repr(gc.isenabled())")
    done = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True, cwd=ROOT,  # typer: site
                          timeout=120, env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(_cli_dir(tmp_path))]),
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "Usage" in done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux dump path (Windows' is not tuned for start-up)")
def test_a_program_calling_main_keeps_its_cyclic_collector(tmp_path):
    import gc

    from dumplib_cli.app import main

    worker = subprocess.Popen(["sleep", "120"])
    try:
        main(["dump", str(worker.pid), str(tmp_path), "--kind", "mini"])
    finally:
        worker.kill()
        worker.wait()
    assert gc.isenabled() and [p for p in tmp_path.iterdir() if p.suffix == ".core"]


def test_the_run_time_stand_ins_behave_as_typing_where_dumplib_relies_on_it():
    import pickle
    import typing

    from dumplib import _typing

    # runtime_checkable: isinstance() asks for every declared member, data and methods, as typing's does.
    def holder(protocol, checkable):
        @checkable
        class Holder(protocol):
            threads: dict
            snapshot_pid: int

            def take_snapshot(self, at: int) -> int: ...

        return Holder

    class Full:
        threads, snapshot_pid = {}, 1

        def take_snapshot(self, at):
            return at

    class NoMethod:
        threads, snapshot_pid = {}, 1

    class NoData:
        threads = {}

        def take_snapshot(self, at):
            return at

    real, stand_in = holder(typing.Protocol, typing.runtime_checkable), holder(_typing.Protocol, _typing.runtime_checkable)
    for obj in (Full(), NoMethod(), NoData(), object()):
        assert isinstance(obj, stand_in) == isinstance(obj, real), type(obj).__name__
    assert isinstance(Full(), stand_in) and not isinstance(NoData(), stand_in)
    assert stand_in.__name__ == "Holder" and stand_in.__module__ == __name__ and stand_in.take_snapshot

    # The real protocol: a snapshot's stopper holds it, the plain one does not (Linux's: dumplib._linux
    # imports on Linux only, and this file also runs inside Windows Python under Wine).
    if sys.platform.startswith("linux"):
        from dumplib._linux.ptrace.stopper import SnapshotHolder, StoppedProcess
        from dumplib._linux.snapshot.clone import SnapshotStopper

        assert isinstance(SnapshotStopper(1), SnapshotHolder) and not isinstance(StoppedProcess(1), SnapshotHolder)

    # NamedTuple's call form: fields, annotations, the caller's module (pickle finds the class by it).
    Stat = _typing.NamedTuple("Stat", [("state", str), ("ppid", int)])
    same = typing.NamedTuple("Stat", [("state", str), ("ppid", int)])
    assert Stat._fields == same._fields and Stat.__annotations__ == same.__annotations__
    assert Stat.__module__ == same.__module__ == __name__ and Stat("S", 1) == same("S", 1) == ("S", 1)
    if sys.platform.startswith("linux"):
        from dumplib._linux.proc.pidfiles import Stat as ProcStat

        assert ProcStat.__module__ == "dumplib._linux.proc.pidfiles"
        row = ProcStat(*([0] * len(ProcStat._fields)))
        assert pickle.loads(pickle.dumps(row)) == row

    # Generic, TypeVar, overload: subscripting and declaring cost nothing and change nothing.
    T = _typing.TypeVar("T")

    class Box(_typing.Generic[T]):
        def __init__(self, item):
            self.item = item

    assert Box[int] is Box and Box(3).item == 3

    @_typing.overload
    def f(x: int) -> int: ...
    def f(x):  # noqa: F811
        return x * 2

    assert f(2) == 4


@pytest.mark.parametrize("separators", [None, (",", ":")])
@pytest.mark.parametrize("indent", [None, 0, 2])
def test_the_json_writer_writes_what_json_dumps_does(indent, separators):
    from dumplib._jsontext import dumps

    hostile = "caf\u00e9 \"q\" \\ \n\t\x00\x1f\x7f\u2028\u202e \udcff\U0001f600 </script>"  # surrogateescape'd byte too
    shapes = [
        {"tool": "dumplib", "pid": 1234, "command_line": ["/bin/x", hostile, ""], "flags": None, "snapshot": False,
         "ok": True, "stopped_seconds": 0.0123, "size": 2 ** 70, "warnings": [], "facts": {}, "nested": {"a": [[], {}]},
         hostile: -0.0},
        [1.5e300, -1e-7, float("nan"), float("inf"), float("-inf"), 10 ** 20, -3, (1, "two")],
        "", 0, None, True, [], {},
    ]
    for obj in shapes:
        assert dumps(obj, indent=indent, separators=separators) == json.dumps(obj, indent=indent, separators=separators)
    # What it leaves to json (a number key, a str subclass, an object json refuses) json answers.
    assert dumps({1: "a", "b": None}, indent=indent) == json.dumps({1: "a", "b": None}, indent=indent)
    assert dumps(["x", type("S", (str,), {})("y")]) == json.dumps(["x", "y"])
    with pytest.raises(TypeError):
        dumps({"a": object()})


def test_the_c_modules_hold_what_datetime_and_signal_give():
    import contextvars
    import datetime
    import signal

    from dumplib._accel import contextvars as fast_contextvars
    from dumplib._accel import datetime as fast_datetime
    from dumplib._accel import signal as fast_signal

    # The same classes: the hand-over's ContextVar (dumplib/_linux/ptrace/handover.py) is contextvars'.
    for name in contextvars.__all__:
        assert getattr(fast_contextvars, name) is getattr(contextvars, name), name

    # The same classes: a DumpResult's times are datetime.datetime whichever module made them.
    for name in ("datetime", "date", "time", "timedelta", "timezone"):
        assert getattr(fast_datetime, name) is getattr(datetime, name), name
    # The same numbers and functions, as plain ints where signal gives its int enums.
    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGTRAP", "SIG_BLOCK",
                         "SIG_SETMASK", "SIG_IGN", "SIG_DFL", "SIGBREAK") if hasattr(signal, n)]  # Windows has fewer
    assert {"SIGINT", "SIGTERM", "SIG_IGN", "SIG_DFL"} <= set(names)
    for name in names:
        assert getattr(fast_signal, name) == getattr(signal, name), name
    assert fast_signal.valid_signals() == signal.valid_signals()
    assert fast_signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGINT)
    if not hasattr(signal, "pthread_sigmask"):
        return  # Windows: no signal masks
    old = fast_signal.pthread_sigmask(fast_signal.SIG_BLOCK, [fast_signal.SIGTTOU])
    try:
        assert signal.SIGTTOU in fast_signal.pthread_sigmask(fast_signal.SIG_BLOCK, [])
        assert fast_signal.pthread_sigmask(fast_signal.SIG_BLOCK, []) == signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        fast_signal.pthread_sigmask(fast_signal.SIG_SETMASK, old)
    assert fast_signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGINT)
