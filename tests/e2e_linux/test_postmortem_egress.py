"""The core_pattern handler streaming real crashes to a store (docs/egress.md, "The postmortem handler"),
against moto's S3 server on loopback.

The kernel starts the handler with HOME=/ and a PATH, nothing else: the store's credentials reach it only
through the root-only --env-file, which install checks and probes with exactly that environment. The
object is read back with boto3, decompressed and opened in gdb; the sidecar is signed with the handler's
own key, so --keep prunes its dumps and nothing else."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from egressrig import AWS_SECRET, moto, s3_client, s3_env
from helpers import private_state
from linuxrig import gdb, run_cli
from test_postmortem import crash, crasher, installed, log_records  # noqa: F401 - crasher is a fixture

pytestmark = pytest.mark.linux
BUCKET = "crashes"


@pytest.fixture(scope="module")
def s3port():
    with moto() as port:
        s3_client(port).create_bucket(Bucket=BUCKET)
        yield port


def _env_file(tmp_path: Path, port: int, mode: int = 0o600, quoted: bool = False) -> Path:
    d = tmp_path / "etc"
    d.mkdir(mode=0o700, exist_ok=True)
    f = d / "egress.env"
    # Credentials, region, endpoint: not s3_env's AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, which name
    # files (a config's credential_process runs a command) and which the handler refuses.
    keep = {k: v for k, v in s3_env(port).items() if not k.endswith("_FILE")}
    # *quoted*: each value in a pair of quotes, as systemd's EnvironmentFile= takes them (the endpoint
    # with its quotes kept would be no URL: the probe would fail).
    q = ['"', "'"] if quoted else ["", ""]
    f.write_text("# the handler's store credentials\n"
                 + "".join(f"{k}={q[i % 2]}{v}{q[i % 2]}\n" for i, (k, v) in enumerate(keep.items())))
    f.chmod(mode)
    return f


def _keys(port: int, prefix: str) -> list:
    listed = s3_client(port).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_crash_streams_to_s3_with_only_the_env_files_credentials(crasher, s3port, tmp_path):  # noqa: F811
    state = private_state(tmp_path)
    env_file = _env_file(tmp_path, s3port, quoted=True)
    url = f"s3://{BUCKET}/pm"  # no trailing '/': still a prefix the handler names objects in
    with installed(state, url, "--kind", "full", "--compress", "zstd", "--env-file", str(env_file),
                   "--keep", "2") as st:
        assert st["config"]["dir"] == f"s3://{BUCKET}/pm/" and st["config"]["env_file"] == str(env_file)
        key = state / "egress-key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == 0
        for _ in range(3):
            crash(crasher, "2")
        records = log_records(state, wait_for=3)
        listed = run_cli("postmortem", "list", "--state-dir", str(state), "--json")
        kept_texts = [(state / "config.json").read_text(), (state / "postmortem.log").read_text()]
    assert [r["outcome"] for r in records] == ["written"] * 3, records
    assert all(r["path"].startswith(f"s3://{BUCKET}/pm/") for r in records)
    objects = [k for k in _keys(s3port, "pm/") if k.endswith(".core.zst")]
    assert len(objects) == 2, _keys(s3port, "pm/")  # --keep 2: the first crash's dump went, with its sidecar
    assert sorted(_keys(s3port, "pm/")) == sorted(objects + [o + ".json" for o in objects])
    newest = records[-1]["path"][len(f"s3://{BUCKET}/"):]
    body = s3_client(s3port).get_object(Bucket=BUCKET, Key=newest)["Body"].read()
    side = json.loads(s3_client(s3port).get_object(Bucket=BUCKET, Key=newest + ".json")["Body"].read())
    import hashlib

    import zstandard

    assert hashlib.sha256(body).hexdigest() == side["sha256"] and side["retention"]["mac"]
    assert side["postmortem"]["signal_name"] == "SIGSEGV"
    core = tmp_path / "core"
    core.write_bytes(zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read())
    out = gdb(str(crasher), str(core), "bt")
    assert "in worker" in out and "signal SIGSEGV" in out, out
    rows = json.loads(listed.stdout)
    assert [r["path"] for r in rows] == [r["path"] for r in records[::-1][:2]], rows
    assert rows[0]["signal"] == "SIGSEGV" and rows[0]["pid"] == side["pid"]
    # The secret is in the env file only: not in the config, the log, the sidecar.
    for text in [*kept_texts, json.dumps(side), listed.stdout]:
        assert AWS_SECRET not in text


@pytest.mark.parametrize("flaw", ["group-readable", "symlink", "a-symlinked-directory", "a-foreign-variable",
                                  "a-file-naming-variable", "no-credentials"])
def test_install_to_a_url_refuses_what_the_handler_could_not_use_safely(s3port, tmp_path, flaw):
    """Refused before anything is registered: an env file others can read or a link to one, a variable
    outside AWS_*/AZURE_* (LD_PRELOAD would run code as root at every crash), and a store the handler's
    environment cannot reach (this shell's credentials do not count: the probe runs without them)."""
    env_file = _env_file(tmp_path, s3port, 0o640 if flaw == "group-readable" else 0o600)
    named = env_file
    if flaw == "symlink":
        named = tmp_path / "etc" / "link.env"
        named.symlink_to(env_file)
    elif flaw == "a-symlinked-directory":
        # Install once resolved it and passed; every crash then refused it (no symlink on the way).
        (tmp_path / "etc-link").symlink_to(tmp_path / "etc")
        named = tmp_path / "etc-link" / "egress.env"
    elif flaw == "a-foreign-variable":
        env_file.write_text(env_file.read_text() + "LD_PRELOAD=/tmp/evil.so\n")
    elif flaw == "a-file-naming-variable":
        # botocore runs a config file's credential_process: a file anyone could write would run as root.
        env_file.write_text(env_file.read_text() + "AWS_CONFIG_FILE=/tmp/evil.so\n")
    before = Path("/proc/sys/kernel/core_pattern").read_bytes()
    state = private_state(tmp_path)
    args = ["postmortem", "install", "--dir", f"s3://{BUCKET}/refused/", "--state-dir", str(state),
            "--sysctl-file", str(tmp_path / "sysctl.conf"), "--json"]
    if flaw != "no-credentials":
        args += ["--env-file", str(named)]
    limit = Path("/proc/sys/kernel/core_pipe_limit").read_bytes()
    try:
        done = run_cli(*args, timeout=120, env={**os.environ, **s3_env(s3port)})  # this shell has credentials
    finally:
        # A planted bug that lets this install through must not leave the machine's crashes going to a
        # handler pytest deletes: put back what was there, whatever happened.
        if Path("/proc/sys/kernel/core_pattern").read_bytes() != before:
            run_cli("postmortem", "uninstall", "--state-dir", str(state), "--force", timeout=60)
            Path("/proc/sys/kernel/core_pattern").write_bytes(before.rstrip(b"\n"))
            Path("/proc/sys/kernel/core_pipe_limit").write_bytes(limit.strip())
    assert done.returncode == (14 if flaw == "no-credentials" else 2), done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    if flaw == "no-credentials":
        assert error["reason"] in ("no-credentials", "no-container", "unreachable") and "handler" in error["message"]
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == before
    assert not (state / "config.json").exists() and not (tmp_path / "sysctl.conf").exists()
    assert "/tmp/evil.so" not in done.stdout + done.stderr and AWS_SECRET not in done.stdout + done.stderr


def test_an_env_files_directory_made_writable_after_install_stops_the_upload(crasher, s3port, tmp_path):  # noqa: F811
    """Install checked the env file's directory; at the crash it is checked again, every component: a
    directory others can write since (a parent under /tmp made again after a reboot) may hold someone's
    file with their endpoint in it. The crash is refused (untrusted-dir) and nothing is uploaded."""
    state = private_state(tmp_path)
    env_file = _env_file(tmp_path, s3port)
    with installed(state, f"s3://{BUCKET}/moved/", "--kind", "mini", "--env-file", str(env_file)):
        env_file.parent.chmod(0o777)
        try:
            crash(crasher, "2")
            records = log_records(state, wait_for=1)
        finally:
            env_file.parent.chmod(0o700)
    assert [r["outcome"] for r in records] == ["untrusted-dir"], records
    assert str(env_file.parent) in records[0]["why"], records
    assert _keys(s3port, "moved/") == []


def test_install_refuses_an_sdk_directory_others_can_write(s3port, tmp_path):
    """The handler imports the store's SDK as root at every crash, from wherever install found it: a
    directory holding a file others can write (here a boto3 found first on the path, one file of it
    writable by all) is refused before anything is registered, naming the file."""
    site = tmp_path / "site"
    (site / "boto3").mkdir(parents=True)
    site.chmod(0o755)
    (site / "boto3").chmod(0o755)
    planted = site / "boto3" / "__init__.py"
    planted.write_text("from botocore import session  # a stand-in found before the real one\n")
    planted.chmod(0o666)
    env_file = _env_file(tmp_path, s3port)
    before = Path("/proc/sys/kernel/core_pattern").read_bytes()
    limit = Path("/proc/sys/kernel/core_pipe_limit").read_bytes()
    state = private_state(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    try:
        done = run_cli("postmortem", "install", "--dir", f"s3://{BUCKET}/sdk/", "--state-dir", str(state),
                       "--sysctl-file", str(tmp_path / "sysctl.conf"), "--env-file", str(env_file), "--json",
                       timeout=120, env=env)
    finally:
        if Path("/proc/sys/kernel/core_pattern").read_bytes() != before:
            run_cli("postmortem", "uninstall", "--state-dir", str(state), "--force", timeout=60)
            Path("/proc/sys/kernel/core_pattern").write_bytes(before.rstrip(b"\n"))
            Path("/proc/sys/kernel/core_pipe_limit").write_bytes(limit.strip())
    assert done.returncode == 2, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert str(planted) in error["message"] and "666" in error["message"], error
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == before
    assert not (state / "config.json").exists()
