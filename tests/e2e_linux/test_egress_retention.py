"""Retention (--keep, --max-total) on a store's prefix (docs/egress.md), against moto's S3 and Azurite on loopback.

The rule is the directory's: only dumplib's own dumps count, oldest go first, the dump just written
stays. "Own" in a store is a sidecar carrying this user's MAC (dumplib/_egress/signing.py): the tests
plant what a stranger with write access to the prefix could (objects without sidecars, sidecars
copied from ours onto other names, sidecars signed with another key, our own sidecar beside an
object replaced since) and read the store back with the SDKs, not with dumplib."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from egressrig import (azure_container, azurite, azurite_connection_string, clean_env, moto, never_touched,
                       run_dumplib, s3_client, s3_env)

BUCKET = "dumps"


class _S3:
    name = "s3"

    def __init__(self, port: int) -> None:
        self.client = s3_client(port)
        self.env = s3_env(port)

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def keys(self, prefix: str) -> List[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)


class _Azure:
    name = "azure"

    def __init__(self, port: int) -> None:
        self.container = azure_container(port, BUCKET)
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port)}

    def url(self, prefix: str) -> str:
        return f"az://{BUCKET}/{prefix}"

    def keys(self, prefix: str) -> List[str]:
        return sorted(b.name for b in self.container.list_blobs(name_starts_with=prefix))

    def get(self, key: str) -> bytes:
        return self.container.get_blob_client(key).download_blob().readall()

    def put(self, key: str, data: bytes) -> None:
        self.container.get_blob_client(key).upload_blob(data, overwrite=True)


@pytest.fixture(scope="module", params=["s3", "azure"])
def store(request) -> Iterator[object]:
    if request.param == "s3":
        with moto() as port:
            s3_client(port).create_bucket(Bucket=BUCKET)
            yield _S3(port)
    else:
        with azurite() as port:
            azure_container(port, BUCKET).create_container()
            yield _Azure(port)


def _dump(store, pid: int, prefix: str, *extra: str, env: Dict[str, str] = None) -> Tuple[int, Dict[str, object]]:
    done = run_dumplib(["dump", str(pid), store.url(prefix), "--json", "--snapshot=auto", *extra],
                       env or clean_env(**store.env))
    return done.returncode, json.loads(done.stdout or "{}") if done.stdout.strip() else {"stderr": done.stderr}


def _key(store, result: Dict[str, object]) -> str:
    return str(result["path"]).split(f"/{BUCKET}/", 1)[1]


def test_keep_removes_only_the_oldest_of_our_own_dumps_and_never_a_strangers(store, ctarget):
    p = f"keep-{store.name}/"
    # What a stranger with write access to the prefix can plant, before and between our dumps:
    store.put(p + "foreign.core", b"not dumplib's")  # an object with no sidecar
    store.put(p + "sub/old.core", b"a sub-prefix is another directory")
    results = []
    for _ in range(3):
        code, result = _dump(store, ctarget.pid, p)
        assert code == 0, result
        results.append(result)
    ours = [_key(store, r) for r in results]
    side = json.loads(store.get(ours[0] + ".json"))
    assert side["retention"]["mac"] and side["retention"]["key_id"]
    # Our own valid sidecar copied beside a stranger's object of the same size: the MAC names the key.
    store.put(p + "copied.core", store.get(ours[0]))
    store.put(p + "copied.core.json", json.dumps(dict(side, dump="copied.core")).encode())
    # A sidecar signed with another key.
    forged = dict(side, dump="forged.core", retention={"key_id": "0" * 16, "mac": "0" * 64})
    store.put(p + "forged.core", store.get(ours[0]))
    store.put(p + "forged.core.json", json.dumps(forged).encode())
    # Ours, then replaced by someone else with the same size: the listing cannot tell, the sha256 the object
    # claims (Azure metadata, S3 tag; a replacement has neither) can.
    store.put(ours[1], b"S" * len(store.get(ours[1])))
    # A sidecar whose MAC is not ASCII (compare_digest raises on such a str): neither counted nor fatal.
    store.put(p + "odd.core", b"x")
    store.put(p + "odd.core.json", json.dumps(dict(side, dump="odd.core", retention={"mac": "\u00e9"})).encode())
    strangers = [p + "foreign.core", p + "sub/old.core", p + "copied.core", p + "copied.core.json",
                 p + "forged.core", p + "forged.core.json", ours[1], ours[1] + ".json", p + "odd.core",
                 p + "odd.core.json"]

    code, result = _dump(store, ctarget.pid, p, "--keep", "2")
    assert code == 0, result
    newest = _key(store, result)
    # Counted: ours[0], ours[2] and the new one (three of ours): the oldest goes, with its sidecar.
    assert f"retention removed {store.url(ours[0])}" in result["warnings"], result["warnings"]
    left = store.keys(p)
    assert ours[0] not in left and ours[0] + ".json" not in left, left
    assert sorted(left) == sorted(strangers + [ours[2], ours[2] + ".json", newest, newest + ".json"]), left

    code, result = _dump(store, ctarget.pid, p, "--keep", "1")
    assert code == 0, result
    newer = _key(store, result)
    assert sorted(store.keys(p)) == sorted(strangers + [newer, newer + ".json"])


def test_max_total_counts_object_sizes_and_never_removes_the_dump_just_written(store, ctarget):
    p = f"total-{store.name}/"
    for _ in range(2):
        assert _dump(store, ctarget.pid, p)[0] == 0
    code, result = _dump(store, ctarget.pid, p, "--max-total", "1")  # smaller than any dump
    assert code == 0, result
    newest = _key(store, result)
    assert sorted(store.keys(p)) == [newest, newest + ".json"]
    assert sum("retention removed" in w for w in result["warnings"]) == 2


def test_dumps_signed_with_another_machines_key_are_not_counted_unless_it_is_shared(store, ctarget, tmp_path):
    p = f"fleet-{store.name}/"
    other = tmp_path / "other-key"
    other.write_text("ab" * 32)
    other.chmod(0o600)
    env_other = clean_env(**store.env, DUMPLIB_EGRESS_KEY=str(other))
    code, theirs = _dump(store, ctarget.pid, p, env=env_other)
    assert code == 0, theirs
    for _ in range(2):
        assert _dump(store, ctarget.pid, p, "--keep", "1")[0] == 0
    assert _key(store, theirs) in store.keys(p)  # another key's dump: not this machine's to count
    # The same key named on this "machine": now it counts, and goes.
    code, result = _dump(store, ctarget.pid, p, "--keep", "1", env=env_other)
    assert code == 0, result
    assert _key(store, theirs) not in store.keys(p)


@pytest.mark.parametrize("flaw", ["world-readable", "symlink", "not-a-key", "others"])
def test_an_unsafe_retention_key_is_refused_before_the_target_is_touched(store, ctarget, tmp_path, flaw):
    key = tmp_path / "key"
    key.write_text("cd" * 32)
    key.chmod(0o600)
    named = key
    if flaw == "world-readable":
        key.chmod(0o644)
    elif flaw == "symlink":
        named = tmp_path / "link"
        named.symlink_to(key)
    elif flaw == "not-a-key":
        key.write_text("password")
    else:
        os.chown(key, 65534, 65534)
    env = clean_env(**store.env, DUMPLIB_EGRESS_KEY=str(named))
    trace = tmp_path / "trace"
    done = run_dumplib(["dump", str(ctarget.pid), store.url(f"unsafe-{store.name}/"), "--keep", "2", "--json"], env,
                       trace=trace)
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "InvalidArgument" and str(named) in error["message"], error
    assert never_touched(trace) == [] and store.keys(f"unsafe-{store.name}/") == []
    ctarget.assert_running_untraced()
    assert "cd" * 32 not in done.stdout + done.stderr
    # Without retention the dump goes up, unsigned, and says so.
    code, result = _dump(store, ctarget.pid, f"unsigned-{store.name}/", env=env)
    assert code == 0, result
    assert any("not signed" in w for w in result["warnings"]), result["warnings"]
    assert "retention" not in json.loads(store.get(_key(store, result) + ".json"))


def test_the_key_is_made_once_owner_only_in_a_private_directory(store, ctarget, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(**store.env, HOME=str(home))
    code, first = _dump(store, ctarget.pid, f"made-{store.name}/", env=env)
    assert code == 0, first
    key = home / ".dumplib" / "egress-key"
    st = key.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE((home / ".dumplib").lstat().st_mode) == 0o700
    text = key.read_text()
    assert _dump(store, ctarget.pid, f"made-{store.name}/", env=env)[0] == 0
    assert key.read_text() == text and sorted(p.name for p in (home / ".dumplib").iterdir()) == ["egress-key"]
    assert text.strip() not in json.dumps(first)
    # The key never leaves the machine: the uploaded sidecar names it only by its hash.
    side = store.get(_key(store, first) + ".json").decode()
    assert text.strip() not in side and bytes.fromhex(text.strip()).hex() not in side
    assert json.loads(side)["retention"]["key_id"] not in text


def test_a_delete_is_conditional_on_the_object_retention_checked(store):
    """Between retention's check and its delete, someone replaces the object: the delete (If-Match on the
    ETag checked) leaves the new one. Through dumplib's store layer, against the real server."""
    from dumplib._egress import open_store
    from dumplib.remote import parse_url

    key = f"race-{store.name}/x.core"
    store.put(key, b"ours")
    import os as _os

    saved = dict(_os.environ)
    try:
        _os.environ.update(store.env)
        s = open_store(parse_url(store.url(f"race-{store.name}/")))
        [listed] = s.listing(f"race-{store.name}/", 10)
        store.put(key, b"theirs, written after the check")
        assert s.delete_if(key, listed.etag) is False
        assert store.get(key) == b"theirs, written after the check"
        [now] = s.listing(f"race-{store.name}/", 10)
        assert s.delete_if(key, now.etag) is True and store.keys(f"race-{store.name}/") == []
    finally:
        _os.environ.clear()
        _os.environ.update(saved)
