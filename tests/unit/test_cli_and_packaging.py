import subprocess
import sys

import dumplib
from dumplib_cli.app import EXIT_CODES, exit_code_for, human_bytes


def test_import_dumplib_never_imports_typer():
    code = "import sys, dumplib; assert 'typer' not in sys.modules, 'typer imported'; print(dumplib.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == dumplib.__version__


def test_import_dumplib_works_with_typer_unavailable():
    code = "import sys; sys.modules['typer'] = None; import dumplib; dumplib.DumpKind.parse('full')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_error_class_has_its_own_exit_code():
    # Bad arguments (kind, flags, sizes, compression) all share the usage code, as click's own do.
    codes = [exit_code_for(cls.__new__(cls)) for cls in EXIT_CODES]
    runtime = [c for c in codes if c != 2]
    assert len(set(runtime)) == len(runtime)
    assert exit_code_for(dumplib.InvalidCompression("x")) == exit_code_for(dumplib.InvalidKind("x")) == 2
    assert exit_code_for(dumplib.ProcessNotFound(1)) == 3
    assert exit_code_for(dumplib.DumpExists("x")) == 6
    assert exit_code_for(RuntimeError()) == 1
    public = {getattr(dumplib, n) for n in dumplib.__all__ if isinstance(getattr(dumplib, n), type)
              and issubclass(getattr(dumplib, n), dumplib.DumpError) and getattr(dumplib, n) is not dumplib.DumpError}
    assert public <= set(EXIT_CODES), public - set(EXIT_CODES)


def test_human_bytes():
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"


def test_errors_carry_their_facts():
    exc = dumplib.DumpFailed("boom", pid=7, winerror=299, hresult=0x8007012B)
    assert exc.details() == {"pid": 7, "winerror": 299, "hresult": 0x8007012B, "errno": None, "reason": None}
    amb = dumplib.AmbiguousProcess("python", [dumplib.ProcessInfo(1, "python"), dumplib.ProcessInfo(2, "python")])
    assert "pid 1 python" in str(amb) and "pid 2 python" in str(amb)
    assert [c["pid"] for c in amb.details()["candidates"]] == [1, 2]
