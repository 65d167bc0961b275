"""Local stand-ins for the object stores, started by the tests: Azurite (npm azurite@3.35.0, run with
node) and moto's S3 server (PyPI moto[server]), each on a free loopback port with a bounded
readiness wait, stopped (its whole process group) afterwards. Also a TCP relay the tests cut to make
a store vanish mid-upload while its state survives, and the environments dumplib runs with.

Where Azurite is: ``$DUMPLIB_AZURITE`` (the ``azurite-blob`` script; .ci/run sets it after
``npm install --prefix <cache> azurite@3.35.0``), else ``azurite-blob`` on PATH. Under CI=true a
missing tool fails the tests (helpers.require)."""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from helpers import require

#: Azurite's well-known development account (published in Microsoft's docs; not a secret, but the
#: tests treat it as one: it must never appear in output, a dump or a sidecar).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: Distinctive fake AWS credentials (moto accepts any), grepped for in everything dumplib emits.
AWS_KEY_ID = "AKIADUMPLIBTESTKEY19"
AWS_SECRET = "dumplib/test+Secret/Key19ForEgressLeakChecks00"
ROOT = Path(__file__).resolve().parents[1]


def azurite_exe() -> Optional[str]:
    path = os.environ.get("DUMPLIB_AZURITE") or shutil.which("azurite-blob")
    return path if path and os.access(path, os.X_OK) else None


def require_azurite() -> str:
    exe = azurite_exe()
    require(exe is not None and shutil.which("node") is not None,
            "Azurite is not installed (npm install --prefix DIR azurite@3.35.0, then DUMPLIB_AZURITE="
            "DIR/node_modules/.bin/azurite-blob; .ci/run does this)")
    assert exe is not None
    return exe


def require_moto() -> str:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    require(os.access(exe, os.X_OK), "moto_server is not installed (pip install 'moto[server]'; the test extra has it)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, deadline: float) -> None:
    """Until any HTTP answer (a 4xx counts) comes from *url*; fail if the server exits or time runs out."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url} in time")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")


@contextlib.contextmanager
def azurite(timeout: float = 30.0) -> Iterator[int]:
    """Azurite (blob only) in memory, no telemetry, on a free loopback port; yields the port."""
    exe = require_azurite()
    port = free_port()
    work = tempfile.mkdtemp(prefix="azurite-")  # its cwd: it may write a debug file there
    proc = subprocess.Popen(
        [exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--extentMemoryLimit",
         "1024", "--disableTelemetry", "--skipApiVersionCheck", "--silent", "--loose"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list", proc, time.monotonic() + timeout)
        yield port
    finally:
        _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def moto(timeout: float = 30.0, env: Optional[Dict[str, str]] = None) -> Iterator[int]:
    """moto's S3 server on a free loopback port; yields the port. env={"INITIAL_NO_AUTH_ACTION_COUNT": "N"}
    makes it check signatures and IAM policies after its first N requests."""
    exe = require_moto()
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, time.monotonic() + timeout)
        yield port
    finally:
        _stop(proc)


def s3_env(port: int, key_id: str = AWS_KEY_ID, secret: str = AWS_SECRET) -> Dict[str, str]:
    """The AWS default chain pointed at moto only: no real profile, no instance-metadata address."""
    return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


_test_home: List[str] = []


def test_home() -> str:
    """The HOME dumplib runs with in these tests (made on first use, by the test process): its store
    retention key (~/.dumplib/egress-key, made on the first URL dump) goes here, not into the real home
    of whoever runs the suite."""
    if not _test_home:
        _test_home.append(tempfile.mkdtemp(prefix="dumplib-egress-home-"))
        # Removed when the test process ends, so runs of the suite do not pile homes up in /tmp.
        atexit.register(shutil.rmtree, _test_home[0], True)
    return _test_home[0]


def clean_env(**extra: str) -> Dict[str, str]:
    """dumplib's environment: this one without any store credential (nor a named retention key), with a
    home of its own, plus *extra*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "AZURE_")) and k != "DUMPLIB_EGRESS_KEY"}
    env["HOME"] = test_home()
    env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path] if p)
    env.update(extra)
    return env


def s3_client(port: int):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.session.Session(aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
                                 region_name="us-east-1").client("s3", endpoint_url=f"http://127.0.0.1:{port}")


def azure_container(port: int, name: str):  # type: ignore[no-untyped-def]
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite_connection_string(port)).get_container_client(name)


class Relay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:upstream; cut() closes it and every connection through it,
    as a store that vanished would, while the store behind it keeps its state for the test to read."""

    def __init__(self, upstream: int, rate: Optional[float] = None) -> None:
        self.upstream = upstream
        #: Bytes per second towards the store (None: as fast as it goes): a slow network.
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.socks: List[socket.socket] = []
        self.bytes = 0
        #: The first 256 KiB of each request line and header block sent towards the store (what a packet
        #: capture would show of plain-HTTP requests: method and path), for tests of what was asked.
        self.requests = bytearray()
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                a.close()
                continue
            with self._lock:
                if self._cut:
                    a.close()
                    b.close()
                    return
                self.socks += [a, b]
            threading.Thread(target=self._pump, args=(a, b, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if up:
                    self.bytes += len(data)
                    if len(self.requests) < (256 << 10):
                        self.requests += b"\n".join(line for line in data.split(b"\r\n")
                                                     if line.split(b" ", 1)[0] in (b"GET", b"PUT", b"POST", b"HEAD",
                                                                                   b"DELETE")) + b"\n"
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            socks, self.socks = self.socks, []
        self.listener.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


#: Runs the CLI with the root logger at DEBUG on stderr (what an application hosting dumplib might
#: configure), then writes the process's /proc/self/status (VmHWM: its peak RSS) to $DUMPLIB_STATUS_OUT.
CLI_WRAPPER = r"""
import atexit, logging, os, sys
out = os.environ.get("DUMPLIB_STATUS_OUT")
if out:
    atexit.register(lambda: open(out, "w").write(open("/proc/self/status").read()))
for name in filter(None, os.environ.get("DUMPLIB_TEST_NO_MODULE", "").split(",")):
    sys.modules[name] = None  # as if that SDK were not installed: its import raises ImportError
if os.environ.get("DUMPLIB_TEST_DEBUG_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
sys.argv = ["dumplib", *sys.argv[1:]]
from dumplib_cli.app import main
main()
"""


def run_dumplib(args: List[str], env: Dict[str, str], timeout: float = 240,
                trace: Optional[Path] = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; with *trace*, under strace recording every ptrace (a stop) and
    process_vm_readv (a read of a target's memory) into that file."""
    wrapper: List[str] = []
    if trace is not None:
        require(shutil.which("strace") is not None, "strace is not installed (apt-get install strace)")
        wrapper = ["strace", "-f", "-qq", "-e", "trace=ptrace,process_vm_readv,open,openat", "-o", str(trace)]
    return subprocess.run([*wrapper, sys.executable, "-c", CLI_WRAPPER, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def never_touched(trace: Path) -> List[str]:
    """The calls strace saw that stop or read a target (none: no target was stopped or read): ptrace, and
    a read of its memory, by process_vm_readv or (what dumplib reads live processes with) opening
    /proc/PID/mem."""
    return [line for line in trace.read_text().splitlines()
            if "ptrace(" in line or "process_vm_readv(" in line or re.search(r'"/proc/\d+/mem"', line)]


def peak_rss_kib(status_file: Path) -> int:
    for line in status_file.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def interrupted_upload(target_exe: Path, url: str, env: Dict[str, str], relay: Relay,
                       interrupt: "Callable[[subprocess.Popen], None]") -> Tuple[int, str, str, float]:
    """A full dump of a 200 MiB process to *url* through *relay* (a 10 MiB buffer), *interrupt*ed once
    30 MiB went through; the target must run on untraced. (exit code, stdout, stderr, seconds to exit)."""
    from linuxrig import run_target

    with run_target([str(target_exe), "--heap", "200"]) as t:
        proc = subprocess.Popen([sys.executable, "-c", CLI_WRAPPER, "dump", str(t.pid), url, "-k", "full",
                                 "--snapshot=auto", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**env, "DUMPLIB_UPLOAD_BUFFER": "10M"})
        deadline = time.monotonic() + 60
        while relay.bytes < (30 << 20) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        interrupt(proc)
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - started
        t.assert_running_untraced()
    return proc.returncode, out, err, took


def assert_refused_before_touching(done: subprocess.CompletedProcess, trace: Path, target, store: str,  # type: ignore[no-untyped-def]
                                   reasons: "set[str]", secrets: List[str]) -> Dict[str, object]:
    """Exit 14, RemoteDestinationError with one of *reasons*, no secret in anything printed, and the
    target never stopped nor read (strace) and running untraced. The error's facts."""
    assert done.returncode == 14, (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "RemoteDestinationError" and error["reason"] in reasons and error["store"] == store, error
    assert never_touched(trace) == [], "the target was stopped or read"
    target.assert_running_untraced()
    leaked = [s for s in secrets if s and s in done.stdout + done.stderr]
    assert leaked == []
    return error
