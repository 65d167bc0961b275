"""Process shapes whose address space dwarfs their data (issue 9): each dumped for real, then checked for
the pause (stopped_seconds), the target's memory (VmRSS, RssShmem, HugePages_Free before and after), the
bytes on disk (st_blocks) and what gdb and readelf read back.

The targets are built from shapes_mem/shapes.c by gcc. Limits are generous (the machine is shared) but
each sits far below what the old behaviour cost: 28 s paused for a 16 GiB mapping of a 10-byte file, 23 s
(zstd) and 120 s (gzip) for a 64 GiB reservation, the target's RSS growing from 1.6 MB to 8.4 GB.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest

import dumplib
from dumplib.formats import elfcore
from helpers import require
from linuxrig import build_source, gdb, have, run_target

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent
GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("shapes"), HERE / "shapes_mem" / "shapes.c")


#: The CPU a dump of these shapes may cost (this process's, or the command's): what their regressions
#: spent (28.6 s stopped walking 2 x 16 GiB past a file's end; 23 s of zstd over 64 GiB of zeros; 80 s
#: of sha256 over holes) was work, which a loaded machine cannot inflate as it does the wall clock.
CPU_BOUND = 1.5
#: The wall-clock bound on the same stops: far below those regressions, far above what two CPUs shared
#: with eight busy loops make of a stop that costs under CPU_BOUND of CPU.
STOP_BOUND = 10.0


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _status(pid: int) -> Dict[str, int]:
    """The target's memory from the kernel, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _grew(before: Dict[str, int], after: Dict[str, int], key: str) -> int:
    return after[key] - before[key]


def _cannot_read(out: str, address: int) -> bool:
    return f"Cannot access memory at address 0x{address:x}" in out


def _zeros_at(out: str, address: int) -> bool:
    return re.search(rf"0x{address:x}:\s+0x00\s+0x00\s+0x00\s+0x00", out) is not None


def test_a_file_mapped_far_past_its_end_is_not_read_estimated_or_shown_as_zeros(shapes, tmp_path, outdir):
    with run_target([str(shapes), "eof", str(tmp_path / "ten-bytes")]) as t:
        before = _status(t.pid)
        estimate = dumplib.estimate(t.pid, "full")
        cpu = _cpu()
        result = dumplib.create_dump(t.pid, outdir, "full")
        cpu = _cpu() - cpu
        after = _status(t.pid)
        t.assert_running_untraced()
    shared, private, size = (int(t.info[k]) for k in ("shared", "private", "size"))
    assert cpu < CPU_BOUND and result.stopped_seconds < STOP_BOUND, (cpu, result.stopped_seconds)  # was 28.6 s
    assert estimate.bytes < 64 * MiB and result.disk_bytes < 64 * MiB, (estimate.bytes, result.disk_bytes)
    assert result.size < 64 * MiB  # nothing of the 2 x 16 GiB past the file's one page is carried, not even holes
    assert _grew(before, after, "RssAnon") < 4 * MiB and _grew(before, after, "RssShmem") == 0
    core = elfcore.read_elfcore(result.path)
    for base in (shared, private):
        assert any(ld.vaddr == base and ld.memsz == 4096 for ld in core.loads)  # the file's page, and no more
        assert not any(ld.vaddr <= base + 4096 < ld.vaddr + ld.memsz for ld in core.loads)
    out = gdb(str(shapes), result.path, f"x/s {shared}", f"x/s {private}", f"x/4xb {shared + 4096}",
              f"x/4xb {private + size - 8}")
    assert out.count('"EOF-MARKER"') == 2, out
    assert _cannot_read(out, shared + 4096) and _cannot_read(out, private + size - 8), out  # SIGBUS in the process


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("to", ["file", "pipe"])
def test_a_64gib_reservation_holding_3mib_compresses_at_the_cost_of_its_data(shapes, tmp_path, outdir, codec, to):
    require(have(codec), f"the {codec} tool is not installed (apt-get install {codec})")
    core = tmp_path / "plain.core"
    with run_target([str(shapes), "reserve"]) as t:
        before = _status(t.pid)
        started = time.monotonic()
        cpu = _cpu() + _cpu(resource.RUSAGE_CHILDREN)
        if to == "file":
            result = dumplib.create_dump(t.pid, outdir, "full", compress=codec)
            dumped_cpu = _cpu() + _cpu(resource.RUSAGE_CHILDREN) - cpu
            stored, stopped = result.size, result.stopped_seconds
            with open(core, "wb") as sink:
                subprocess.run([codec, "-d", "-c", result.path], stdout=sink, check=True)
        else:
            with open(core, "wb") as sink:
                dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), "-", "-k", "full",
                                           "-z", codec], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                compressed = dumper.stdout.read()  # type: ignore[union-attr]
                err = dumper.stderr.read().decode()  # type: ignore[union-attr]
                assert dumper.wait() == 0, err
                dumped_cpu = _cpu() + _cpu(resource.RUSAGE_CHILDREN) - cpu  # before the test's own decompression
                sink.write(gzip.decompress(compressed) if codec == "gzip" else
                           subprocess.run(["zstd", "-d", "-c"], input=compressed, capture_output=True, check=True).stdout)
            stored = len(compressed)
            stopped = float(re.search(r"target stopped ([\d.]+) s", err).group(1))  # type: ignore[union-attr]
        wall = time.monotonic() - started
        after = _status(t.pid)
        t.assert_running_untraced()
    # Was 23 s (zstd) and over 120 s (gzip) stopped. The CPU counts the command's too (a child, waited for).
    assert dumped_cpu < 2 * CPU_BOUND and stopped < STOP_BOUND and wall < 120, (dumped_cpu, stopped, wall)
    assert stored < 16 * MiB and core.stat().st_size < 32 * MiB, (stored, core.stat().st_size)
    assert _grew(before, after, "VmRSS") < 8 * MiB
    base, untouched = int(t.info["base"]), int(t.info["untouched"])
    out = gdb(str(shapes), str(core), f"x/s {t.marker_address}", f"x/4xb {untouched}", f"x/4xb {base + 64 * GiB - 8}")
    assert f'"{t.marker.decode()}"' in out, out
    assert _zeros_at(out, untouched) and _zeros_at(out, base + 64 * GiB - 8), out  # untouched: zeros, truly


def test_full_dump_of_a_64gib_reservation_is_small_and_its_sidecar_hash_is_quick(shapes, outdir):
    with run_target([str(shapes), "reserve"]) as t:
        cpu = _cpu()
        result = dumplib.create_dump(t.pid, outdir, "full")
        cpu = _cpu() - cpu
        t.assert_running_untraced()
    # The file holds the data, not 64 GiB of holes, so the sidecar's sha256 reads megabytes (was 80 s of CPU).
    assert cpu < CPU_BOUND and result.stopped_seconds < STOP_BOUND, (cpu, result.seconds, result.stopped_seconds)
    assert result.size < 32 * MiB and result.disk_bytes < 32 * MiB
    with open(result.path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == result.sha256
    assert json.loads(Path(result.sidecar).read_text())["sha256"] == result.sha256  # type: ignore[arg-type]
    headers = subprocess.run(["readelf", "-lW", result.path], capture_output=True, text=True, check=True).stdout
    loads = [(int(m[0], 16), int(m[1], 16)) for m in re.findall(r"LOAD\s+\S+\s+\S+\s+\S+\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)",
                                                               headers)]
    assert sum(mem for _, mem in loads) > 64 * GiB  # the reservation is described whole...
    assert sum(filesz for filesz, _ in loads) < 32 * MiB  # ...and stored as its data


def test_sparse_shared_memory_is_not_allocated_by_the_dump(shapes, outdir):
    with run_target([str(shapes), "shared"]) as t:
        before = _status(t.pid)
        estimate = dumplib.estimate(t.pid, "full")
        cpu = _cpu()
        result = dumplib.create_dump(t.pid, outdir, "full")
        cpu = _cpu() - cpu
        after = _status(t.pid)
        t.assert_running_untraced()
    assert cpu < CPU_BOUND and result.stopped_seconds < STOP_BOUND, (cpu, result.stopped_seconds)
    assert _grew(before, after, "RssShmem") == 0 and _grew(before, after, "VmRSS") < 8 * MiB, (before, after)
    # 3 x 8 GiB of address space holding 3 x (256 KiB + 1 page): estimated as data, never low, never GiBs.
    assert result.disk_bytes <= estimate.bytes < result.disk_bytes + 4 * MiB, (estimate.bytes, result.disk_bytes)
    assert estimate.breakdown["shared"] < 2 * MiB
    offset = int(t.info["marker_offset"])
    areas = [int(t.info[k]) for k in ("memfd", "anon", "sysv")]
    out = gdb(str(shapes), result.path, *(f"x/s {a + offset}" for a in areas), *(f"x/4xb {a + 3 * GiB}" for a in areas))
    for i, base in enumerate(areas):
        assert f'"DUMPLIB-SHARED-{i}-{t.pid}"' in out, out
        assert _zeros_at(out, base + 3 * GiB), out  # a hole of the object: zero in the process too
    out = gdb(str(shapes), result.path, *(f"x/4xb {a + MiB + 16384}" for a in areas),
              *(f"x/4xb {a + MiB + 4096}" for a in areas))
    for base in areas:  # a page with data, and a hole between two, inside one stored run
        assert re.search(rf"0x{base + MiB + 16384:x}:\s+0x01\s+0x00", out) and _zeros_at(out, base + MiB + 4096), out


def test_miniplus_takes_private_hugetlb_memory_like_the_kernel_default(shapes, outdir):
    require(os.geteuid() == 0, "reserving huge pages needs root")
    knob = Path("/proc/sys/vm/nr_hugepages")
    require(knob.exists(), "this kernel has no hugetlb support")
    saved = knob.read_text()
    knob.write_text("8\n")
    try:
        require(_meminfo("HugePages_Total") >= 2, "the kernel could not reserve 2 huge pages")
        with run_target([str(shapes), "hugetlb"]) as t:
            free = _meminfo("HugePages_Free")
            plus = dumplib.create_dump(t.pid, outdir, "miniplus")
            mini = dumplib.create_dump(t.pid, outdir, "mini")
            assert _meminfo("HugePages_Free") == free  # the untouched huge page was not allocated by reading it
            t.assert_running_untraced()
    finally:
        knob.write_text(saved)
    base = int(t.info["base"])
    out = gdb(str(shapes), plus.path, f"x/s {t.marker_address}", f"x/4xb {base + 3 * MiB}")
    assert f'"{t.marker.decode()}"' in out and _zeros_at(out, base + 3 * MiB), out
    assert f'"{t.marker.decode()}"' not in gdb(str(shapes), mini.path, f"x/s {t.marker_address}")


def _meminfo(key: str) -> int:
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1])


@pytest.mark.parametrize("kind", ["triage", "mini", "miniplus", "full"])
def test_estimates_hold_for_250_threads_some_running(shapes, outdir, kind):
    with run_target([str(shapes), "threads", "250", "1"]) as t:
        estimate = dumplib.estimate(t.pid, kind)
        result = dumplib.create_dump(t.pid, outdir, kind)
        t.assert_running_untraced()
    ratio = estimate.bytes / result.disk_bytes
    assert 1.0 <= ratio < 1.5, (estimate.bytes, result.disk_bytes, estimate.breakdown)  # was 0.19 for mini
    # The XSAVE notes the kernel handed over fit in what the estimate allowed per thread.
    core = elfcore.read_elfcore(result.path)
    xstate = [n.size for n in core.notes if n.owner == "LINUX" and n.type == 0x202]
    assert len(xstate) == t.threads == len(core.threads)
    from dumplib._linux.core.memory import xstate_note_size
    assert max(xstate) <= xstate_note_size()


def test_planning_is_linear_in_file_mappings(shapes, tmp_path, outdir):
    """20 000 one-page file mappings (was 35 s to plan; timing lives in benchmarks/linux_many_mappings.py)."""
    require(have("eu-readelf"), "eu-readelf is not installed (apt-get install elfutils); NT_FILE cannot be read")
    page = tmp_path / "pages"
    page.write_bytes(b"".join(bytes([k + 1]) * 4096 for k in range(64)))  # page k holds k + 1
    with run_target([str(shapes), "many", "20000", str(page), "64"]) as t:
        estimate = dumplib.estimate(t.pid, "full")
        result = dumplib.create_dump(t.pid, outdir, "full")
        with open(f"/proc/{t.pid}/maps") as f:
            mapped = [(int(line.split("-")[0], 16), int(line.split()[2], 16) // 4096 + 1)
                      for line in f if line.rstrip().endswith(str(page))]
        t.assert_running_untraced()
    assert result.disk_bytes <= estimate.bytes
    notes = subprocess.run(["eu-readelf", "-n", result.path], capture_output=True, text=True, check=True).stdout
    assert notes.count(str(page)) == len(mapped) == 20000  # one NT_FILE entry per mapping
    sample = mapped[::997] + mapped[-3:]  # pages read many to one process_vm_readv: each where it belongs
    out = gdb(str(shapes), result.path, *(f"x/2xb {a + 4094}" for a, _ in sample))
    assert all(re.search(rf"0x{a + 4094:x}:\s+0x{v:02x}\s+0x{v:02x}\n", out) for a, v in sample), out


def test_fragmented_memory_past_65535_loads_uses_pn_xnum_and_gdb_reads_it(shapes, outdir):
    with run_target([str(shapes), "fragments", "70000"]) as t:
        result = dumplib.create_dump(t.pid, outdir, "full")
        t.assert_running_untraced()
    with open(result.path, "rb") as f:
        head = f.read(64)
    assert struct.unpack_from("<H", head, 56)[0] == 0xFFFF  # e_phnum: the count is in section 0's sh_info
    headers = subprocess.run(["readelf", "-lW", result.path], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"There are (\d+) program headers", headers).group(1)) > 70000  # type: ignore[union-attr]
    base = int(t.info["base"])
    out = gdb(str(shapes), result.path, f"x/s {t.marker_address}", f"x/4xb {base + 4096}")
    assert f'"{t.marker.decode()}"' in out and _zeros_at(out, base + 4096), out
