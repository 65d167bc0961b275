"""README.md's Linux promises, each checked from outside: real processes, real volumes, real readers.

Every test here went red when the promise it names was broken on purpose (see the test names).
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import dumplib
from dumplib.kinds import DumpKind
from helpers import ext4_volume, leftovers, require, tmpfs
from linuxrig import PY_RANDOM_HEAP, as_nobody, build_c, gdb, have, run_cli, run_in_pty, run_target

pytestmark = pytest.mark.linux
GiB = 1 << 30
ROOT = Path(__file__).resolve().parents[2]


# -- post-write verification -------------------------------------------------------------------------

def _notes_span(path: str) -> Tuple[int, int]:
    """(offset, size) of the PT_NOTE segment, read with the ELF layout, not dumplib's reader."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", head, phoff + i * phentsize)
        if p_type == 4:  # PT_NOTE
            return offset, filesz
    raise AssertionError(f"{path} has no PT_NOTE yet")


def _retype_thread_notes(path: str) -> None:
    """Turn every NT_PRSTATUS note into an unknown type: a core that names no thread."""
    offset, size = _notes_span(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        notes = bytearray(f.read(size))
        pos = 0
        while pos + 12 <= len(notes):
            namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
            if ntype == 1:
                struct.pack_into("<I", notes, pos + 8, 0x4F4F)
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
        f.seek(offset)
        f.write(notes)


def _zero_elf_header(path: str) -> None:
    with open(path, "r+b") as f:
        f.write(bytes(64))


class _CorruptOwnTempFile:
    """A progress callback that damages dumplib's temporary file once, as a failing disk would."""

    def __init__(self, outdir: Path, damage: Callable[[str], None]) -> None:
        self.outdir, self.damage = outdir, damage
        self.done: List[str] = []

    def __call__(self, written: int, elapsed: float) -> None:
        if self.done:
            return
        temps = [self.outdir / n for n in leftovers(self.outdir)]
        assert len(temps) == 1, temps
        self.damage(str(temps[0]))
        self.done.append(str(temps[0]))


@pytest.mark.parametrize("damage", [_zero_elf_header, _retype_thread_notes], ids=["elf-header", "thread-notes"])
def test_a_core_damaged_on_disk_during_the_write_fails_verification_and_is_removed(ctarget, outdir, damage):
    progress = _CorruptOwnTempFile(outdir, damage)
    with pytest.raises(dumplib.DumpFailed) as info:
        dumplib.create_dump(ctarget.pid, outdir, "full", progress=progress)
    assert progress.done, "the progress callback never ran: nothing was damaged"
    assert "removed" in str(info.value), str(info.value)
    assert list(outdir.iterdir()) == []
    ctarget.assert_running_untraced()


@pytest.mark.parametrize("cut", ["truncated", "thread-notes", "other-pid"])
def test_the_linux_verifier_refuses_real_cores_that_are_truncated_or_wrong(ctarget, outdir, cut):
    from dumplib._linux.backend import verify_core

    good = dumplib.create_dump(ctarget.pid, outdir / "good.core", "mini", sidecar=False).path
    verify_core(good, ctarget.pid, ctarget.threads)  # the intact core passes
    bad = str(outdir / "bad.core")
    shutil.copy(good, bad)
    pid = ctarget.pid
    if cut == "truncated":
        os.truncate(bad, os.path.getsize(bad) * 2 // 3)
    elif cut == "thread-notes":
        _retype_thread_notes(bad)
    else:
        pid = ctarget.pid + 1
    with pytest.raises(dumplib.DumpFailed):
        verify_core(bad, pid, ctarget.threads)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_file_that_does_not_read_back_as_written_is_refused(target_exe, outdir, codec):
    # The compressed file is read back and compared with the bytes produced; flip one stored byte
    # mid-write (the writer never goes back there) and the dump must not be kept.
    def flip_first_byte(path: str) -> None:
        with open(path, "r+b") as f:
            first = f.read(1)
            if first:
                f.seek(0)
                f.write(bytes([first[0] ^ 0xFF]))
            else:  # nothing stored yet: a stray byte far past where the compressed file will end
                f.seek(256 << 20)
                f.write(b"X")

    with run_target([str(target_exe), "--heap", "200"]) as t:
        progress = _CorruptOwnTempFile(outdir, flip_first_byte)
        with pytest.raises(dumplib.DumpFailed) as info:
            dumplib.create_dump(t.pid, outdir, "full", compress=codec, progress=progress)
        assert progress.done
        assert info.value.details().get("reason") == "unverified", info.value.details()
        assert list(outdir.iterdir()) == []
        t.assert_running_untraced()


# -- exit codes 5, 9, 10 through the command -------------------------------------------------------




@pytest.fixture(scope="module")
def nobody_tree(target_exe) -> Iterator[Path]:
    """dumplib, its command and every package the command imports, readable by nobody (/root is not)."""
    require(os.geteuid() == 0, "switching to uid 65534 needs root")
    system_python = "/usr/bin/python3"
    require(os.path.exists(system_python), f"{system_python} is needed to run as nobody")
    probe = subprocess.run([system_python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True)
    require(probe.stdout.strip() == str(sys.version_info[:2]),
            f"{system_python} is not Python {sys.version_info[:2]} (compiled packages would not load)")
    root = Path(tempfile.mkdtemp(prefix="dumplib-nobody-cli-", dir="/tmp"))
    try:
        for name in _imported_packages():
            src = Path(name)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, root / src.name)
        shutil.copytree(ROOT / "dumplib", root / "dumplib")
        shutil.copytree(ROOT / "cli", root / "dumplib_cli")
        shutil.copy(target_exe, root / "target")
        (root / "out").mkdir()
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if mode & (stat.S_IXUSR | stat.S_IFDIR) else 0))
        (root / "out").chmod(0o1777)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _imported_packages() -> List[str]:
    """Top-level site-packages entries the command imports on its error path."""
    # main(argv) returns: without argv the command ends the process itself once done (cli/app.py _leave).
    code = ("import sys, os\nfrom dumplib_cli.app import main\n"
            "try:\n    main(['dump', '999999999', '/', '--json'])\nexcept SystemExit:\n    pass\n"
            "sp = [p for p in sys.path if p.endswith('site-packages')]\nout = set()\n"
            "for m in list(sys.modules.values()):\n    f = getattr(m, '__file__', None) or ''\n"
            "    for p in sp:\n        if f.startswith(p + os.sep):\n            out.add(os.path.join(p, f[len(p) + 1:].split(os.sep)[0]))\n"
            "print('--- packages'); print('\\n'.join(sorted(out)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return [p for p in done.stdout.split("--- packages", 1)[1].split() if "__editable__" not in p and "_distutils_hack" not in p
            and "dumplib" not in os.path.basename(p)]


def test_exit_5_access_denied_through_the_command(nobody_tree):
    with run_target([str(nobody_tree / "target")]) as t:  # runs as root; the command runs as nobody
        done = subprocess.run(["/usr/bin/python3", "-m", "dumplib_cli", "dump", str(t.pid), str(nobody_tree / "out"),
                               "--json"], capture_output=True, text=True, timeout=120, cwd="/",
                              preexec_fn=as_nobody, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(nobody_tree)})
        assert done.returncode == 5, (done.stdout, done.stderr)
        err = json.loads(done.stdout)["error"]
        assert err["type"] == "AccessDenied" and err["pid"] == t.pid and err["exit_code"] == 5, err
        assert "uid 0" in err["message"], err
        human = subprocess.run(["/usr/bin/python3", "-m", "dumplib_cli", "dump", str(t.pid), str(nobody_tree / "out")],
                               capture_output=True, text=True, timeout=120, cwd="/", preexec_fn=as_nobody,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(nobody_tree)})
        assert human.returncode == 5 and human.stderr.startswith("dumplib: error: cannot"), human.stderr
        assert "Traceback" not in human.stderr
        assert os.listdir(nobody_tree / "out") == []
        t.assert_running_untraced()


def test_exit_9_unsupported_platform_through_the_command(ctarget, outdir):
    require(have("setarch"), "setarch is not installed (util-linux)")
    machine = subprocess.run(["setarch", "i686", sys.executable, "-c", "import platform; print(platform.machine())"],
                             capture_output=True, text=True).stdout.strip()
    assert machine == "i686"  # what the command will see
    done = run_cli("dump", str(ctarget.pid), str(outdir), "--json", wrapper=["setarch", "i686"])
    assert done.returncode == 9, (done.stdout, done.stderr)
    err = json.loads(done.stdout)["error"]
    assert err["type"] == "UnsupportedPlatform" and err["platform"] == "linux-i686" and err["exit_code"] == 9
    assert "Linux x86_64" in err["message"]
    assert list(outdir.iterdir()) == []
    ctarget.assert_running_untraced()


TARGET32_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) void wait_here_32(void) { char l[64]; while (fgets(l, sizeof l, stdin)) {} }
int main(void) { printf("{\"pid\": %d, \"threads\": 1}\n", (int)getpid()); fflush(stdout); wait_here_32(); return 0; }
"""


@pytest.fixture(scope="module")
def target32(tmp_path_factory) -> Path:
    probe = tmp_path_factory.mktemp("m32")
    (probe / "p.c").write_text("int main(void) { return 0; }\n")
    ok = subprocess.run(["gcc", "-m32", "-o", str(probe / "p"), str(probe / "p.c")], capture_output=True).returncode == 0
    require(ok, "gcc -m32 cannot link here (apt-get install gcc-multilib)")
    return build_c(probe, "target32", TARGET32_C, "-m32")


def test_exit_10_a_32_bit_target_is_refused_through_the_command(target32, outdir):
    with run_target([str(target32)]) as t:
        done = run_cli("dump", str(t.pid), str(outdir), "--json")
        t.assert_running_untraced()
    assert done.returncode == 10, (done.stdout, done.stderr)
    err = json.loads(done.stdout)["error"]
    assert err["type"] == "BitnessMismatch" and err["target_bits"] == 32 and err["dumper_bits"] == 64, err
    assert list(outdir.iterdir()) == []


# -- the free-space guard --------------------------------------------------------------------------

def _statvfs(path: Path) -> Tuple[int, int]:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def test_default_reserve_is_1_gib_on_a_small_volume(ctarget, tmp_path):
    with tmpfs(tmp_path / "small", "64m") as vol:
        done = run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage", "--json")
        assert done.returncode == 13, (done.stdout, done.stderr)
        err = json.loads(done.stdout)["error"]
        total, free = _statvfs(vol)
        assert err["reserve"] == GiB and err["free"] == free and total < 20 * GiB, err
        assert list(vol.iterdir()) == []
        ctarget.assert_running_untraced()


def test_default_reserve_is_5_percent_of_a_large_volume(ctarget, tmp_path):
    # 40 GiB volume with 1.5 GiB free: 5% (2 GiB) refuses even a triage dump; 1 GiB would not.
    with ext4_volume(tmp_path / "large", "40G", leave_free=3 * GiB // 2) as vol:
        total, free = _statvfs(vol)
        assert GiB < free < total // 20
        done = run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage", "--json")
        assert done.returncode == 13, (done.stdout, done.stderr)
        err = json.loads(done.stdout)["error"]
        assert err["reserve"] == total // 20 > GiB, (err, total)
        assert sorted(p.name for p in vol.iterdir()) == ["filler", "lost+found"]
        # The reserve was the only reason: asked to keep 1 GiB, the same dump goes through.
        done = run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage", "--min-free", "1G", "--json")
        assert done.returncode == 0, (done.stdout, done.stderr)


def test_no_space_check_writes_anyway_and_warns(ctarget, tmp_path):
    with tmpfs(tmp_path / "small", "64m") as vol:
        assert run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage").returncode == 13
        done = run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage", "--no-space-check")
        assert done.returncode == 0, done.stderr
        assert "dumplib: warning: the free-space check is off: this dump may fill the disk" in done.stderr
        assert any(p.name.endswith(".core") for p in vol.iterdir())
        as_json = run_cli("dump", str(ctarget.pid), str(vol), "-k", "triage", "--no-space-check", "--json")
        assert "the free-space check is off: this dump may fill the disk" in json.loads(as_json.stdout)["warnings"]


def test_refusal_names_other_volumes_with_room(target_exe, tmp_path):
    with tmpfs(tmp_path / "small", "64m") as small, ext4_volume(tmp_path / "roomy", "4G") as roomy, \
            run_target([str(target_exe), "--heap", "200"]) as t:
        done = run_cli("dump", str(t.pid), str(small), "-k", "full", "--min-free", "4M", "--json")
        assert done.returncode == 13, done.stdout
        err = json.loads(done.stdout)["error"]
        assert any(a.startswith(f"a path on {roomy} (") for a in err["alternatives"]), err["alternatives"]
        assert f"a path on {roomy} (" in err["message"]
        assert not any(str(small) in a for a in err["alternatives"])
        human = run_cli("dump", str(t.pid), str(small), "-k", "full", "--min-free", "4M")
        assert human.returncode == 13 and f"a path on {roomy}" in human.stderr, human.stderr


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_disk_full_mid_write_is_dump_failed_disk_full_and_leaves_nothing(target_exe, tmp_path, compress):
    # The guard is off, so the kernel's ENOSPC is what stops the write; random memory stays too big
    # for a 64 MiB volume even compressed.
    argv = [str(target_exe), "--heap", "200"] if compress is None else [sys.executable, "-c", PY_RANDOM_HEAP, "150"]
    extra = ["-z", compress] if compress else []
    with tmpfs(tmp_path / "small", "64m") as vol, run_target(argv) as t:
        done = run_cli("dump", str(t.pid), str(vol), "-k", "full", "--no-space-check", "--json", *extra)
        assert done.returncode == 8, (done.stdout, done.stderr)
        err = json.loads(done.stdout)["error"]
        assert err["type"] == "DumpFailed" and err["reason"] == "disk-full" and err["errno"] == 28, err
        assert "filled up" in err["message"]
        assert list(vol.iterdir()) == []
        t.assert_running_untraced()


# -- memory never taken ----------------------------------------------------------------------------

def _never_taken(smaps: str) -> List[Tuple[int, int, str]]:
    out = []
    current = None
    for line in smaps.splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
        if m:
            current = (int(m.group(1), 16), int(m.group(2), 16), m.group(3))
            if current[2] in ("[vsyscall]", "[vvar]"):
                out.append(current)
        elif line.startswith("VmFlags:") and current and " io" in f" {line[8:]}" and current not in out:
            out.append(current)
    return out


def _loads(core: str) -> List[Tuple[int, int]]:
    text = subprocess.run(["readelf", "-l", "-W", core], capture_output=True, text=True, check=True).stdout
    return [(int(v, 16), int(v, 16) + int(m, 16))
            for v, m in re.findall(r"^\s+LOAD\s+0x[0-9a-f]+ (0x[0-9a-f]+) 0x[0-9a-f]+ 0x[0-9a-f]+ (0x[0-9a-f]+)", text, re.M)]


def test_vsyscall_vvar_and_io_mappings_have_no_load_segment(ctarget, outdir):
    smaps = open(f"/proc/{ctarget.pid}/smaps").read()
    skipped = _never_taken(smaps)
    assert any(" io" in block for block in smaps.split("VmFlags:")[1:]), "no I/O mapping to check"
    result = dumplib.create_dump(ctarget.pid, outdir, "full")
    loads = _loads(result.path)
    assert len(loads) > 5
    for lo, hi, name in skipped:
        assert not [seg for seg in loads if seg[0] < hi and lo < seg[1]], (hex(lo), name)


def test_vsyscall_readable_and_io_mappings_are_not_selected(ctarget):
    # This kernel maps [vsyscall] execute-only and every io mapping here is also VM_DONTDUMP, so the
    # e2e test above cannot tell which rule skipped them. On vsyscall=emulate kernels the page is
    # readable, and drivers (DRM, uio) make io mappings without VM_DONTDUMP: the same real smaps,
    # changed in just those two ways, must still select neither.
    from dumplib._linux.core import selection
    from dumplib._linux.proc import maps

    text = open(f"/proc/{ctarget.pid}/smaps").read()
    heap = re.search(r"^([0-9a-f]+)-([0-9a-f]+) rw-p .*\[heap\]$", text, re.M)
    assert heap, "the target has no [heap] mapping"
    vsys = re.search(r"^([0-9a-f]+)-([0-9a-f]+) --xp (.*\[vsyscall\])$", text, re.M)
    require(vsys is not None, "this kernel shows no [vsyscall] mapping")

    def select(smaps: str) -> List[Tuple[int, int]]:
        segs = selection.select(maps.parse_smaps(smaps), DumpKind.FULL, filter_bits=None, stack_pointers=[],
                           keep_pages=[], exe_paths=[], elf_headers={})
        return [(s.dump_start, s.end) for s in segs if s.dump_start < s.end]  # the bytes that would be written

    lo, hi = int(heap.group(1), 16), int(heap.group(2), 16)
    assert any(s < hi and lo < e for s, e in select(text))  # the heap is taken as it is
    emulate = text.replace(vsys.group(0), f"{vsys.group(1)}-{vsys.group(2)} r-xp {vsys.group(3)}")
    heap_block_end = emulate.index("VmFlags:", emulate.index(heap.group(0)))
    line_end = emulate.index("\n", heap_block_end)
    driver = emulate[:line_end] + " io" + emulate[line_end:]
    chosen = select(driver)
    assert not any(s < hi and lo < e for s, e in chosen), "an io mapping was selected"
    vlo = int(vsys.group(1), 16)
    assert not any(s <= vlo < e for s, e in chosen), "[vsyscall] was selected"


# -- dumplib ps ------------------------------------------------------------------------------------

def _status(pid: int) -> Dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def test_ps_matches_proc(target_exe, tmp_path):
    named = tmp_path / "dumplib-ps-probe"
    shutil.copy(target_exe, named)
    with run_target([str(named), "--heap", "100"]) as t:
        before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        done = run_cli("ps", "--json")
        after = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        assert done.returncode == 0, done.stderr
        listed = {p["pid"]: p for p in json.loads(done.stdout)}
        assert (before & after) - {os.getpid()} <= set(listed), sorted((before & after) - set(listed))[:10]
        mine = listed[t.pid]
        st = _status(t.pid)
        comm = open(f"/proc/{t.pid}/comm").read().strip()
        assert mine["name"] == "dumplib-ps-probe" and comm == mine["name"][:15], (mine, comm)  # comm is cut at 15
        assert mine["user"] == pwd.getpwuid(int(st["Uid"].split()[0])).pw_name
        rss = int(st["VmRSS"].split()[0]) * 1024
        anon = int(st["RssAnon"].split()[0]) * 1024
        assert abs(mine["rss_bytes"] - rss) <= 256 << 10, (mine, rss)  # an idle target: the same pages
        assert abs(mine["private_bytes"] - anon) <= 256 << 10, (mine, anon)
        full = dumplib.create_dump(t.pid, tmp_path / "full.core", "full", sidecar=False)
        assert abs(mine["full_dump_bytes"] - full.disk_bytes) < 0.05 * full.disk_bytes, (mine, full.disk_bytes)
        filtered = run_cli("ps", "ps-pro")
        assert filtered.returncode == 0
        rows = filtered.stdout.splitlines()
        assert rows[0].split() == ["PID", "NAME", "USER", "PRIVATE", "RESIDENT", "FULL", "DUMP"], rows[0]
        assert [int(r.split()[0]) for r in rows[1:]] == [t.pid], rows


@pytest.mark.parametrize("kind", ["full", "miniplus", "mini", "triage"])
def test_estimate_never_stops_nor_reads_the_target(ctarget, kind):
    # strace sees every ptrace (a stop) and every read of the target's memory the command makes: through
    # /proc/PID/mem (pread64 on it, strace -y names the file), or a process_vm_readv (dumplib makes none).
    require(have("strace"), "strace is not installed (apt-get install strace)")
    done = subprocess.run(["strace", "-f", "-qq", "-y", "-e", "trace=ptrace,process_vm_readv,pread64,preadv",
                           "-o", "/dev/stderr", sys.executable, "-m", "dumplib_cli", "estimate", str(ctarget.pid),
                           "--kind", kind, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == kind
    calls = re.findall(r"\b(ptrace|process_vm_readv)\(", done.stderr)
    assert calls == [], done.stderr
    # README: full reads nothing; the other kinds read the dynamic linker's link_map chain, a few pages.
    reads = re.findall(rf"\bpreadv?(?:64)?\(\d+</proc/{ctarget.pid}/mem>.*?= (\d+)", done.stderr)
    if kind == "full":
        assert reads == [], done.stderr
    else:
        assert 0 < len(reads) <= 64 and sum(int(n) for n in reads) <= 64 * 4096, done.stderr
    ctarget.assert_running_untraced()


# -- the terminal progress display ------------------------------------------------------------------

def test_terminal_progress_redraws_at_most_every_quarter_second(target_exe, outdir):
    with run_target([str(target_exe), "--heap", "1536"]) as t:
        started = time.monotonic()
        code, screen, out = run_in_pty([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), str(outdir), "-k", "full"])
        wall = time.monotonic() - started
    assert code == 0, screen.decode(errors="replace")
    updates = re.findall(rb"\rdumping %d: +([\d.]+) s, ([\d.]+) (B|KiB|MiB|GiB) written" % t.pid, screen)
    assert len(updates) >= 2, screen  # the dump took long enough for several redraws
    unit = {b"B": 1, b"KiB": 1 << 10, b"MiB": 1 << 20, b"GiB": 1 << 30}
    elapsed = [float(e) for e, _, _ in updates]
    written = [float(n) * unit[u] for _, n, u in updates]
    # 0.25 s apart, shown to 0.1 s: consecutive redraws differ by at least 0.2 s on screen.
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:])]
    assert all(g >= 0.2 - 1e-9 for g in gaps), (elapsed, gaps)
    assert len(updates) <= wall / 0.25 + 2, (len(updates), wall)
    assert written == sorted(written) and written[0] > 0 and written[-1] > 256 << 20, written
    assert screen.rstrip(b"\r\n").endswith(b"written") or b"written   \r\n" in screen
    assert b"wrote " in out  # the result line goes to stdout, not over the progress line
    _remove_big_dumps(outdir)


def test_progress_callback_gets_growing_real_sizes_a_quarter_second_apart(target_exe, outdir):
    seen: List[Tuple[int, float, float]] = []
    with run_target([str(target_exe), "--heap", "1536"]) as t:
        result = dumplib.create_dump(t.pid, outdir, "full",
                                     progress=lambda n, e: seen.append((n, e, time.monotonic())))
    assert len(seen) >= 2, seen
    sizes = [n for n, _, _ in seen]
    assert sizes == sorted(sizes) and sizes[0] > 0 and sizes[-1] <= result.size, (sizes, result.size)
    assert sizes[-1] > result.size // 4, (sizes, result.size)  # the bytes counted are the dump's bytes
    elapsed = [e for _, e, _ in seen]
    assert all(b - a >= 0.25 - 1e-6 for a, b in zip(elapsed, elapsed[1:])), elapsed
    clock = [c for _, _, c in seen]
    assert all(b - a >= 0.25 - 1e-3 for a, b in zip(clock, clock[1:])), clock
    assert elapsed[-1] <= result.seconds
    _remove_big_dumps(outdir)


def _remove_big_dumps(outdir: Path) -> None:
    """pytest keeps recent tmp directories: do not leave 1.5 GiB cores on a disk shared with other tests."""
    for p in outdir.iterdir():
        p.unlink()


# -- zstd workers ----------------------------------------------------------------------------------

def _native_threads() -> int:
    """Threads of this process that Python did not start: libzstd's workers here. Counting all of
    /proc/self/task would pass with one worker, as the tracer's and the hasher's threads add to it."""
    python_threads = {t.native_id for t in threading.enumerate()}
    return len([tid for tid in os.listdir("/proc/self/task") if int(tid) not in python_threads])


def test_zstd_compresses_with_one_worker_thread_per_cpu(target_exe, outdir):
    cpus = os.cpu_count() or 1
    require(cpus > 1, "one CPU: one worker and several cannot be told apart")
    require(have("zstd"), "the zstd tool is not installed")
    assert _native_threads() == 0, "a native thread before the dump: the count below would not be zstd's"
    seen: List[int] = []

    def count_threads(written: int, elapsed: float) -> None:
        seen.append(_native_threads())

    with run_target([str(target_exe), "--heap", "300"]) as t:
        result = dumplib.create_dump(t.pid, outdir, "full", compress="zstd", progress=count_threads)
    assert seen, "no progress call during the compressed write"
    assert max(seen) >= cpus, (seen, cpus)
    assert subprocess.run(["zstd", "-t", result.path], capture_output=True).returncode == 0
    _remove_big_dumps(outdir)


# -- the installed console script ------------------------------------------------------------------

@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with dumplib installed from this tree by pip (psutil and typer from the host)."""
    import psutil
    import typer

    where = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # psutil and typer (with its dependencies beside it) where this interpreter found them: when the suite runs
    # in a venv, --system-site-packages would give the base interpreter's packages, which may lack them.
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(where / "bin" / "python"), "-c", purelib], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()
    deps = dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (psutil, typer))
    (Path(site) / "_dumplib_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    # pip builds the wheel as a user's `pip install .` does (its build backend comes from the index),
    # from a copy, so the build leaves nothing in the source tree.
    source = where.parent / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("dumplib", "cli"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([str(where / "bin" / "pip"), "install", "-q", "--no-deps", str(source)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return where


def _script(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "dumplib"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def test_installed_dumplib_script_dumps_and_estimates(venv, target_exe, outdir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import dumplib, dumplib_cli; print(dumplib.__file__);"
                            " print(dumplib_cli.__file__)"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout  # the installed copy
    assert Path(venv / "bin" / "dumplib").read_text().startswith("#!" + str(venv))
    helped = _script(venv, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("dump", "estimate", "info", "ps"))
    with run_target([str(target_exe), "--heap", "200", "--ticker"]) as t:
        est = _script(venv, "estimate", str(t.pid), "--kind", "full", "--json", cwd=tmp_path)
        assert est.returncode == 0, est.stderr
        # That estimating never stops the target is test_estimate_never_stops_nor_reads_the_target's
        # claim (strace sees no ptrace); a timer gap here measured the machine's load instead.
        t.assert_running_untraced()
        estimate = json.loads(est.stdout)
        human = _script(venv, "estimate", str(t.pid), "--kind", "full", cwd=tmp_path)
        assert re.match(rf"a full dump of pid {t.pid} would take ~[\d.]+ MiB \(", human.stdout), human.stdout
        done = _script(venv, "dump", str(t.pid), str(outdir), "--kind", "full", "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    on_disk = os.stat(result["path"]).st_blocks * 512
    assert estimate["kind"] == "full" and estimate["pid"] == t.pid
    assert abs(estimate["bytes"] - on_disk) < 0.05 * on_disk, (estimate["bytes"], on_disk)
    out = gdb(str(target_exe), result["path"], "thread apply all bt")
    assert "main_wait_for_input" in out
