"""Dumps streamed to S3 (docs/egress.md), against moto's S3 server on loopback, started here.

Real processes, the real CLI, the real SDK; the object is downloaded, decompressed and opened in gdb.
The refusals are proven to come before the target is touched: strace sees no ptrace and no
process_vm_readv, and the target runs untraced."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egressrig import (AWS_KEY_ID, AWS_SECRET, Relay, assert_refused_before_touching, clean_env, free_port,
                       interrupted_upload, moto, never_touched, run_dumplib, s3_client, s3_env)
from helpers import tmpfs
from linuxrig import gdb, run_target

BUCKET = "dumps"


@pytest.fixture(scope="module")
def s3port():
    with moto() as port:
        s3_client(port).create_bucket(Bucket=BUCKET)
        yield port


def _keys(port: int, prefix: str = "") -> list:
    listed = s3_client(port).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _zstd_decompress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()


def test_full_snapshot_zstd_dump_streams_to_s3_and_opens_in_gdb(s3port, target_exe, tmp_path):
    """The issue's test: a 200 MiB process, --snapshot=auto -z zstd, cwd and TMPDIR on a 16 MiB tmpfs; the root
    logger at DEBUG; the object read back is what the sidecar vouches for, a core gdb opens; no credential
    anywhere."""
    with tmpfs(tmp_path / "small", "16m") as small, run_target([str(target_exe), "--heap", "200"]) as t:
        env = clean_env(**s3_env(s3port), TMPDIR=str(small), DUMPLIB_TEST_DEBUG_LOG="1")
        done = subprocess.run([sys.executable, "-c", "import egressrig, runpy, sys; exec(egressrig.CLI_WRAPPER)",
                               "dump", str(t.pid), f"s3://{BUCKET}/full/", "-k", "full", "-z", "zstd",
                               "--snapshot=auto", "--json"], capture_output=True, text=True, env=env, cwd=small,
                              timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        t.assert_running_untraced()
        assert list(small.iterdir()) == []
    result = json.loads(done.stdout)
    key = result["path"][len(f"s3://{BUCKET}/"):]
    assert result["path"].startswith(f"s3://{BUCKET}/full/dumplib-target_{t.pid}_") and key.endswith(".core.zst")
    assert _keys(s3port, "full/") == [key, key + ".json"]
    body = s3_client(s3port).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    side = json.loads(s3_client(s3port).get_object(Bucket=BUCKET, Key=key + ".json")["Body"].read())
    assert hashlib.sha256(body).hexdigest() == side["sha256"] == result["sha256"]
    assert side["url"] == result["path"] and side["size"] == len(body) and side["upload_seconds"] > 0
    tags = s3_client(s3port).get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
    assert {"Key": "dumplib-sha256", "Value": side["sha256"]} in tags
    core = tmp_path / "core"
    core.write_bytes(_zstd_decompress(body))
    assert core.stat().st_size == side["raw_size"] == result["raw_size"]
    bt = gdb(str(target_exe), str(core), "thread apply all bt")
    assert all(f in bt for f in ("thread_alpha_spin", "thread_beta_wait", "main_wait_for_input")), bt
    assert t.marker in core.read_bytes()
    import dumplib

    assert dumplib.info(str(core)).pid == t.pid
    # Never printed, logged, or written into the dump or its sidecar (the root logger was at DEBUG).
    everything = done.stdout + done.stderr
    for secret in (AWS_SECRET, AWS_KEY_ID):
        assert secret not in everything and secret.encode() not in body + core.read_bytes()
        assert secret not in json.dumps(side)
    assert "botocore" not in done.stderr and "Authorization" not in done.stderr


@pytest.fixture(scope="module")
def iam_s3():
    """A second moto that checks signatures and IAM policies after its first 5 requests (the setup)."""
    with moto(env={"INITIAL_NO_AUTH_ACTION_COUNT": "5"}) as port:
        import boto3

        kw = dict(endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
        boto3.client("s3", **kw).create_bucket(Bucket="locked")  # 1
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")  # 2
        iam.put_user_policy(UserName="reader", PolicyName="ro", PolicyDocument=json.dumps({  # 3
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]  # 4
        yield port, key


def _refusal_env(case: str, s3port: int, iam_s3) -> tuple:  # type: ignore[no-untyped-def]
    """(environment, URL, the reasons that are right) of each way the probe must refuse."""
    iam_port, key = iam_s3
    if case == "missing-bucket":
        return clean_env(**s3_env(s3port)), "s3://no-such-bucket/x/", {"no-container"}
    if case == "no-credentials":
        env = clean_env(**s3_env(s3port))
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        return env, f"s3://{BUCKET}/x/", {"no-credentials"}
    if case == "refused":
        return clean_env(**s3_env(free_port())), f"s3://{BUCKET}/x/", {"unreachable"}
    if case == "bad-secret":
        return clean_env(**s3_env(iam_port, key["AccessKeyId"], "wrong" * 8)), "s3://locked/x/", {"bad-credentials"}
    if case == "unknown-key":
        return clean_env(**s3_env(iam_port, "AKIANOSUCHKEY0000000", "wrong" * 8)), "s3://locked/x/", {"bad-credentials"}
    if case == "read-only":
        return (clean_env(**s3_env(iam_port, key["AccessKeyId"], key["SecretAccessKey"])), "s3://locked/x/",
                {"no-permission"})
    if case == "no-extra":
        return clean_env(**s3_env(s3port), DUMPLIB_TEST_NO_MODULE="boto3"), f"s3://{BUCKET}/x/", {"no-extra"}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing-bucket", "no-credentials", "refused", "bad-secret", "unknown-key",
                                  "read-only", "no-extra"])
def test_a_destination_that_cannot_take_the_dump_exits_14_before_the_target_is_touched(case, s3port, iam_s3,
                                                                                        ctarget, tmp_path):
    env, url, reasons = _refusal_env(case, s3port, iam_s3)
    trace = tmp_path / "strace"
    env["DUMPLIB_TEST_DEBUG_LOG"] = "1"  # the root logger at DEBUG: nothing may leak into it either
    done = run_dumplib(["dump", str(ctarget.pid), url, "-k", "full", "--json"], env, trace=trace, timeout=120)
    error = assert_refused_before_touching(done, trace, ctarget, "s3", reasons,
                                           [AWS_SECRET, AWS_KEY_ID, env.get("AWS_SECRET_ACCESS_KEY", ""),
                                            env.get("AWS_ACCESS_KEY_ID", "")])
    assert str(error["url"]).startswith(url.rstrip("/"))
    if case == "no-extra":
        assert "pip install 'dumplib[s3]'" in error["message"]
    assert _keys(s3port, "x/") == []


def test_the_store_vanishing_mid_upload_commits_nothing_and_the_target_runs_on(s3port, target_exe):
    relay = Relay(s3port)
    code, out, err, took = interrupted_upload(target_exe, f"s3://{BUCKET}/cut/x.core", clean_env(**s3_env(relay.port)),
                                              relay, lambda proc: relay.cut())
    assert code == 8, (out, err)
    error = json.loads(out)["error"]
    assert error["type"] == "DumpFailed" and error["reason"] == "upload-failed", error
    assert "nothing was committed" in error["message"] and took < 60
    assert _keys(s3port, "cut/") == []  # no object, no sidecar
    # The upload could not be aborted (the store was gone): it is pending, as docs/egress.md says, until
    # a lifecycle rule or this clears it.
    s3 = s3_client(s3port)
    pending = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="cut/").get("Uploads", [])
    for up in pending:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=up["Key"], UploadId=up["UploadId"])
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="cut/").get("Uploads", []) == []


def test_a_taken_name_is_dump_exists_and_a_chosen_name_gives_way(s3port, ctarget):
    env = clean_env(**s3_env(s3port))
    s3_client(s3port).put_object(Bucket=BUCKET, Key="taken/x.core", Body=b"someone's")
    done = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/taken/x.core", "--json"], env)
    assert done.returncode == 6, done.stdout + done.stderr
    assert s3_client(s3port).get_object(Bucket=BUCKET, Key="taken/x.core")["Body"].read() == b"someone's"
    first = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/twice/", "--json", "--snapshot=auto"], env)
    second = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/twice/", "--json", "--snapshot=auto"], env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    paths = {json.loads(first.stdout)["path"], json.loads(second.stdout)["path"]}
    assert len(_keys(s3port, "twice/")) == 4 and len(paths) == 2


def test_dump_all_and_usage_limits_with_a_url(s3port, target_exe, ctarget):
    env = clean_env(**s3_env(s3port))
    done = run_dumplib(["dump", "--all", "dumplib-target", f"s3://{BUCKET}/all/", "--json", "--snapshot=auto"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert ctarget.pid in {r["pid"] for r in rows} and all(r["path"].startswith(f"s3://{BUCKET}/all/") for r in rows)
    # Retention works on the prefix (tests/e2e_linux/test_egress_retention.py has the rule's cases).
    kept = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/all/", "--keep", "1", "--json"], env)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert [k for k in _keys(s3port, "all/") if k.endswith(".core")] == [json.loads(kept.stdout)["path"][len(f"s3://{BUCKET}/"):]]
    sas = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/all/x?X-Amz-Signature=abc123secret", "--json"], env)
    assert sas.returncode == 7 and "abc123secret" not in sas.stdout + sas.stderr


def test_a_local_dump_imports_no_sdk(ctarget, tmp_path):
    code = ("import sys, dumplib; dumplib.create_dump(%d, %r, 'mini');"
            " print(sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'boto3', 'botocore', 's3transfer')"
            " or m.startswith('dumplib._egress')))" % (ctarget.pid, str(tmp_path)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert any(p.suffix == ".core" for p in Path(tmp_path).iterdir())


def _raw_first(monkeypatch, tmp_path: Path, env: dict):  # type: ignore[no-untyped-def]
    """The path Windows takes (dbghelp needs a seekable file), on the Linux writer: *env* set, the raw copy's
    scratch at tmp_path/scratch, and this platform with a writer that does not stream (linuxrig.unfollowable).
    (this platform, that one, the scratch directory)."""
    import tempfile

    from dumplib._switch import current
    from linuxrig import unfollowable

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real = current()
    return real, unfollowable(real), scratch


def test_the_seekable_file_path_raw_then_compress_into_s3(s3port, ctarget, target_exe, tmp_path, monkeypatch):
    """The path Windows takes (dbghelp needs a seekable file), run here on the Linux writer: the raw core on
    local scratch, verified, compressed, checked in memory to decode back to it, uploaded in one pass, deleted."""
    import datetime
    from dumplib import api
    from dumplib.kinds import DumpKind
    from dumplib.targets import resolve_target

    real, raw_first, scratch = _raw_first(monkeypatch, tmp_path, s3_env(s3port))
    opts = api._Options(f"s3://{BUCKET}/raw/", DumpKind.FULL, None, False, None, None, None, True, False, True, None,
                        None, ("zstd", 1), time.monotonic(), datetime.datetime.now(), 60.0, "auto")
    with real.open(resolve_target(ctarget.pid, real), for_dump=True) as session:
        result = api.create_in_session(raw_first, session, real.normalise_flags(DumpKind.FULL, None), opts)  # type: ignore[arg-type]
    ctarget.assert_running_untraced()
    assert list(scratch.iterdir()) == []  # the raw copy was deleted
    key = result.path[len(f"s3://{BUCKET}/"):]
    assert _keys(s3port, "raw/") == [key, key + ".json"]
    body = s3_client(s3port).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result.sha256
    core = tmp_path / "core"
    core.write_bytes(_zstd_decompress(body))
    assert core.stat().st_size == result.raw_size
    assert "main_wait_for_input" in gdb(str(target_exe), str(core), "thread apply all bt")


@pytest.mark.parametrize("wait, buffer, heap, bound", [
    ("last-parts", "192M", 8, 8 << 20),    # a buffer larger than the dump: every byte crosses in drain()
    ("part-slot", "10M", 16, 4 << 20),     # 5 MiB parts, one on the wire: the copy waits for its slot
])
def test_a_cancel_while_the_upload_waits_on_a_slow_link_is_heard_there_and_leaves_nothing(
        s3port, target_exe, tmp_path, monkeypatch, wait, buffer, heap, bound):
    """The Windows path again (raw copy on local scratch, then into the store), through a 512 KiB/s link. A
    cancel_dumps() from the progress callback once 1 MiB crossed must be heard while the upload waits for
    the store, not when the link is done with what it holds: the upload aborted part-way (less than
    *bound* through the link by then), no object, no sidecar, no pending multipart upload, the raw copy
    removed, the target running untraced.

    ``last-parts``: a buffer larger than the dump, so nothing leaves during the copy's pass and every byte
    crosses in the uploader's last parts (drain). Before those waits ticked, the callback was never called
    once the copy's pass ended, and the dump was committed whole. ``part-slot``: the copy waits for the
    first part to cross before it may send the next; untick'd, that wait heard the cancel only once the
    first 5 MiB part was through."""
    import datetime
    from dumplib import api
    from dumplib.errors import DumpFailed
    from dumplib.kinds import DumpKind
    from dumplib.targets import resolve_target

    relay = Relay(s3port, rate=512 << 10)
    real, raw_first, scratch = _raw_first(monkeypatch, tmp_path, {**s3_env(relay.port), "DUMPLIB_UPLOAD_BUFFER": buffer})
    seen = {"before": -1, "at_cancel": -1}

    def progress(_written: int, _elapsed: float) -> None:
        if seen["before"] < 0:
            seen["before"] = relay.bytes  # the probe and the upload's start: a few KiB
        elif seen["at_cancel"] < 0 and relay.bytes > seen["before"] + (1 << 20):
            seen["at_cancel"] = relay.bytes
            api.cancel_dumps(wait=0)

    prefix = f"{wait}/"
    with run_target([str(target_exe), "--heap", str(heap)]) as t:
        opts = api._Options(f"s3://{BUCKET}/{prefix}x.core", DumpKind.FULL, None, False, None, progress, None, True,
                            False, True, None, None, None, time.monotonic(), datetime.datetime.now(), 60.0, "auto")
        with pytest.raises(DumpFailed) as failed:
            with real.open(resolve_target(t.pid, real), for_dump=True) as session:
                api.create_in_session(raw_first, session, real.normalise_flags(DumpKind.FULL, None),  # type: ignore[arg-type]
                                      opts)
        sent = relay.bytes - seen["before"]  # now: a part already on the wire goes on crossing in the background
        t.assert_running_untraced()
    assert failed.value.reason == "cancelled", failed.value
    assert seen["at_cancel"] > 0, "the callback was never called while the upload waited on the link"
    assert sent < bound, f"{sent} bytes had crossed when the dump ended: the cancel was heard only after the wait"
    assert list(scratch.iterdir()) == []  # the raw copy was removed
    assert _keys(s3port, prefix) == []
    assert s3_client(s3port).list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", []) == []


def test_a_part_slower_than_the_connect_timeout_still_crosses_a_slow_link(s3port, monkeypatch):
    """A 40 MiB part through a 2 MiB/s link over plain http (a LAN MinIO; here moto): 20 s on the wire,
    twice the 10 s connect timeout. Sent as bytes, urllib3 wrote it in one send() bounded by that timeout
    as a whole, and every try failed ("could not be reached") though the bytes kept flowing."""
    import os

    from dumplib._egress import open_store
    from dumplib.remote import parse_url

    relay = Relay(s3port, rate=2 << 20)
    for k, v in s3_env(relay.port).items():
        monkeypatch.setenv(k, v)
    key = "slow-part/x.bin"
    up = open_store(parse_url(f"s3://{BUCKET}/{key}")).uploader(key, 40 << 20, 1, False)
    data = os.urandom(40 << 20)
    up(data)
    up.commit(up.drain(), {"sha256": hashlib.sha256(data).hexdigest()})
    assert s3_client(s3port).get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_sigterm_mid_upload_aborts_it_and_leaves_nothing(s3port, target_exe):
    """A cancelled upload (SIGTERM, as Ctrl-C) is aborted: no object, no sidecar, no pending multipart upload."""
    import signal

    relay = Relay(s3port)  # only to see when the upload is under way
    code, out, err, _ = interrupted_upload(target_exe, f"s3://{BUCKET}/term/x.core", clean_env(**s3_env(relay.port)),
                                           relay, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 143, (out, err)
    assert _keys(s3port, "term/") == []
    assert s3_client(s3port).list_multipart_uploads(Bucket=BUCKET, Prefix="term/").get("Uploads", []) == []


def test_watch_probes_a_url_before_it_starts(s3port, ctarget, tmp_path):
    env = clean_env(**s3_env(s3port))
    trace = tmp_path / "strace"
    refused = run_dumplib(["watch", str(ctarget.pid), "--memory", "1M", "-n", "1", "s3://no-such-bucket/w/", "--json"],
                          env, trace=trace, timeout=60)
    assert refused.returncode == 14 and json.loads(refused.stdout)["error"]["reason"] == "no-container"
    assert never_touched(trace) == []
    done = run_dumplib(["watch", str(ctarget.pid), "--memory", "1M", "-n", "1", f"s3://{BUCKET}/w/", "--json"], env,
                       timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_keys(s3port, "w/")) == 2


def test_without_a_snapshot_a_slow_network_holds_the_target_no_longer_than_max_pause(s3port, target_exe):
    """The writer waits while the buffer's parts are on the wire; without a snapshot the target waits with
    it, and --max-pause lets it go at the deadline (the tracer thread does, whatever the upload is doing)."""
    relay = Relay(s3port, rate=4 << 20)  # 4 MiB/s: the 200 MiB dump would need ~50 s
    env = clean_env(**s3_env(relay.port), DUMPLIB_UPLOAD_BUFFER="10M")
    with run_target([str(target_exe), "--heap", "200"]) as t:
        started = time.monotonic()
        done = run_dumplib(["dump", str(t.pid), f"s3://{BUCKET}/slow/x.core", "-k", "full", "--max-pause", "2s",
                            "--json"], env, timeout=120)
        took = time.monotonic() - started
        t.assert_running_untraced()
    assert done.returncode == 8, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["reason"] == "max-pause" and error["max_pause"] == 2.0, error
    assert took < 20, took
    assert _keys(s3port, "slow/") == []
    assert s3_client(s3port).list_multipart_uploads(Bucket=BUCKET, Prefix="slow/").get("Uploads", []) == []


def test_progress_on_a_terminal_shows_bytes_uploaded_and_the_rate(s3port, target_exe):
    """On a terminal the progress line adds what the store has acknowledged and the upload rate: through a
    16 MiB/s link the numbers climb, never pass what was written, and the rate is the link's, roughly."""
    from egressrig import CLI_WRAPPER
    from linuxrig import run_in_pty

    relay = Relay(s3port, rate=16 << 20)
    env = clean_env(**s3_env(relay.port))
    env.pop("DUMPLIB_UPLOAD_BUFFER", None)
    with run_target([str(target_exe), "--heap", "100"]) as t:
        code, screen, out = run_in_pty(["env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-c",
                                        CLI_WRAPPER, "dump", str(t.pid), f"s3://{BUCKET}/progress/", "-k", "full",
                                        "--snapshot=auto"], timeout=120)
        t.assert_running_untraced()
    assert code == 0, screen.decode(errors="replace")
    unit = {b"B": 1, b"KiB": 1 << 10, b"MiB": 1 << 20, b"GiB": 1 << 30}
    lines = re.findall(rb"\rdumping %d: +[\d.]+ s, ([\d.]+) (B|KiB|MiB|GiB) written, ([\d.]+) (B|KiB|MiB|GiB) uploaded"
                       rb"(?: at ([\d.]+) (B|KiB|MiB|GiB)/s)?" % t.pid, screen)
    assert len(lines) >= 4, screen  # ~7 s of upload, redrawn every 0.25 s
    written = [float(n) * unit[u] for n, u, _, _, _, _ in lines]
    uploaded = [float(n) * unit[u] for _, _, n, u, _, _ in lines]
    rates = [float(n) * unit[u] / (1 << 20) for _, _, _, _, n, u in lines if n]
    assert uploaded == sorted(uploaded) and uploaded[-1] >= 48 << 20, uploaded
    # Shown to 0.1 of a unit: what was acknowledged never exceeds what was written.
    assert all(up <= w * 1.001 + (1 << 20) for up, w in zip(uploaded, written)), list(zip(uploaded, written))
    assert rates and 4 <= sorted(rates)[len(rates) // 2] <= 32, rates  # the link's 16 MiB/s, give or take
    assert b"wrote " in out


def test_a_trickling_store_is_abandoned_at_the_stall_bound_with_the_snapshot_running_on(s3port, target_exe):
    """A link that never stops but crawls (each byte resets the SDK's read timeout) would hold an upload for
    hours: no part acknowledged within DUMPLIB_UPLOAD_STALL seconds (default 600) ends it, upload-failed,
    nothing committed, the target (a snapshot: running all along) untraced."""
    from egressrig import CLI_WRAPPER

    relay = Relay(s3port, rate=2048)  # 2 KiB/s: an 8 MiB part would take over an hour
    env = clean_env(**s3_env(relay.port), DUMPLIB_UPLOAD_STALL="5")
    with run_target([str(target_exe), "--heap", "64"]) as t:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", CLI_WRAPPER, "dump", str(t.pid), f"s3://{BUCKET}/trickle/x.core",
                                 "-k", "full", "--snapshot=auto", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the error, printed once the upload was abandoned
            said = time.monotonic()
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ended = time.monotonic()
        t.assert_running_untraced()
    assert proc.returncode == 8, line + out + err
    error = json.loads(line)["error"]
    assert error["reason"] == "upload-failed" and "no part was acknowledged in 5 s" in error["message"], error
    assert said - started < 120, said - started  # the bound (5 s) plus start-up and the abort; not hours
    # Abandoned means not waited for: the part still trickling on the wire must not hold the process's
    # exit (it did, for the SDK's 60 s read timeout, through the upload pool's join at exit). A gap,
    # not a wall time: at load 10 the exit itself takes well under the 30 s allowed.
    assert ended - said < 30, f"the process exited {ended - said:.1f} s after its error: it waited for the part"
    assert _keys(s3port, "trickle/") == []


def test_an_upload_refused_at_its_start_is_exit_14_before_the_target_is_stopped(s3port, ctarget, tmp_path):
    """The probe passed (a 60 s cache, or a policy that changed between probe and upload), then
    CreateMultipartUpload is refused: that is still before any stop (the plan has read the running
    target's ELF headers, no more), so it is the store's refusal (14), not a failed dump (8). Here: a name over S3's 1024 bytes is refused by dumplib before any call, and a
    bucket deleted after the probe by the store at the upload's start."""
    env = clean_env(**s3_env(s3port))
    long_name = "d/" + "x" * 1020 + ".core"
    done = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/{long_name}", "--json"], env)
    assert done.returncode == 7 and "at most 1016" in json.loads(done.stdout)["error"]["message"], done.stdout
    code = ("import json, sys, dumplib, boto3\n"
            "from dumplib import _egress\n"
            "real = _egress.probe_once\n"
            "def probe_then_lose_the_bucket(store, prefix):\n"
            "    real(store, prefix)\n"
            "    s3 = boto3.client('s3')\n"
            "    s3.delete_bucket(Bucket='gone-after-probe')\n"
            "_egress.probe_once = probe_then_lose_the_bucket\n"
            "try:\n"
            "    dumplib.create_dump(%d, 's3://gone-after-probe/x.core', 'mini')\n"
            "except dumplib.DumpError as e:\n"
            "    print(json.dumps([type(e).__name__, e.reason]))\n" % ctarget.pid)
    s3_client(s3port).create_bucket(Bucket="gone-after-probe")
    trace = tmp_path / "trace"
    ran = subprocess.run(["strace", "-f", "-qq", "-e", "trace=ptrace,process_vm_readv", "-o", str(trace),
                          sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == ["RemoteDestinationError", "no-container"], ran.stderr
    assert [line for line in never_touched(trace) if "ptrace(" in line] == []  # never stopped
    ctarget.assert_running_untraced()


def test_the_probe_writes_under_the_expanded_prefix_where_a_policy_may_grant_the_dump(s3port, ctarget):
    """A policy may grant s3:PutObject on prod/<name>/ only: the probe goes where the dump will, the
    template's tokens expanded (the requests on the wire say where)."""
    relay = Relay(s3port)
    done = run_dumplib(["dump", str(ctarget.pid), f"s3://{BUCKET}/probe/{{name}}/", "--json"],
                       clean_env(**s3_env(relay.port)))
    assert done.returncode == 0, done.stdout + done.stderr
    probes = re.findall(rb"POST /%s/([^ ?]*)\.dumplib-probe-" % BUCKET.encode(), bytes(relay.requests))
    assert probes == [b"probe/dumplib-target/"], bytes(relay.requests)[:2000]


def test_a_probe_stands_only_for_its_own_bucket_and_prefix(s3port, ctarget, tmp_path):
    """One process, three dumps within the probe's 60 s: the second names another bucket, which does not
    exist, and must be refused by its own probe (no-container, before its target is touched), not let
    through on the first one's; the third names another prefix of the first bucket and is probed again
    (the requests on the wire say so)."""
    relay = Relay(s3port)
    code = (
        "import json, sys, dumplib\n"
        "pid, port = int(sys.argv[1]), sys.argv[2]\n"
        "out = []\n"
        f"for url in ['s3://{BUCKET}/one/', 's3://no-such-bucket/one/', 's3://{BUCKET}/two/']:\n"
        "    try:\n"
        "        r = dumplib.create_dump(pid, url, 'mini')\n"
        "        out.append(['ok', r.path])\n"
        "    except dumplib.DumpError as e:\n"
        "        out.append([type(e).__name__, e.details().get('reason')])\n"
        "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, str(ctarget.pid), str(relay.port)], capture_output=True,
                          text=True, timeout=300, env=clean_env(**s3_env(relay.port)))
    assert done.returncode == 0, done.stderr
    first, second, third = json.loads(done.stdout.splitlines()[-1])
    assert first[0] == "ok" and third[0] == "ok", (first, third)
    assert second == ["RemoteDestinationError", "no-container"], second
    probes = re.findall(rb"POST /([^/ ?]+)/([^ ?]*)\.dumplib-probe-", bytes(relay.requests))
    assert sorted(p for b, p in probes if b == BUCKET.encode()) == [b"one/", b"two/"], probes
    assert (b"no-such-bucket", b"one/") in probes, probes  # its own probe, not the first one's 60 s
    ctarget.assert_running_untraced()
