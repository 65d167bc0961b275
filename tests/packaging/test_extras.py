"""Each extra, in a venv that has the wheel and that extra only: without it, the error names the line to run;
with it (that very line run), the feature works, checked by an independent reader."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Set

import pytest

from helpers import require
from linuxrig import have
from pkgrig import clean_env

pytestmark = [pytest.mark.linux,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dumps a Linux process")]


def _installed(venv: Path) -> Set[str]:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                          text=True, env=clean_env(), timeout=300, check=True)
    return {p["name"].lower() for p in json.loads(done.stdout)}


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="Python 3.14 has zstd in the stdlib: no extra to need")
def test_zstd_extra_is_named_by_the_error_and_is_all_zstd_needs(dists, tmp_path):
    require(have("zstd"), "the zstd tool is not installed (apt-get install zstd)")
    require(have("readelf"), "readelf is not installed (apt-get install binutils)")
    venv, outdir = tmp_path / "venv", tmp_path / "out"
    outdir.mkdir()
    env = clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    got = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(dists.wheel)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert got.returncode == 0, got.stderr
    bare = _installed(venv)
    assert "zstandard" not in bare
    target = subprocess.Popen(["sleep", "600"])
    try:
        dump = [str(venv / "bin" / "dumplib"), "dump", str(target.pid), str(outdir), "--kind", "mini", "-z", "zstd"]
        refused = subprocess.run(dump, capture_output=True, text=True, env=env, timeout=300)
        assert refused.returncode == 2, refused.stderr
        assert os.listdir(outdir) == []  # refused before anything was written
        line = re.search(r"(\S+ -m pip install '[^']+')", refused.stderr)
        assert line and line.group(1).startswith(str(venv / "bin" / "python")), refused.stderr  # this venv's python
        fixed = subprocess.run(["sh", "-c", line.group(1)], capture_output=True, text=True, env=env, timeout=600)
        assert fixed.returncode == 0, fixed.stderr
        assert _installed(venv) - bare == {"zstandard"}  # the extra, and only it
        done = subprocess.run(dump + ["--json"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    finally:
        target.kill()
        target.wait()
    path = Path(json.loads(done.stdout)["path"])
    assert path.name.endswith(".core.zst")
    raw = tmp_path / "raw.core"
    unpacked = subprocess.run(["zstd", "-q", "-d", str(path), "-o", str(raw)], capture_output=True, text=True,
                              timeout=300)
    assert unpacked.returncode == 0, unpacked.stderr
    notes = subprocess.run(["readelf", "-h", "-n", "-W", str(raw)], capture_output=True, text=True, timeout=120)
    assert re.search(r"Type:\s+CORE", notes.stdout) and "NT_PRSTATUS" in notes.stdout, notes.stdout[:2000]
    shutil.rmtree(venv)
