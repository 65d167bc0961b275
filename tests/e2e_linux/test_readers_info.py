"""`dumplib info` on a core lists the loaded objects as modules, as gdb's `info sharedlibrary` (the link_map)
and the executable name them: not the locale files, the gconv cache or a data file the process mapped."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import dumplib
from helpers import require
from linuxrig import build_source, dumplib_cli, gdb, have, run_target

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def mapper_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("mapper"), HERE / "mapped_files_target.c")


def _gdb_libraries(exe: Path, core: str) -> set:
    out = gdb(str(exe), core, "info sharedlibrary")
    found = {os.path.realpath(m) for m in re.findall(r"^0x[0-9a-f]+\s+0x[0-9a-f]+\s+\S+\s+(/\S+)$", out, re.M)}
    assert found, out
    return found


@pytest.mark.parametrize("kind", ["mini", "full", "triage", "mini-zstd"])
def test_info_modules_are_the_loaded_objects(mapper_exe, outdir, tmp_path, kind):
    data = tmp_path / "data.bin"
    data.write_bytes(b"not an object\n" * 300)
    with run_target([str(mapper_exe), str(data)]) as t:
        assert t.info["iconv"] == 1 and t.info["data"] == 1
        with open(f"/proc/{t.pid}/maps") as f:
            mapped = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
        if kind == "mini-zstd":  # read without the link_map (a compressed core is not read at random)
            require(have("zstd"), "zstd is not installed (apt-get install zstd)")
            result = dumplib.create_dump(t.pid, outdir / "mini.core.zst", "mini", compress="zstd", sidecar=False)
        else:
            result = dumplib.create_dump(t.pid, outdir / f"{kind}.core", kind)
    not_objects = {p for p in mapped if "gconv-modules" in p or "/locale" in p or p == str(data)}
    assert any("gconv-modules" in p for p in not_objects) and str(data) in not_objects, mapped
    done = dumplib_cli("info", result.path, "--json")
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)["modules"]
    plain = result.path
    if kind == "mini-zstd":
        plain = str(tmp_path / "plain.core")
        subprocess.run(["zstd", "-q", "-d", result.path, "-o", plain], check=True)
    expected = _gdb_libraries(mapper_exe, plain) | {os.path.realpath(mapper_exe)}
    assert {os.path.realpath(m) for m in modules} == expected, (modules, expected)
    assert any(m.endswith("/UTF-16.so") for m in modules), modules  # dlopen'ed by iconv_open: loaded
    assert not not_objects & set(modules), modules
