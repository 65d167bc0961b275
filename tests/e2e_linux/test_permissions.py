"""Access refused by the kernel, for real: the dumper runs as `nobody` (uid 65534).

/root is not readable by nobody, so the test builds a world-readable copy of what the dumper
needs (the dumplib package, psutil, the C target) and runs the system python3 as nobody.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import psutil
import pytest

import dumplib
from helpers import require
from linuxrig import NOBODY, as_nobody, run_target

pytestmark = pytest.mark.linux

SYSTEM_PYTHON = "/usr/bin/python3"



@pytest.fixture(scope="module")
def shared(target_exe) -> Iterator[Path]:
    require(os.geteuid() == 0, "switching to uid 65534 needs root")
    require(os.path.exists(SYSTEM_PYTHON), f"{SYSTEM_PYTHON} (Debian's python3) is needed to run as nobody")
    root = Path(tempfile.mkdtemp(prefix="dumplib-nobody-", dir="/tmp"))
    try:
        shutil.copytree(Path(dumplib.__file__).parent, root / "dumplib")
        shutil.copytree(Path(psutil.__file__).parent, root / "psutil")
        shutil.copy(target_exe, root / "target")
        (root / "out").mkdir()
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & (stat.S_IXUSR | stat.S_IFDIR) else 0))
        (root / "out").chmod(0o1777)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _dump_as_nobody(shared: Path, pid: int) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(shared)!r}); import dumplib\n"
            f"try:\n    dumplib.create_dump({pid}, {str(shared / 'out')!r}, 'full')\n"
            "except dumplib.DumpError as e:\n    print(json.dumps({'type': type(e).__name__, 'message': str(e), **e.details()}))\n")
    done = subprocess.run([SYSTEM_PYTHON, "-c", code], preexec_fn=as_nobody, capture_output=True, text=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


def test_another_users_process_is_access_denied_with_the_reasons(shared):
    with run_target([str(shared / "target")]) as t:  # runs as root
        err = _dump_as_nobody(shared, t.pid)
        assert err["type"] == "AccessDenied" and err["pid"] == t.pid, err
        assert f"it belongs to uid 0, not to this user (uid {NOBODY})" in err["message"], err
        assert "CAP_SYS_PTRACE" in err["message"], err
        assert os.listdir(shared / "out") == []
        t.assert_running_untraced()


def test_a_non_dumpable_process_of_the_same_user_is_access_denied_and_says_why(shared):
    with run_target([str(shared / "target"), "--nodump"], preexec=as_nobody) as t:
        assert os.stat(f"/proc/{t.pid}/status").st_uid == 0  # what the kernel does to non-dumpable processes
        err = _dump_as_nobody(shared, t.pid)
        assert err["type"] == "AccessDenied", err
        assert "not dumpable" in err["message"] and "PR_SET_DUMPABLE" in err["message"], err
        assert os.listdir(shared / "out") == []
        t.assert_running_untraced()
    # Root (CAP_SYS_PTRACE) may dump it, as the message says.
    with run_target([str(shared / "target"), "--nodump"], preexec=as_nobody) as t:
        result = dumplib.create_dump(t.pid, shared / "out", "mini", sidecar=False)
        assert dumplib.info(result.path).pid == t.pid
        os.remove(result.path)
