"""The upload buffer bounds dumplib's memory whatever the dump's size (docs/egress.md): a full 512 MiB
dump, uncompressed so every byte goes over the wire, with the default buffer, dumplib's TMPDIR on a
16 MiB tmpfs (nothing can be staged locally); dumplib's peak RSS (VmHWM) stays under the documented
100 MiB and is compared with the same command dumping an 8 MiB process."""
from __future__ import annotations

import json

import pytest

from egressrig import (azure_container, azurite, azurite_connection_string, clean_env, moto, peak_rss_kib, run_dumplib,
                       s3_client, s3_env)
from helpers import tmpfs
from linuxrig import run_target

#: The documented bound on dumplib's peak RSS with the default buffer (docs/egress.md, issue #19's goal).
PEAK_BOUND_MIB = 100
#: What a 512 MiB dump may add to dumplib's peak over an 8 MiB one: the buffer (16 MiB), the SDK's copy
#: of the part in flight and its checksums, allocator slack. Proportional growth would be ~504 MiB.
ALLOWED_GROWTH_MIB = 48


@pytest.fixture(params=["s3", "azure"])
def store(request):
    if request.param == "s3":
        with moto() as port:
            s3_client(port).create_bucket(Bucket="mem")
            yield "s3://mem/", s3_env(port)
    else:
        with azurite() as port:
            azure_container(port, "mem").create_container()
            yield "az://mem/", {"AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(port)}


@pytest.mark.parametrize("snapshot", [["--snapshot=auto"], []], ids=["snapshot", "stopped"])
def test_peak_rss_stays_bounded_by_the_buffer_not_the_dump(store, target_exe, tmp_path, snapshot):
    """With a snapshot, and without one: a dump uploaded while the target is stopped is never staged in
    memory (core/staged.py), which local files and stdout are."""
    url, creds = store
    peaks, results = {}, {}
    with tmpfs(tmp_path / "small", "16m") as small:
        for heap in (8, 512):
            status = tmp_path / f"status-{heap}"
            env = clean_env(**creds, TMPDIR=str(small), DUMPLIB_STATUS_OUT=str(status))
            env.pop("DUMPLIB_UPLOAD_BUFFER", None)  # the default buffer
            with run_target([str(target_exe), "--heap", str(heap)]) as t:
                done = run_dumplib(["dump", str(t.pid), url, "-k", "full", *snapshot, "--json"], env)
                assert done.returncode == 0, done.stderr[-3000:]
                t.assert_running_untraced()
            peaks[heap] = peak_rss_kib(status) / 1024
            results[heap] = json.loads(done.stdout)
        assert list(small.iterdir()) == []
    big = results[512]
    assert big["size"] > 512 << 20
    rate = big["size"] / big["upload_seconds"] / (1 << 20)
    print(f"\n{url} peak RSS: 8 MiB dump {peaks[8]:.0f} MiB, {big['size'] / (1 << 20):.0f} MiB dump {peaks[512]:.0f} MiB;"
          f" upload {rate:.0f} MiB/s")
    assert peaks[512] - peaks[8] < ALLOWED_GROWTH_MIB, peaks
    assert max(peaks.values()) < PEAK_BOUND_MIB, peaks
