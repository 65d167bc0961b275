"""URL destinations without a store (docs/egress.md): parsing, refusals, naming, the buffer's size, the
platform decision (a URL on a writer that needs a seekable file is RawThenCompress(RemoteObject)), the
logger guard, and the commands that refuse URLs. Runs on every OS; the stores are in tests/e2e_linux."""
from __future__ import annotations

import datetime
import logging
import tempfile
import types

import pytest

import dumplib
from dumplib import api
from dumplib.kinds import DumpKind
from dumplib.outputs import RawThenCompress, RemoteObject
from dumplib.remote import is_remote, object_name, parse_url
from dumplib.results import ProcessInfo


@pytest.mark.parametrize("url, store, container, key, account_url", [
    ("s3://bkt/dumps/{name}.core.zst", "s3", "bkt", "dumps/{name}.core.zst", None),
    ("s3://bkt", "s3", "bkt", "", None),
    ("az://ctr/a/b/", "azure", "ctr", "a/b/", None),
    ("https://acct.blob.core.windows.net/ctr/p/x.dmp", "azure", "ctr", "p/x.dmp", "https://acct.blob.core.windows.net"),
])
def test_urls_name_a_store_container_and_key(url, store, container, key, account_url):
    t = parse_url(url)
    assert is_remote(url) and (t.store, t.container, t.key, t.account_url) == (store, container, key, account_url)
    assert t.display() == (url if store != "s3" or key else url + "/")


@pytest.mark.parametrize("url", [
    "https://acct.blob.core.windows.net/ctr/x.dmp?sv=2024&sig=SECRETSIG",
    "s3://bkt/x?X-Amz-Signature=SECRETSIG",
    "s3://AKIA:SECRETSIG@bkt/x",
    "s3://AKIAEXAMPLE:wJalr/SECRETSIG@bucket/x",  # a secret key holding '/' leaves urlsplit's netloc early
    "https://AKIA:SECRET/SIG/SECRETSIG@acct.blob.core.windows.net/ctr/x",
    "s3://Bad_Bucket/x",
    "http://acct.blob.core.windows.net/ctr/x",
    "https://example.com/ctr/x",
    "s3://bkt/../x",
])
def test_bad_urls_are_invalid_dump_path_and_never_repeat_a_secret(url):
    with pytest.raises(dumplib.InvalidDumpPath) as e:
        parse_url(url)
    assert "SECRETSIG" not in str(e.value) and "SECRETSIG" not in str(e.value.details())


def test_local_paths_are_not_urls():
    assert not any(is_remote(p) for p in ("/tmp/x.core", "-", "s3:", "./s3://x", "C:\\dumps", None, 3))


def test_a_prefix_gets_dumplibs_own_name_and_tokens_expand():
    proc = ProcessInfo(pid=42, name="my app")
    when = datetime.datetime(2026, 12, 5, 1, 2, 3)
    named = object_name(parse_url("s3://bkt/{name}/"), proc, DumpKind.FULL, when, ".core.zst", "{name}_{pid}_{date}_{time}")
    assert named.key.startswith("my_app/my_app_42_261205_010203") and named.key.endswith(".core.zst")
    assert object_name(parse_url("az://ctr/x_{pid}.core"), proc, DumpKind.MINI, when, ".core", "").key == "x_42.core"


def test_the_buffer_is_documented_size_and_grows_only_for_part_limits(monkeypatch):
    from dumplib._egress import buffer_plan

    monkeypatch.delenv("DUMPLIB_UPLOAD_BUFFER", raising=False)
    assert buffer_plan(1 << 30, 10_000) == (8 << 20, 1)  # 16 MiB held (docs/egress.md: peak RSS under 100 MiB)
    monkeypatch.setenv("DUMPLIB_UPLOAD_BUFFER", "24M")
    assert buffer_plan(1 << 30, 10_000) == (8 << 20, 2)
    monkeypatch.setenv("DUMPLIB_UPLOAD_BUFFER", "10M")
    assert buffer_plan(1 << 30, 10_000) == (5 << 20, 1)
    part, _ = buffer_plan(200 << 30, 10_000)  # 200 GiB in at most 10,000 parts
    assert part * 9_000 >= 200 << 30
    monkeypatch.setenv("DUMPLIB_UPLOAD_BUFFER", "lots")
    with pytest.raises(dumplib.InvalidArgument):
        buffer_plan(0, 10_000)


class _NotStreaming:
    """This OS's platform as a writer that needs a seekable file (dbghelp) would be."""

    streams = False

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_url_on_a_seekable_file_writer_is_raw_then_compress_into_the_remote_object(tmp_path, monkeypatch):
    from dumplib._switch import current

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = current()
    obj = RemoteObject(parse_url("s3://bkt/x.dmp.zst"), store=None, overwrite=False, codec="gzip", level=1)  # type: ignore[arg-type]
    opts = types.SimpleNamespace(min_free=0)
    out = api._for_platform(_NotStreaming(real), obj, opts)  # type: ignore[arg-type]
    assert isinstance(out, RawThenCompress) and out.target is obj and out.where == "s3://bkt/x.dmp.zst"
    assert [(d, n) for d, n, _ in out.needs(1000)] == [(out.scratch, 1000)]  # the raw copy only, on local scratch
    streaming = types.SimpleNamespace(streams=True)
    assert api._for_platform(streaming, obj, opts) is obj and obj.needs(1 << 40) == []  # type: ignore[arg-type]


def test_the_logger_guard_drops_sdk_records_and_puts_everything_back():
    from dumplib._egress.quiet import quiet, snapshot

    records = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    keep = Keep()
    root = logging.getLogger()
    was_level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    try:
        endpoint = logging.getLogger("botocore.endpoint")
        endpoint.setLevel(logging.DEBUG)  # even a logger the application turned up
        before = snapshot()
        with quiet():
            endpoint.debug("Authorization: AWS4-HMAC-SHA256 Credential=AKIASECRET")
            logging.getLogger("azure.core.pipeline").warning("sig=SECRET")
            logging.getLogger("botocore.new.child").error("body=b'dump bytes'")
            logging.getLogger("urllib3.connectionpool").debug("PUT /x?sig=SECRET")
            logging.getLogger("app").info("the application still logs")
        assert records == ["the application still logs"]
        after = snapshot()
        assert {name: after[name] for name in before} == before  # (loggers made meanwhile are new)
        endpoint.debug("after")
        assert records[-1] == "after"
    finally:
        root.removeHandler(keep)
        root.setLevel(was_level)


def test_postmortem_to_a_url_with_a_query_is_refused_before_anything_and_never_echoes_it():
    """Linux takes a URL --dir (tests/e2e_linux/test_postmortem_egress.py), Windows refuses one; a query
    string (a SAS) is refused on both, without repeating it."""
    from dumplib import postmortem

    with pytest.raises((dumplib.InvalidArgument, dumplib.InvalidDumpPath)) as e:
        postmortem.install("s3://bkt/crashes/?sig=SECRET")
    assert "SECRET" not in str(e.value)


def test_remote_destination_error_declares_its_facts_and_exit_14():
    from dumplib_cli._common import exit_code_for

    err = dumplib.RemoteDestinationError("m", url="s3://b/x", store="s3", reason="no-permission",
                                         service_code="AccessDenied", status=403)
    assert err.details() == {"url": "s3://b/x", "store": "s3", "reason": "no-permission",
                             "service_code": "AccessDenied", "status": 403}
    assert exit_code_for(err) == 14 and err.reason is dumplib.Reason.NO_PERMISSION
    assert dumplib.Reason("upload-failed") is dumplib.Reason.UPLOAD_FAILED


def test_an_object_name_past_the_stores_1024_bytes_is_refused_before_any_call():
    proc = ProcessInfo(pid=42, name="app")
    when = datetime.datetime(2026, 12, 5, 3, 0, 0)
    fits = "p/" + "é" * 507  # 1016 bytes in UTF-8: with '.json' and '-NN', 1024
    assert object_name(parse_url("s3://dumps/" + fits), proc, DumpKind.MINI, when, ".core", "x").key == fits
    with pytest.raises(dumplib.InvalidDumpPath, match="at most 1016"):
        object_name(parse_url("s3://dumps/" + fits + "x"), proc, DumpKind.MINI, when, ".core", "x")


@pytest.mark.parametrize("conn, serves", [
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=S2V5;EndpointSuffix=core.windows.net", True),
    ("DefaultEndpointsProtocol=https;AccountName=other;AccountKey=S2V5", False),
    # A SAS connection string names no account: its BlobEndpoint's host says which one it is for.
    ("BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=abc", True),
    ("BlobEndpoint=https://other.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=abc", False),
    ("SharedAccessSignature=sv=2022&sig=abc", False),
])
def test_a_connection_string_serves_an_https_url_only_for_its_own_account(conn, serves):
    from dumplib._egress.azure import _conn_serves

    assert _conn_serves(conn, parse_url("https://acct.blob.core.windows.net/dumps/p/")) is serves
    assert _conn_serves(conn, parse_url("az://dumps/p/")) is True  # az:// takes the account from it


@pytest.mark.parametrize("prefix, fixed", [
    ("prod/{name}/", "prod/"), ("RAPID-team/crashes/", "RAPID-team/crashes/"), ("{braces}/dumps/", "{braces}/dumps/"),
    ("a/PID_x/", "a/"), ("a/PIDGIN/", "a/PIDGIN/"), ("x_{pid}.core", ""), ("", "")])
def test_a_watch_probes_the_prefix_before_the_first_real_token(prefix, fixed):
    from dumplib._egress import fixed_prefix

    assert fixed_prefix(prefix) == fixed


def test_retention_orders_dumps_by_the_instant_whatever_the_offset():
    from dumplib.retention import instant

    utc, pacific = "2026-12-05T03:00:00.000+00:00", "2026-12-04T20:00:00.000-08:00"
    assert instant(utc) < instant(pacific)  # 04:00 UTC: later, though its text sorts first
    assert instant("garbage") < instant(utc)
