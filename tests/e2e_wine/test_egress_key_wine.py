"""The store retention key under Wine, through the dumplib CLI in real Windows CPython (issue #19).

Wine keeps no security descriptor for a file: GetSecurityInfo on an open handle answers one made from
the Unix mode (the owner's and SYSTEM's full access, and an Everyone entry when the mode lets others
read, or write a directory). So the part of the rule Wine can show is shown from the Linux side: a key
file whose mode lets others read is refused, judged on the handle dumplib opened (exit 2,
InvalidArgument, before any store or SDK is reached), and the same file made 0600 passes; no key is
made in a directory others can write. The rest (DACLs set on NTFS, reparse points)
runs on real Windows (tests/unit/test_windows_private.py, in the Windows workflow)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from winrig import Rig, windows_path

pytestmark = pytest.mark.wine


def _dump_to_a_store(rig: Rig, pid: int, key: Path) -> "tuple[int, dict]":
    """`dumplib dump PID az://... --keep 2 --json` with *key* as DUMPLIB_EGRESS_KEY; (exit code, its JSON)."""
    env = {"DUMPLIB_EGRESS_KEY": windows_path(key), "AZURE_STORAGE_CONNECTION_STRING": ""}
    done = rig.run_python(["-m", "dumplib_cli", "dump", str(pid), "az://dumps/wine/{name}.dmp", "--keep", "2",
                           "--json"], env=env, timeout=300)
    return done.returncode, json.loads(done.stdout or "{}")


def test_a_key_file_others_can_read_is_refused_on_its_handle_and_passes_once_private(rig: Rig, target,
                                                                                      tmp_path: Path) -> None:
    key = tmp_path / "egress-key"
    key.write_text("5a" * 32 + "\n")
    os.chmod(key, 0o644)
    code, out = _dump_to_a_store(rig, target.pid, key)
    error = out.get("error", {})
    assert code == 2 and error.get("type") == "InvalidArgument", out
    assert error.get("argument") == "DUMPLIB_EGRESS_KEY" and error.get("value") == windows_path(key), error
    assert "can be read or changed by S-1-1-0 (Everyone)" in error.get("message", ""), error
    assert "5a5a" not in json.dumps(out)  # the key is never told
    os.chmod(key, 0o600)
    code, out = _dump_to_a_store(rig, target.pid, key)
    error = out.get("error", {})
    # Past the key: the store's extra is not installed in this interpreter, which is the next refusal.
    assert error.get("argument") != "DUMPLIB_EGRESS_KEY", error
    assert code == 14 and error.get("type") == "RemoteDestinationError" and error.get("reason") == "no-extra", out


MAKE_KEY = r"""
import os, sys
os.environ["USERPROFILE"] = sys.argv[1]
os.environ.pop("DUMPLIB_EGRESS_KEY", None)
from dumplib._egress import signing
from dumplib._switch import current
from dumplib.errors import InvalidArgument
try:
    print("made", len(signing.load_key(current().host())))
except InvalidArgument as exc:
    print("refused", exc.message)
"""


def test_the_key_is_not_made_in_a_directory_others_can_write(rig: Rig, tmp_path: Path) -> None:
    script = tmp_path / "make_key.py"
    script.write_text(MAKE_KEY)
    home = tmp_path / "home"
    (home / ".dumplib").mkdir(parents=True)
    os.chmod(home / ".dumplib", 0o777)
    done = rig.run_python([windows_path(script), windows_path(home)], timeout=300)
    assert done.stdout.startswith("refused"), done.stdout + done.stderr
    assert "not this user's private directory (can be written to by S-1-1-0 (Everyone)" in done.stdout, done.stdout
    assert list((home / ".dumplib").iterdir()) == []
    os.chmod(home / ".dumplib", 0o700)
    done = rig.run_python([windows_path(script), windows_path(home)], timeout=300)
    assert done.stdout.strip() == "made 32", done.stdout + done.stderr
    assert [p.name for p in (home / ".dumplib").iterdir()] == ["egress-key"]
