"""A Windows dump to Azure Blob Storage under Wine: the raw-then-upload path (docs/egress.md, "Which
path runs where") run end to end by real Windows CPython with the real Azure SDK (its Windows wheels,
Rig.extra_site("azure")), against Azurite on loopback, started here.

The dump goes raw to a local volume first (MiniDumpWriteDump needs a seekable file), is verified, then
compressed, uploaded and committed; the raw copy is deleted. Everything is checked from the Linux side:
the object and its sidecar downloaded with the Linux SDK, hashed, decompressed and parsed with the PyPI
`minidump` parser; the Windows temp directory, where the raw copy goes, watched while the dump runs."""
from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from dumplib.formats.minidump import read_minidump
from egressrig import AZURITE_KEY, Relay, azure_container, azurite, azurite_connection_string
from helpers import require
from winhelpers import parse_independently
from winrig import Rig, WineUnavailable, WinTarget

pytestmark = pytest.mark.wine

CONTAINER = "wine-dumps"
#: The target's heap of random bytes: no compressor shrinks it, so the zstd dump keeps about this much
#: and its upload spans several 8 MiB blocks (one can be cut in the middle of the upload).
HEAP = 16 << 20

TARGET = f"""
import ctypes, hashlib, json, os, sys, uuid
marker = f"DUMPLIB-MARKER-{{uuid.uuid4().hex}}".encode()
block = ctypes.create_string_buffer({HEAP})
base = ctypes.addressof(block)
# Filled in place (RtlGenRandom): random temporaries, once freed, would stay in the heap and in the dump.
assert ctypes.windll.advapi32.SystemFunction036(block, {HEAP})
ctypes.memmove(base, marker, len(marker))
print(json.dumps({{"pid": os.getpid(), "marker": marker.decode(), "address": base,
                  "sha256": hashlib.sha256(block).hexdigest()}}), flush=True)
for line in sys.stdin:
    if line.strip() == "ping":
        print("pong", flush=True)
"""


@pytest.fixture(scope="module")
def azsite(rig: Rig) -> Path:
    """The Azure SDK's Windows wheels, on the path of only the dumplib runs of this file. Without
    azure-identity: the connection string's route must not need it."""
    try:
        site = rig.extra_site("azure")
    except WineUnavailable as exc:
        require(False, f"the Azure SDK's Windows wheels could not be fetched: {exc}")
        raise
    assert (site / "azure" / "storage" / "blob").is_dir() and not (site / "azure" / "identity").exists()
    return site


@pytest.fixture(scope="module")
def azport(rig: Rig) -> Iterator[int]:
    with azurite() as port:  # Azurite missing: a failure under CI=true (helpers.require)
        azure_container(port, CONTAINER).create_container()
        yield port


def _heap_target(rig: Rig) -> "contextlib.AbstractContextManager[WinTarget]":
    """A Windows python.exe holding HEAP random bytes (a marker first); answers `ping`, ends with its stdin."""
    return rig.held_python(["-c", TARGET])


def _answers(t: WinTarget) -> bool:
    """The target runs: it answers a ping (its threads are not left suspended)."""
    t.send("ping")
    return t.proc.stdout.readline().strip() == "pong"  # type: ignore[union-attr]


def _dumplib(rig: Rig, site: Path, args: List[str], conn: str) -> subprocess.Popen:
    """The dumplib CLI in Windows python.exe with the Azure SDK, and no store credential but *conn*."""
    env = {k: v for k, v in rig.env.items() if not k.startswith(("AZURE_", "AWS_"))}
    env["AZURE_STORAGE_CONNECTION_STRING"] = conn
    return subprocess.Popen(rig.python_cmd(["-m", "dumplib_cli", *args], sites=[site]), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _watching(directory: Path) -> Iterator[Dict[str, int]]:
    """dumplib's temporary files that appear in *directory* meanwhile, with the largest size seen."""
    before = {p.name for p in directory.iterdir()}
    seen: Dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            # Any OSError, not only a file gone: a stat of a file the writer holds open can fail with a
            # sharing violation (PermissionError), which ended this thread, and the raw copy went unseen.
            with contextlib.suppress(OSError):
                for p in directory.iterdir():
                    if p.name.startswith(".dumplib-") and p.name not in before:
                        with contextlib.suppress(OSError):
                            seen[p.name] = max(seen.get(p.name, 0), p.stat().st_size)
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def _ours(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".dumplib-"))


def _committed(port: int, prefix: str) -> List[str]:
    # A listing shows committed blobs only, never staged blocks (the probe's, an abandoned upload's).
    return sorted(b.name for b in azure_container(port, CONTAINER).list_blobs(name_starts_with=prefix))


def test_a_full_zstd_dump_goes_raw_to_a_local_volume_then_to_azure_and_parses(rig, azsite, azport, tmp_path):
    temp = rig.windows_temp()  # where the raw copy goes: every volume here is one Linux file system, so
    # the first candidate, Windows' %TEMP%, has as much room as any (and Wine sets %TEMP% from its registry)
    left_before = _ours(temp)
    url = f"az://{CONTAINER}/wine/{{name}}_{{pid}}.dmp.zst"
    with _heap_target(rig) as t, _watching(temp) as seen:
        proc = _dumplib(rig, azsite, ["dump", str(t.pid), url, "-k", "full", "-z", "zstd", "--json"],
                        azurite_connection_string(azport))
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        assert _answers(t)
    result = json.loads(out)
    name = f"wine/python_{t.pid}.dmp.zst"
    assert result["path"] == f"az://{CONTAINER}/{name}" and result["compression"] == "zstd"
    assert _committed(azport, "wine/") == [name, name + ".json"]

    # The raw dump was written whole to the local volume, then deleted: nothing of it is left.
    assert result["raw_size"] in seen.values(), f"no raw copy of {result['raw_size']} bytes seen in {temp}: {seen}"
    assert _ours(temp) == left_before

    box = azure_container(azport, CONTAINER)
    blob = box.get_blob_client(name)
    body = blob.download_blob().readall()
    side = json.loads(box.get_blob_client(name + ".json").download_blob().readall())
    sha = hashlib.sha256(body).hexdigest()
    assert sha == side["sha256"] == result["sha256"] == blob.get_blob_properties().metadata["sha256"]
    assert side["url"] == result["path"] and side["pid"] == t.pid and side["kind"] == "full"
    assert HEAP < len(body) == result["size"] < result["raw_size"]

    import zstandard

    raw = tmp_path / "raw.dmp"
    raw.write_bytes(zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read())
    assert raw.stat().st_size == side["raw_size"] == result["raw_size"]
    mf = parse_independently(raw, tmp_path)
    assert len(mf.threads.threads) >= 1
    names = [m.name.lower().replace("/", "\\").rsplit("\\", 1)[-1] for m in mf.modules.modules]
    assert "python.exe" in names and "kernel32.dll" in names, names
    heap = mf.get_reader().read(t.address, HEAP)
    assert heap[:len(t.marker)] == t.marker and hashlib.sha256(heap).hexdigest() == t.info["sha256"]
    for secret in (AZURITE_KEY, AZURITE_KEY[:20]):
        assert secret not in out + err and secret not in json.dumps(side)
        assert secret.encode() not in body


@pytest.mark.parametrize("keep", [False, True], ids=["raw-deleted", "raw-kept"])
def test_the_store_vanishing_mid_upload_commits_nothing_and_keeps_the_raw_copy_only_when_asked(
        rig, azsite, azport, keep):
    temp = rig.windows_temp()
    left_before = _ours(temp)
    prefix = f"cut-{'kept' if keep else 'deleted'}/"
    # 8 MiB/s towards the store: the upload (HEAP and more) takes seconds; the cut comes after its first
    # 8 MiB block, with more to send.
    relay = Relay(azport, rate=8 << 20)
    with _heap_target(rig) as t, _watching(temp) as seen:
        args = ["dump", str(t.pid), f"az://{CONTAINER}/{prefix}{{name}}_{{pid}}.dmp.zst", "-k", "full", "-z", "zstd",
                "--json", *(["--keep-local-on-failure"] if keep else [])]
        proc = _dumplib(rig, azsite, args, azurite_connection_string(relay.port))
        deadline = time.monotonic() + 180
        while relay.bytes < (10 << 20) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # The raw copy was written and the target let go before the upload: it runs while the upload goes on.
        assert proc.poll() is None and _answers(t)
        relay.cut()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 8, (proc.returncode, out, err[-3000:])
        assert _answers(t)
    kept = temp / f"python_{t.pid}.dmp"
    try:
        error = json.loads(out)["error"]
        assert error["type"] == "DumpFailed" and error["reason"] == "upload-failed", error
        assert error["pid"] == t.pid, error  # the raw-then-upload path names the process, as Linux's stream does
        assert "nothing was committed" in error["message"]
        assert _committed(azport, prefix) == []  # neither the dump nor its sidecar
        # Blocks of it had been staged (beside the probe's): the cut came in the middle of the upload.
        staged = azure_container(azport, CONTAINER).list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
        assert [b.name for b in staged if ".dumplib-probe-" not in b.name] == [f"{prefix}python_{t.pid}.dmp.zst"]
        raw_size = max(seen.values(), default=0)
        assert raw_size > HEAP, f"no raw copy seen in {temp}: {seen}"
        assert _ours(temp) == left_before  # the raw copy is gone from where it was written, kept or not
        if not keep:
            assert not kept.exists() and error.get("kept") is None, error
            return
        assert (error.get("kept") or "").lower() == rf"c:\users\{temp.parent.name}\temp\{kept.name}".lower(), error
        assert f"kept at {error['kept']}" in error["message"] and "--keep-local-on-failure" in error["message"]
        assert kept.stat().st_size == raw_size
        parsed = read_minidump(str(kept))  # the verified raw dump, whole
        assert parsed.complete and parsed.pid == t.pid and parsed.threads and parsed.modules
        assert parsed.read_memory(t.address, len(t.marker)) == t.marker
    finally:
        kept.unlink(missing_ok=True)  # the prefix's %TEMP% is shared by every Wine test
