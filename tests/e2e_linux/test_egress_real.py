"""The egress round trip against a real account, only when the environment names one:
DUMPLIB_TEST_S3_URL=s3://BUCKET/prefix/ (credentials from the AWS default chain) or
DUMPLIB_TEST_AZURE_URL=az://CONTAINER/prefix/ or https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix/
(AZURE_STORAGE_CONNECTION_STRING or DefaultAzureCredential). Skipped otherwise, CI included: the suite
never reaches a real store unasked. What it writes it deletes."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from dumplib.remote import parse_url

CASES = {"s3": "DUMPLIB_TEST_S3_URL", "azure": "DUMPLIB_TEST_AZURE_URL"}


def _client_get_delete(url: str):  # type: ignore[no-untyped-def]
    t = parse_url(url)
    if t.store == "s3":
        import boto3

        s3 = boto3.client("s3")
        return (lambda key: s3.get_object(Bucket=t.container, Key=key)["Body"].read(),
                lambda key: s3.delete_object(Bucket=t.container, Key=key), t)
    from azure.storage.blob import BlobServiceClient

    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if conn:
        svc = BlobServiceClient.from_connection_string(conn)
    else:
        from azure.identity import DefaultAzureCredential

        account_url = t.account_url or f"https://{os.environ['AZURE_STORAGE_ACCOUNT']}.blob.core.windows.net"
        svc = BlobServiceClient(account_url, credential=DefaultAzureCredential(exclude_interactive_browser_credential=True))
    ctr = svc.get_container_client(t.container)
    return (lambda key: ctr.get_blob_client(key).download_blob().readall(),
            lambda key: ctr.get_blob_client(key).delete_blob(), t)


@pytest.mark.parametrize("store", sorted(CASES))
def test_a_dump_round_trips_through_a_real_account(store, ctarget):
    url = os.environ.get(CASES[store])
    if not url:
        pytest.skip(f"NOT RUN: no real {store} account named ({CASES[store]} unset); the loopback stand-ins cover it")
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), url, "-k", "full", "-z",
                           "gzip", "--snapshot=auto", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    get, delete, t = _client_get_delete(result["path"])
    key = parse_url(result["path"]).key
    try:
        body = get(key)
        side = json.loads(get(key + ".json"))
        assert hashlib.sha256(body).hexdigest() == side["sha256"] == result["sha256"]
    finally:
        delete(key)
        delete(key + ".json")
    ctarget.assert_running_untraced()
