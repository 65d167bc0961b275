"""Dumps streamed to Azure Blob Storage (docs/egress.md), against Azurite on loopback, started here."""
from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from egressrig import (AZURITE_ACCOUNT, AZURITE_KEY, Relay, assert_refused_before_touching, azure_container, azurite,
                       azurite_connection_string, clean_env, free_port, interrupted_upload, run_dumplib)
from linuxrig import gdb, run_target

CONTAINER = "dumps"


@pytest.fixture(scope="module")
def azport():
    with azurite() as port:
        azure_container(port, CONTAINER).create_container()
        yield port


def _names(port: int, prefix: str) -> list:
    # Committed blobs only: a listing never shows uncommitted blocks (the probe's, an abandoned upload's).
    return sorted(b.name for b in azure_container(port, CONTAINER).list_blobs(name_starts_with=prefix))


def test_full_snapshot_zstd_dump_streams_to_azure_and_opens_in_gdb(azport, target_exe, tmp_path):
    conn = azurite_connection_string(azport)
    with run_target([str(target_exe), "--heap", "64"]) as t:
        env = clean_env(AZURE_STORAGE_CONNECTION_STRING=conn, DUMPLIB_TEST_DEBUG_LOG="1")
        done = run_dumplib(["dump", str(t.pid), f"az://{CONTAINER}/full/{{name}}_{{pid}}.core.zst", "-k", "full", "-z",
                            "zstd", "--snapshot=auto", "--json"], env)
        assert done.returncode == 0, done.stderr[-3000:]
        t.assert_running_untraced()
    result = json.loads(done.stdout)
    name = f"full/dumplib-target_{t.pid}.core.zst"
    assert result["path"] == f"az://{CONTAINER}/{name}" and _names(azport, "full/") == [name, name + ".json"]
    blob = azure_container(azport, CONTAINER).get_blob_client(name)
    body = blob.download_blob().readall()
    side = json.loads(azure_container(azport, CONTAINER).get_blob_client(name + ".json").download_blob().readall())
    assert hashlib.sha256(body).hexdigest() == side["sha256"] == result["sha256"] == blob.get_blob_properties().metadata["sha256"]
    import zstandard

    core = tmp_path / "core"
    core.write_bytes(zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read())
    assert core.stat().st_size == side["raw_size"]
    bt = gdb(str(target_exe), str(core), "thread apply all bt")
    assert "thread_beta_wait" in bt and "main_wait_for_input" in bt, bt
    for secret in (AZURITE_KEY, AZURITE_KEY[:20]):
        assert secret not in done.stdout + done.stderr and secret not in json.dumps(side)
        assert secret.encode() not in body + core.read_bytes()
    assert "azure" not in done.stderr and "urllib3" not in done.stderr  # the logger guard held at DEBUG


def _sas_connection(port: int, **permission: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(AZURITE_ACCOUNT, CONTAINER, account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(**permission),
                                 expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    return f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};SharedAccessSignature={sas}"


@pytest.mark.parametrize("case", ["missing-container", "bad-key", "read-only-sas", "refused", "no-credentials",
                                  "no-extra"])
def test_a_destination_that_cannot_take_the_dump_exits_14_before_the_target_is_touched(case, azport, ctarget,
                                                                                        tmp_path):
    url, conn = f"az://{CONTAINER}/x/", azurite_connection_string(azport)
    reasons = {"missing-container": {"no-container"}, "bad-key": {"bad-credentials", "no-permission"},
               "read-only-sas": {"no-permission"}, "refused": {"unreachable"}, "no-credentials": {"no-credentials"},
               "no-extra": {"no-extra"}}[case]
    env = clean_env(AZURE_STORAGE_CONNECTION_STRING=conn)
    secret = AZURITE_KEY
    if case == "missing-container":
        url = "az://no-such-container/x/"
    elif case == "bad-key":
        secret = "QUFB" * 22
        env["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(azport, key=secret)
    elif case == "read-only-sas":
        env["AZURE_STORAGE_CONNECTION_STRING"] = _sas_connection(azport, read=True, list=True)
        secret = env["AZURE_STORAGE_CONNECTION_STRING"].split("sig=")[1].split("&")[0]
    elif case == "refused":
        env["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(free_port())
    elif case == "no-credentials":
        del env["AZURE_STORAGE_CONNECTION_STRING"]
    elif case == "no-extra":
        env["DUMPLIB_TEST_NO_MODULE"] = "azure.storage.blob"
    trace = tmp_path / "strace"
    env["DUMPLIB_TEST_DEBUG_LOG"] = "1"  # the root logger at DEBUG: nothing may leak into it either
    done = run_dumplib(["dump", str(ctarget.pid), url, "-k", "full", "--json"], env, trace=trace, timeout=120)
    error = assert_refused_before_touching(done, trace, ctarget, "azure", reasons, [secret, AZURITE_KEY])
    if case == "no-extra":
        assert "pip install 'dumplib[azure]'" in error["message"]
    assert _names(azport, "x/") == []


def test_a_write_only_sas_passes_the_probe(azport, ctarget):
    env = clean_env(AZURE_STORAGE_CONNECTION_STRING=_sas_connection(azport, write=True, create=True))
    done = run_dumplib(["dump", str(ctarget.pid), f"az://{CONTAINER}/wo/x.core", "--json", "--snapshot=auto"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _names(azport, "wo/") == ["wo/x.core", "wo/x.core.json"]


def test_the_store_vanishing_mid_upload_commits_nothing_and_the_target_runs_on(azport, target_exe):
    relay = Relay(azport)
    code, out, err, took = interrupted_upload(
        target_exe, f"az://{CONTAINER}/cut/x.core",
        clean_env(AZURE_STORAGE_CONNECTION_STRING=azurite_connection_string(relay.port)), relay, lambda proc: relay.cut())
    assert code == 8, (out, err)
    error = json.loads(out)["error"]
    assert error["type"] == "DumpFailed" and error["reason"] == "upload-failed", error
    assert took < 30, took  # the bounded retries: about 0.5 + 2.5 + 4.5 s
    assert _names(azport, "cut/") == []  # nothing committed; the staged blocks expire on their own


def test_a_block_slower_than_the_connection_timeout_still_crosses_a_slow_link(azport, monkeypatch):
    """A 40 MiB block through a 2 MiB/s link: 20 s on the wire, twice the 10 s connection timeout. Sent as
    bytes, urllib3 wrote it in one send() bounded by that timeout as a whole (over https as over http), and
    every try failed though the bytes kept flowing: below ~0.8 MiB/s even the default 8 MiB blocks did."""
    import os

    from dumplib._egress import open_store
    from dumplib.remote import parse_url

    relay = Relay(azport, rate=2 << 20)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(relay.port))
    key = "slow-block/x.bin"
    up = open_store(parse_url(f"az://{CONTAINER}/{key}")).uploader(key, 40 << 20, 1, False)
    data = os.urandom(40 << 20)
    up(data)
    up.commit(up.drain(), {"sha256": hashlib.sha256(data).hexdigest()})
    assert azure_container(azport, CONTAINER).get_blob_client(key).download_blob().readall() == data


def test_an_abort_ends_the_wait_for_a_parts_turn_and_its_ticks(azport, monkeypatch):
    """A copy worker waiting for a part's turn on a slow link (the caller gave up on it after a Ctrl-C, on
    Linux) stops once the upload is aborted: no more ticks (the CLI redrew its progress line after
    "interrupted"), and the worker ends, where it waited on for the part on the wire (80 s here)."""
    import os
    import threading

    from dumplib._egress import open_store
    from dumplib.remote import parse_url

    relay = Relay(azport, rate=64 << 10)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(relay.port))
    key = "aborted/x.bin"
    up = open_store(parse_url(f"az://{CONTAINER}/{key}")).uploader(key, 5 << 20, 1, False)
    ticks = {"all": 0, "after": 0}
    waiting = threading.Event()
    aborted = threading.Event()

    def tick() -> None:
        ticks["all"] += 1
        ticks["after"] += aborted.is_set()
        waiting.set()

    up.waiting = tick
    ended: list = []

    def copy() -> None:
        try:
            up(os.urandom((10 << 20) + 1))
        except Exception as exc:  # noqa: BLE001 - the test reads it
            ended.append(exc)

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()  # the first part goes on the wire; the second, full, waits for its turn
    assert waiting.wait(60), "the worker never waited for a part's turn"
    aborted.set()
    up.abort()
    worker.join(30)
    assert not worker.is_alive(), "the worker went on waiting for the part on the wire after the abort"
    assert ticks["after"] <= 1, ticks  # one may be under way as the abort lands
    assert [type(e).__name__ for e in ended] == ["RemoteDestinationError"], ended  # unheard: the caller is gone
    relay.cut()


def test_a_second_dump_to_a_taken_name_is_dump_exists_and_overwrite_replaces_dump_and_sidecar_together(
        azport, ctarget):
    """Without --overwrite the first object stays whole (exit 6); with it, the new dump and a sidecar
    that vouches for it replace both, and no step leaves a sidecar naming a dump it does not describe."""
    env = clean_env(AZURE_STORAGE_CONNECTION_STRING=azurite_connection_string(azport))
    url = f"az://{CONTAINER}/again/x.core"
    first = run_dumplib(["dump", str(ctarget.pid), url, "-k", "mini", "--json"], env)
    assert first.returncode == 0, first.stderr[-2000:]
    taken = run_dumplib(["dump", str(ctarget.pid), url, "-k", "mini", "--json"], env)
    assert taken.returncode == 6 and json.loads(taken.stdout)["error"]["type"] == "DumpExists", taken.stdout
    replaced = run_dumplib(["dump", str(ctarget.pid), url, "-k", "triage", "--overwrite", "--json"], env)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    box = azure_container(azport, CONTAINER)
    body = box.get_blob_client("again/x.core").download_blob().readall()
    side = json.loads(box.get_blob_client("again/x.core.json").download_blob().readall())
    assert side["kind"] == "triage" and side["sha256"] == hashlib.sha256(body).hexdigest()
    assert json.loads(replaced.stdout)["sha256"] == side["sha256"] != json.loads(first.stdout)["sha256"]
    ctarget.assert_running_untraced()
