"""The MAC that lets store retention tell dumplib's own dumps from anything else under a prefix
(dumplib/_egress/signing.py): any change to what it covers, another key, or a stranger's key file fails."""
from __future__ import annotations

import json
import os
import sys

import pytest

if sys.platform != "linux":
    pytest.skip("the key-file checks are run where file modes and owners are real (Linux)", allow_module_level=True)

from dumplib._egress import signing  # noqa: E402
from dumplib._switch import current  # noqa: E402
from dumplib.errors import InvalidArgument  # noqa: E402

KEY = bytes(range(32))
SIDECAR = {"tool": "dumplib", "dump": "x.core", "size": 1234, "sha256": "ab" * 32,
           "finished_at": "2026-12-05T03:00:00.000"}


def _signed(key: bytes = KEY, object_key: str = "p/x.core") -> dict:
    return json.loads(signing.sign(json.dumps(SIDECAR).encode(), key, "s3", "dumps", object_key))


def test_a_signed_sidecar_vouches_for_its_object_only():
    data = _signed()
    assert signing.vouched(data, KEY, "s3", "dumps", "p/x.core") == 1234
    assert data["retention"]["key_id"] == signing.key_id(KEY) and len(data["retention"]["mac"]) == 64


@pytest.mark.parametrize("change", [
    ("size", 1235), ("sha256", "cd" * 32), ("finished_at", "2026-12-05T03:00:00.001"), ("size", True),
    ("size", "1234"), ("retention", None), ("retention", {"mac": 5})])
def test_any_change_to_what_the_mac_covers_unvouches_it(change):
    data = dict(_signed(), **{change[0]: change[1]})
    assert signing.vouched(data, KEY, "s3", "dumps", "p/x.core") is None


@pytest.mark.parametrize("where", [("azure", "dumps", "p/x.core"), ("s3", "other", "p/x.core"),
                                   ("s3", "dumps", "p/y.core"), ("s3", "dumps", "q/x.core")])
def test_a_sidecar_copied_to_another_store_container_or_name_vouches_for_nothing(where):
    assert signing.vouched(_signed(), KEY, *where) is None


def test_another_key_vouches_for_nothing():
    assert signing.vouched(_signed(), bytes(32), "s3", "dumps", "p/x.core") is None


def test_the_key_file_is_made_owner_only_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(signing.KEY_VARIABLE, raising=False)
    key = signing.load_key(current().host())
    path = tmp_path / ".dumplib" / "egress-key"
    assert len(key) == 32 and path.read_text().strip() == key.hex()
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / ".dumplib").stat().st_mode & 0o777 == 0o700
    assert signing.load_key(current().host()) == key


def test_a_named_key_file_that_is_missing_is_refused_not_made(tmp_path, monkeypatch):
    monkeypatch.setenv(signing.KEY_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(InvalidArgument, match="does not exist"):
        signing.load_key(current().host())
    assert not (tmp_path / "absent").exists()


def test_a_key_directory_others_can_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(signing.KEY_VARIABLE, raising=False)
    (tmp_path / ".dumplib").mkdir(mode=0o777)
    (tmp_path / ".dumplib").chmod(0o777)
    with pytest.raises(InvalidArgument, match="private directory"):
        signing.load_key(current().host())
    assert list((tmp_path / ".dumplib").iterdir()) == []


def test_the_crash_handler_keeps_no_inherited_store_variable(monkeypatch, tmp_path):
    """The handler's store variables are the env file's and nothing else: an AWS_PROFILE or
    AZURE_CLIENT_ID the process inherited would pick another identity (or a config that runs a command)."""
    from dumplib._linux.coredump_handler import egress_environment

    monkeypatch.setenv("AWS_PROFILE", "someone-elses")
    monkeypatch.setenv("AZURE_CLIENT_ID", "another-identity")
    monkeypatch.setenv("DUMPLIB_UPLOAD_STALL", "1")
    monkeypatch.setenv(signing.KEY_VARIABLE, "restored by monkeypatch afterwards")
    egress_environment({"env_file": None, "egress_key": str(tmp_path / "key")})
    import os

    assert [k for k in os.environ if k.startswith(("AWS_", "AZURE_", "DUMPLIB_UPLOAD_"))] == []
    assert os.environ[signing.KEY_VARIABLE] == str(tmp_path / "key")


def test_a_key_another_dumplib_made_first_is_read_and_no_lock_of_its_temporary_stays(tmp_path):
    """Two dumplibs making the key at once: the second's place_new meets the first's file. Its temporary
    is removed and its lock's descriptor let go at once, not left for a look that takes a thread."""
    from dumplib._linux import host as linux_host

    path = tmp_path / ".dumplib" / "egress-key"
    path.parent.mkdir(mode=0o700)
    theirs = os.urandom(32)
    path.write_text(theirs.hex() + "\n")
    path.chmod(0o600)
    assert signing._make(str(path), current().host()) == theirs
    assert [p.name for p in path.parent.iterdir()] == ["egress-key"]
    assert not [p for p in linux_host._live_files if ".egress-key-" in p], linux_host._live_files
