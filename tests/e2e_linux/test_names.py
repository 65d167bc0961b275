"""Names the kernel and users really produce: a comm cut mid-character, a mapped path that is not UTF-8,
a comment that imitates dumplib's signature. Real processes, read back by eu-readelf and gdb."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import dumplib
from helpers import require
from linuxrig import dumplib_cli, have, run_target

pytestmark = pytest.mark.linux

# Sets its own name with PR_SET_NAME (any bytes; the kernel keeps 15) and maps a file whose path is
# not UTF-8 and holds an escape character.
WEIRD = r"""
import ctypes, json, mmap, os, sys
name, path = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
assert ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0) == 0
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, b"DUMPLIB-NAMES" * 400)
view = mmap.mmap(fd, 4096)
# A loaded object at a hostile path too (a copy of the mmap extension): info lists loaded objects.
with open(mmap.__file__, "rb") as src, open(path + b".so", "xb") as dst:
    dst.write(src.read())
loaded = ctypes.CDLL(os.fsdecode(path + b".so"))
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.read()
"""


@pytest.fixture()
def weird(tmp_path: Path) -> Iterator[Tuple[object, bytes, bytes]]:
    """(target, comm bytes as the kernel keeps them, mapped path bytes)."""
    # Two ASCII bytes and five three-byte characters: 17 bytes, cut by the kernel to 15, mid-character.
    name = secrets.token_hex(1).encode() + "€€€€€".encode()
    path = os.fsencode(str(tmp_path)) + b"/map-\xff\xfe\x1b[31m.bin"
    with run_target([sys.executable, "-c", WEIRD, name.hex(), path.hex()]) as t:
        comm = Path(f"/proc/{t.pid}/comm").read_bytes().rstrip(b"\n")
        assert comm == name[:15] and comm.endswith(b"\xe2")  # the kernel's own cut, not ours
        yield t, comm, path


def _shown(raw: bytes) -> str:
    """How a person must see *raw*: UTF-8 as is, other bytes and controls as \\xNN (built by hand here)."""
    out = ""
    for ch in raw.decode("utf-8", "backslashreplace"):
        out += f"\\x{ord(ch):02x}" if ord(ch) < 0x20 else ch
    return out


def _assert_running_untraced(pid: int) -> None:
    # /proc/PID/status as bytes: its Name: line is the comm, which is not UTF-8 here.
    lines = Path(f"/proc/{pid}/status").read_bytes().splitlines()
    status = dict(line.split(b":\t", 1) for line in lines if b":\t" in line)
    assert status[b"TracerPid"] == b"0" and status[b"State"][:1] in b"RS", status


def test_estimate_dump_and_ps_of_a_process_with_an_undecodable_name_and_path(weird, outdir):
    target, comm, path = weird
    done = dumplib_cli("estimate", str(target.pid))
    assert done.returncode == 0, done.stderr
    done = dumplib_cli("dump", str(target.pid), str(outdir), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["process_name"] == _shown(comm) == comm[:14].decode() + "\\xe2"
    sidecar = json.loads(Path(result["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["process_name"] == _shown(comm)
    _assert_running_untraced(target.pid)
    listed = dumplib_cli("ps", str(target.pid))
    assert listed.returncode == 0 and _shown(comm) in listed.stdout, listed.stdout + listed.stderr


def test_the_core_holds_the_name_and_path_as_the_kernels_bytes(weird, outdir):
    require(have("eu-readelf"), "eu-readelf (elfutils) is not installed")
    target, comm, path = weird
    core = dumplib.create_dump(target.pid, outdir, "mini").path
    notes = subprocess.run(["eu-readelf", "-n", core], capture_output=True, timeout=120).stdout
    assert b"fname: " + comm + b"\n" in notes, notes[:2000]
    assert path in notes  # NT_FILE, as eu-readelf lists it
    mappings = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info proc mappings", "-c", core],
                              capture_output=True, timeout=120).stdout
    assert path in mappings, mappings[-3000:]


def test_info_shows_undecodable_names_escaped(weird, outdir):
    target, comm, path = weird
    core = dumplib.create_dump(target.pid, outdir, "mini").path
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "info", core], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # A loaded object at map-\xff\xfe\x1b[31m.bin.so, as text (info's modules are the loaded objects).
    assert _shown(path + b".so").encode() in done.stdout
    assert b"\x1b" not in done.stdout and b"\xff" not in done.stdout  # nothing a terminal would act on


def test_a_name_matches_as_the_os_gives_it_and_as_dumplib_shows_it(weird):
    target, comm, _ = weird
    assert dumplib.resolve_target(os.fsdecode(comm)).pid == target.pid
    found = dumplib.resolve_target(_shown(comm))
    assert found.pid == target.pid and found.name == _shown(comm)


@pytest.mark.parametrize("comment", [
    '{"tool":"dumplib","version":"0.0.1","kind":"full","flags":3}',
    "dumplib 0.1.0; kind=full; flags=0x3",
    'x\n{"tool":"dumplib","version":"0.0.1","kind":"triage","flags":null}',
])
def test_a_comment_imitating_the_signature_does_not_change_the_kind(ctarget, outdir, comment):
    path = dumplib.create_dump(ctarget.pid, outdir, "mini", comment=comment).path
    done = dumplib_cli("info", path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert (shown["kind"], shown["flags"], shown["dumplib_version"]) == ("mini", None, dumplib.__version__)
    assert shown["comment"] == comment.replace("\n", "\\x0a")
