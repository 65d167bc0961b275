"""Snapshot dumps where Windows has no PssCaptureSnapshot: Wine, for real.

Wine's kernel32 does not export the process-snapshot functions, as Windows before 8.1 did not.
There `snapshot="auto"` must write the usual dump and say why, and `snapshot=True` must refuse
before anything is written or the target touched. Every dump is read back with the PyPI
`minidump` parser. What needs a real snapshot is in tests/unit/test_windows_snapshot.py (real
Windows only).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import leftovers
from winhelpers import api_call, cli, parse_independently, windows_path

pytestmark = pytest.mark.wine

NO_PSS = "this Windows has no PssCaptureSnapshot"


def _only_dump(directory):
    files = sorted(p for p in directory.iterdir() if not p.name.endswith(".json"))
    assert len(files) == 1, files
    assert sorted(p.name for p in directory.iterdir()) == [files[0].name, files[0].name + ".json"]
    return files[0]


def _target_runs(target) -> None:
    target.send("ping")
    assert target.proc.stdout.readline().strip() == "pong"


def test_auto_without_pss_writes_a_normal_full_dump_and_says_why(rig, target, outdir, tmp_path):
    res = api_call(rig, f"dumplib.create_dump({target.pid}, r'{windows_path(outdir)}', 'full', snapshot='auto')")
    assert "ok" in res, res
    result = res["ok"]
    fallback = [w for w in result["warnings"] if "no snapshot was taken" in w]
    assert len(fallback) == 1 and NO_PSS in fallback[0] and "Wine does not" in fallback[0], result["warnings"]
    assert result["snapshot"] is False and result["snapshot_bytes"] is None
    assert result["stopped_seconds"] is not None and result["stopped_seconds"] > 0  # stopped for the write

    dump = _only_dump(outdir)
    mf = parse_independently(dump, tmp_path)
    assert mf.get_reader().read(target.address, len(target.marker)) == target.marker
    names = [m.name.lower().replace("/", "\\").rsplit("\\", 1)[-1] for m in mf.modules.modules]
    assert "python.exe" in names and "kernel32.dll" in names, names
    assert len(mf.threads.threads) >= 1
    side = json.loads((outdir / (dump.name + ".json")).read_text())
    assert side["snapshot"] is False and side["snapshot_bytes"] is None
    assert side["stopped_seconds"] == result["stopped_seconds"]
    _target_runs(target)


def test_true_without_pss_refuses_before_writing_and_the_target_runs_on(rig, target, outdir):
    res = api_call(rig, f"dumplib.create_dump({target.pid}, r'{windows_path(outdir)}', 'mini', snapshot=True)")
    assert res.get("error") == "TargetRefused", res
    assert res["details"]["reason"] == "snapshot-unavailable" and res["details"]["pid"] == target.pid
    assert NO_PSS in res["message"] and "nothing was written" in res["message"]
    assert list(outdir.iterdir()) == []  # no dump, no temporary, no sidecar
    _target_runs(target)


def test_cli_snapshot_auto_json_falls_back_and_the_sidecar_says_so(rig, target, outdir, tmp_path):
    done = cli(rig, "dump", str(target.pid), windows_path(outdir), "--snapshot=auto", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["snapshot"] is False and any(NO_PSS in w for w in result["warnings"]), result
    dump = _only_dump(outdir)
    mf = parse_independently(dump, tmp_path)
    assert len(mf.threads.threads) >= 1 and mf.modules.modules
    side = json.loads((outdir / (dump.name + ".json")).read_text())
    assert side["snapshot"] is False and side["snapshot_bytes"] is None
    _target_runs(target)


def test_cli_snapshot_through_the_compressor_refuses_and_leaves_no_raw_copy(rig, target, outdir):
    # --compress on Windows writes a raw dump to a scratch volume first (RawThenCompress): the
    # refusal must come before that file exists too.
    # The scratch copy goes to %TEMP%, the destination or a volume root (C: is the prefix, Z: is /).
    scratch = [rig.windows_temp(), rig.prefix / "drive_c", Path("/")]
    before = [leftovers(d) for d in scratch]
    done = cli(rig, "dump", str(target.pid), windows_path(outdir), "--snapshot", "--compress", "zstd", "--json")
    assert done.returncode == 11, (done.returncode, done.stdout, done.stderr)
    err = json.loads(done.stdout)["error"]
    assert err["type"] == "TargetRefused" and err["reason"] == "snapshot-unavailable" and NO_PSS in err["message"]
    assert list(outdir.iterdir()) == [] and [leftovers(d) for d in scratch] == before
    _target_runs(target)


def test_cli_snapshot_auto_to_stdout_streams_a_normal_dump_with_the_warning(rig, target, tmp_path):
    done = rig.run_python(["-m", "dumplib_cli", "dump", str(target.pid), "-", "--snapshot=auto"], binary=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout[:4] == b"MDMP"
    assert NO_PSS in done.stderr.decode("utf-8", "replace")
    raw = tmp_path / "from-stdout.dmp"
    raw.write_bytes(done.stdout)
    assert len(parse_independently(raw, tmp_path).threads.threads) >= 1
