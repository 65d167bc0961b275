"""Compressed cores: streamed through the compressor (never raw on disk), to files and to a pipe.

Every compressed core is decompressed by the real zstd/gzip tools and opened by gdb.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

import dumplib
from helpers import leftovers, require, tmpfs
from linuxrig import dumplib_cli, gdb, have, run_target

pytestmark = pytest.mark.linux



@pytest.fixture(scope="module", autouse=True)
def _need_gdb() -> None:
    require(have("gdb"), "gdb is not installed (apt-get install gdb); cores cannot be checked")


def _threads_in(out: str) -> int:
    return len(re.findall(r"^\*?\s+\d+\s+(?:Thread|LWP) ", out, re.M))


def test_stream_to_a_pipe_decompressed_by_zstd_opens_in_gdb(ctarget, target_exe, tmp_path):
    require(have("zstd"), "the zstd tool is not installed (apt-get install zstd)")
    core = tmp_path / "piped.core"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with open(core, "wb") as sink:
        dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-", "-k", "full",
                                   "-z", "zstd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        unzstd = subprocess.run(["zstd", "-d", "-c"], stdin=dumper.stdout, stdout=sink, stderr=subprocess.PIPE)
        dumper.stdout.close()  # type: ignore[union-attr]
        err = dumper.stderr.read().decode()  # type: ignore[union-attr]
        assert dumper.wait() == 0, err
    assert unzstd.returncode == 0, unzstd.stderr
    assert "sent the dump to stdout" in err and "zstd" in err
    out = gdb(str(target_exe), str(core), "info threads", "thread apply all bt", f"x/s {ctarget.marker_address}")
    assert _threads_in(out) == ctarget.threads, out
    assert f'"{ctarget.marker.decode()}"' in out, out
    info = dumplib.info(str(core))
    assert info.complete and info.pid == ctarget.pid and info.kind == "full" and info.compression is None
    assert os.listdir(cwd) == []  # no sidecar, no temporary file: everything went down the pipe
    ctarget.assert_running_untraced()


def test_gzip_file_has_sidecar_info_and_decompresses_to_a_core_gdb_reads(ctarget, target_exe, outdir, tmp_path):
    result = dumplib.create_dump(ctarget.pid, outdir, "miniplus", compress="gzip", comment="zipped")
    assert result.path.endswith(".core.gz") and result.compression == "gzip"
    assert result.size == os.path.getsize(result.path) < result.raw_size
    side = json.loads(open(result.sidecar).read())
    assert side["compression"] == {"codec": "gzip", "level": 1} and side["raw_size"] == result.raw_size
    assert side["sha256"] == hashlib.sha256(open(result.path, "rb").read()).hexdigest() == result.sha256
    info = dumplib.info(result.path)
    assert info.compression == "gzip" and info.stored_size == result.size and info.file_size == result.raw_size
    assert info.complete and info.kind == "miniplus" and info.comment == "zipped" and info.threads == ctarget.threads
    raw = tmp_path / "unzipped.core"
    raw.write_bytes(gzip.decompress(open(result.path, "rb").read()))
    out = gdb(str(target_exe), str(raw), "info threads", "thread apply all bt", f"x/s {ctarget.marker_address}")
    assert _threads_in(out) == ctarget.threads and f'"{ctarget.marker.decode()}"' in out, out
    # Our reader reads memory straight out of the compressed file too.
    core = dumplib.formats.elfcore.read_elfcore(result.path)
    assert core.read_memory(ctarget.marker_address, len(ctarget.marker)) == ctarget.marker
    assert leftovers(outdir) == []


def test_raw_size_never_touches_the_disk(target_exe, tmp_path):
    # A 100 MiB heap does not fit raw on a 64 MiB volume; streamed through zstd it does.
    require(have("zstd"), "the zstd tool is not installed (apt-get install zstd)")
    with tmpfs(tmp_path / "small", "64m") as vol, run_target([str(target_exe), "--heap", "100"]) as t:
        plain = dumplib_cli("dump", str(t.pid), str(vol), "-k", "full", "--min-free", "4M", "--json")
        assert plain.returncode == 13, plain.stdout
        done = dumplib_cli("dump", str(t.pid), str(vol), "-k", "full", "--min-free", "4M", "-z", "zstd", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["raw_size"] > 100 << 20 > 64 << 20 > result["size"]
        assert sorted(os.listdir(vol)) == sorted([os.path.basename(result["path"]), os.path.basename(result["path"]) + ".json"])
        unz = subprocess.run(["zstd", "-t", result["path"]], capture_output=True, text=True)
        assert unz.returncode == 0, unz.stderr
        t.assert_running_untraced()


def test_reader_leaving_the_pipe_early_fails_cleanly_and_the_target_runs_on(ctarget):
    dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-", "-k", "full"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dumper.stdout.read(4096)  # type: ignore[union-attr]
    dumper.stdout.close()  # type: ignore[union-attr]
    err = dumper.stderr.read().decode()  # type: ignore[union-attr]
    assert dumper.wait() == 8, err
    assert "went away" in err and "Traceback" not in err
    ctarget.assert_running_untraced()


def test_stdout_that_is_a_terminal_is_refused_before_the_target_is_touched(ctarget):
    require(os.path.exists("/dev/ptmx"), "no pseudo-terminals here")
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-"],
                              stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 7, done.stderr
    assert "is a terminal" in done.stderr
    ctarget.assert_running_untraced()


@pytest.mark.parametrize("args, text", [
    (["-z", "lz4"], "unknown compression 'lz4'"),
    (["-z", "gzip", "--compress-level", "12"], "out of range"),
    (["--compress-level", "3"], "without --compress"),
])
def test_bad_compression_is_a_usage_error_before_anything_happens(ctarget, outdir, args, text):
    done = dumplib_cli("dump", str(ctarget.pid), str(outdir), *args)
    assert done.returncode == 2, done.stderr
    assert text in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(outdir) == []


def test_zstd_without_an_implementation_says_how_to_get_one(ctarget, outdir):
    # Python 3.11 has no compression.zstd; hiding the zstandard package is what a bare install looks like.
    code = ("import sys; sys.modules['zstandard'] = None; from dumplib_cli.app import main;"
            f" sys.argv = ['dumplib', 'dump', '{ctarget.pid}', '{outdir}', '-z', 'zstd']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"{sys.executable} -m pip install 'zstandard>=0.19'" in done.stderr and "--compress gzip" in done.stderr
    assert os.listdir(outdir) == []


def test_info_on_zstd_without_an_implementation_says_how_to_read_it(ctarget, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir, "triage", compress="zstd", sidecar=False)
    code = ("import sys; sys.modules['zstandard'] = None; from dumplib_cli.app import main;"
            f" sys.argv = ['dumplib', 'info', {result.path!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 12, done.stderr
    assert "is zstd-compressed" in done.stderr and f"{sys.executable} -m pip install 'zstandard" in done.stderr
    assert "zstd -d" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_info_on_truncated_and_fake_compressed_files_is_a_clear_error(ctarget, outdir, tmp_path, codec):
    result = dumplib.create_dump(ctarget.pid, outdir, "mini", compress=codec, sidecar=False)
    data = open(result.path, "rb").read()
    cut = tmp_path / ("cut" + os.path.splitext(result.path)[1])
    cut.write_bytes(data[: len(data) // 2])
    fake = tmp_path / ("fake" + os.path.splitext(result.path)[1])
    fake.write_bytes(data[:4] + os.urandom(4096))
    for bad in (cut, fake):
        done = dumplib_cli("info", str(bad))
        assert done.returncode == 12, (bad, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and str(bad) in done.stderr, done.stderr
    good = dumplib_cli("info", result.path)
    assert good.returncode == 0 and f"({codec}," in good.stdout and "complete" in good.stdout, good.stdout
    assert ("zstd -d" if codec == "zstd" else "gzip -dk") in good.stdout and "gdb" in good.stdout


def test_retention_counts_compressed_dumps(ctarget, outdir):
    for _ in range(3):
        dumplib.create_dump(ctarget.pid, outdir / "{name}_{pid}_{kind}_" f"{os.urandom(3).hex()}.core.zst", "triage",
                            compress="zstd", keep=2)
    dumps = sorted(p for p in os.listdir(outdir) if p.endswith(".zst"))
    assert len(dumps) == 2 and all(os.path.exists(os.path.join(outdir, d + ".json")) for d in dumps)


def test_an_explicit_name_without_the_codec_suffix_is_kept_but_warned_about(ctarget, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir / "plain-looking.core", "triage", compress="gzip")
    assert result.path.endswith("plain-looking.core")
    assert any("does not end in .gz" in w for w in result.warnings), result.warnings
    assert open(result.path, "rb").read(2) == b"\x1f\x8b" and dumplib.info(result.path).compression == "gzip"


def test_retention_options_with_stdout_are_reported_not_silently_dropped(ctarget, tmp_path):
    done = subprocess.run([sys.executable, "-m", "dumplib_cli", "dump", str(ctarget.pid), "-", "-k", "triage",
                           "--keep", "2", "--json"], capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout[:4] == b"\x7fELF"
    result = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert result["path"] == "-" and result["sidecar"] is None
    assert "keep/max_total do not apply to a dump sent to stdout" in result["warnings"]
    assert os.listdir(tmp_path) == []
