"""Never fill the disk, never leave debris: real tmpfs volumes, real processes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import dumplib
from dumplib._switch import current
from helpers import leftovers, tmpfs
from linuxrig import dumplib_cli, run_target

HOST = current().host()

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("kind", ["full", "miniplus"])
def test_estimate_is_within_5_percent_of_the_bytes_on_disk(target_exe, outdir, kind):
    with run_target([str(target_exe), "--heap", "200"]) as t:
        est = dumplib.estimate(t.pid, kind)
        result = dumplib.create_dump(t.pid, outdir, kind)
    error = abs(est.bytes - result.disk_bytes) / result.disk_bytes
    assert error < 0.05, (kind, est.bytes, result.disk_bytes, error)
    assert est.bytes == result.estimated_bytes or abs(est.bytes - result.estimated_bytes) / est.bytes < 0.01
    assert est.breakdown["heap"] > 200 << 20


def test_full_dump_refused_before_attach_and_fit_writes_what_fits(target_exe, tmp_path):
    with tmpfs(tmp_path / "small", "64m") as vol, run_target([str(target_exe), "--heap", "200", "--ticker"]) as t:
        before = t.waiting_switches()
        done = dumplib_cli("dump", str(t.pid), str(vol), "-k", "full", "--min-free", "4M", "--json")
        assert done.returncode == 13, done.stdout + done.stderr
        err = json.loads(done.stdout)["error"]
        assert err["needed"] > 200 << 20 and err["reserve"] == 4 << 20 and err["free"] <= 64 << 20
        assert any("--kind mini" in a for a in err["alternatives"]), err
        assert "Nothing was written" in err["message"]
        assert list(vol.iterdir()) == []
        assert t.waiting_switches() == before  # never woken: the target was never stopped
        t.assert_running_untraced()

        done = dumplib_cli("dump", str(t.pid), str(vol), "-k", "full", "--min-free", "4M", "--fit", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["kind"] == "mini" and any("--fit" in w for w in result["warnings"])
        assert result["path"].endswith(".core") and os.path.getsize(result["path"]) < 64 << 20


def test_watchdog_aborts_when_another_process_fills_the_disk(target_exe, tmp_path):
    with tmpfs(tmp_path / "vol", "400m") as vol, run_target([str(target_exe), "--heap", "300"]) as t:
        filler = vol / "filler"

        def fill(written: int, elapsed: float) -> None:
            if not filler.exists():  # another writer takes the space the dump was counting on
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=150"], capture_output=True)

        with pytest.raises(dumplib.InsufficientDiskSpace) as info:
            dumplib.create_dump(t.pid, vol, "full", min_free=64 << 20, progress=fill)
        assert "filling the disk" in str(info.value) and info.value.reserve == 64 << 20
        assert sorted(p.name for p in vol.iterdir()) == ["filler"]
        t.assert_running_untraced()


@pytest.mark.parametrize("sig, code, extra", [(signal.SIGINT, 130, []), (signal.SIGTERM, 143, []),
                                             (signal.SIGINT, 130, ["--compress", "zstd"])])
def test_sigint_and_sigterm_clean_up(target_exe, outdir, sig, code, extra):
    with run_target([str(target_exe), "--heap", "1024"]) as t:
        dumper = subprocess.Popen([sys.executable, "-m", "dumplib_cli", "dump", str(t.pid), str(outdir), "-k", "full",
                                   *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not leftovers(outdir):
            time.sleep(0.005)
        assert leftovers(outdir), "the dump never started"
        dumper.send_signal(sig)
        out, err = dumper.communicate(timeout=60)
        assert dumper.returncode == code, (dumper.returncode, err)
        assert "nothing was left behind" in err
        assert list(outdir.iterdir()) == []
        t.assert_running_untraced()


def test_a_disk_that_fills_at_the_sidecar_says_the_verified_dump_went_too(ctarget, tmp_path, monkeypatch):
    """The dump is written and verified, then the disk fills (another writer takes it all) as the sidecar
    is written: the kernel's ENOSPC. A dump is kept only beside its sidecar, so both go, and the error
    says so, not merely that "the partial file was removed"."""
    from dumplib import outputs

    write_all = outputs._write_all
    with tmpfs(tmp_path / "vol", "64m") as vol:
        def filled_first(host, path, data):  # type: ignore[no-untyped-def]
            if not (vol / "filler").exists():
                fd = os.open(vol / "filler", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                try:
                    st = os.statvfs(vol)
                    os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize)
                finally:
                    os.close(fd)
                dumps = [p.name for p in vol.iterdir() if p.name.startswith(".dumplib-") and p.stat().st_size > 0]
                assert dumps, "the dump was not written before its sidecar"
            write_all(host, path, data)

        monkeypatch.setattr(outputs, "_write_all", filled_first)
        with pytest.raises(dumplib.DumpFailed) as info:
            dumplib.create_dump(ctarget.pid, vol / "d.core", "triage", space_check=False)
        assert info.value.reason == "disk-full", info.value.details()
        message = str(info.value)
        assert "d.core.json" in message, message
        assert f"the dump, complete and verified, that was to be {vol / 'd.core'}" in message, message
        assert "was removed" in message and "nothing was kept" in message, message
        assert sorted(p.name for p in vol.iterdir()) == ["filler"], leftovers(vol)
        ctarget.assert_running_untraced()


def test_sidecar_records_what_was_done(ctarget, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir, "mini", comment="leak hunt")
    side = json.loads(open(result.sidecar).read())
    assert side["sha256"] == hashlib.sha256(open(result.path, "rb").read()).hexdigest()
    assert side["pid"] == ctarget.pid and side["kind"] == "mini" and side["tool"] == "dumplib"
    assert side["command_line"][0].endswith("dumplib-target") and side["comment"] == "leak hunt"
    assert side["stopped_seconds"] == result.stopped_seconds and side["estimated_bytes"] == result.estimated_bytes
    assert side["started_at"] <= side["finished_at"]
    nosidecar = dumplib.create_dump(ctarget.pid, outdir / "n.core", "triage", sidecar=False)
    assert nosidecar.sidecar is None and not os.path.exists(nosidecar.path + ".json")


def test_info_reads_good_truncated_and_garbage_files(ctarget, outdir):
    result = dumplib.create_dump(ctarget.pid, outdir / "good.core", "mini", comment="hello")
    done = dumplib_cli("info", result.path, "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert d["format"] == "elf-core" and d["pid"] == ctarget.pid and d["threads"] == ctarget.threads
    assert d["kind"] == "mini" and d["comment"] == "hello" and d["complete"] and d["memory_bytes"] > 0
    data = open(result.path, "rb").read()
    truncated = outdir / "cut.core"
    truncated.write_bytes(data[: len(data) // 2])
    done = dumplib_cli("info", str(truncated))
    assert done.returncode == 12 and "INCOMPLETE" in done.stdout and "past the end" in done.stdout
    garbage = outdir / "garbage.core"
    garbage.write_bytes(os.urandom(4096))
    done = dumplib_cli("info", str(garbage))
    assert done.returncode == 12 and "neither a minidump nor an ELF core" in done.stderr
    assert "Traceback" not in done.stderr


def test_retention_keeps_exactly_n_and_never_touches_foreign_files(ctarget, outdir):
    foreign = outdir / "someone-elses.core"
    foreign.write_bytes(b"\x7fELF not ours")
    fake_sidecar = outdir / "other.core.json"
    fake_sidecar.write_text(json.dumps({"tool": "else", "dump": "other.core"}))
    (outdir / "other.core").write_bytes(b"x")
    paths = []
    for i in range(4):
        r = dumplib.create_dump(ctarget.pid, outdir / f"d{i}.core", "triage", keep=2)
        paths.append(r.path)
    ours = sorted(p.name for p in outdir.iterdir() if p.name.startswith("d"))
    assert ours == ["d2.core", "d2.core.json", "d3.core", "d3.core.json"]
    assert foreign.exists() and fake_sidecar.exists() and (outdir / "other.core").exists()
    r = dumplib.create_dump(ctarget.pid, outdir / "d4.core", "triage", max_total=1)
    assert os.path.exists(r.path)  # the new dump itself is never deleted
    assert sorted(p.name for p in outdir.iterdir() if p.name.startswith("d")) == ["d4.core", "d4.core.json"]


def test_what_two_outputs_put_on_one_volume_adds_up(tmp_path):
    # The raw-then-compress path (Windows) puts a raw copy and a compressed copy on disk; on one
    # volume both must fit at once, on two each volume holds its own part.
    from dumplib.space import shortfall

    with tmpfs(tmp_path / "one", "48m") as one, tmpfs(tmp_path / "two", "48m") as two:
        (one / "sub").mkdir()
        assert shortfall([(str(one), 30 << 20, "raw")], 1 << 20, HOST) is None
        short = shortfall([(str(one), 30 << 20, "raw"), (str(one / "sub"), 15 << 20, "packed")], 4 << 20, HOST)
        assert short is not None and short[1] == 45 << 20 and short[2] == "raw plus packed"
        assert short[0].reserve == 4 << 20
        assert shortfall([(str(one), 30 << 20, "raw"), (str(two), 15 << 20, "packed")], 4 << 20, HOST) is None


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_a_dump_complete_with_the_volume_under_the_reserve_is_not_placed(target_exe, ctarget, tmp_path, compress):
    """The watchdog checks every 64 MiB while writing; the last bytes, and a volume something else filled
    after its last check, were seen only by the chance of a later read's tick. Once the dump is whole it
    is checked once more, before it is placed: here the volume is filled (another process, as it were)
    while the finished dump is verified, and the dump is abandoned, nothing of it left, the target
    running on. Before that check it was placed, with the volume under its reserve."""
    import datetime

    from dumplib import api
    from dumplib.kinds import DumpKind
    from dumplib.targets import resolve_target

    real = current()
    reserve = 16 << 20
    with tmpfs(tmp_path / "vol", "64m") as vol:
        filler = vol / "someone-elses.bin"

        class FilledWhileVerifying:  # the session, with the volume filled while the finished dump is verified
            def __init__(self, session: object) -> None:
                self._session = session

            def __getattr__(self, name: str) -> object:
                return getattr(self._session, name)

            def _fill(self) -> None:
                st = os.statvfs(vol)
                filler.write_bytes(b"\1" * (st.f_bavail * st.f_frsize - reserve // 2))

            def verify(self, *args: object) -> object:
                self._fill()
                return self._session.verify(*args)  # type: ignore[attr-defined]

            def verify_stream(self, *args: object) -> object:
                self._fill()
                return self._session.verify_stream(*args)  # type: ignore[attr-defined]

        opts = api._Options(str(vol / "x.core"), DumpKind.FULL, None, False, None, None, reserve, True, False, True,
                            None, None, (compress, 1) if compress else None, time.monotonic(),
                            datetime.datetime.now(), None, False)
        with pytest.raises(dumplib.InsufficientDiskSpace) as refused:
            with real.open(resolve_target(ctarget.pid, real), for_dump=True) as session:
                api.create_in_session(real, FilledWhileVerifying(session),  # type: ignore[arg-type]
                                      real.normalise_flags(DumpKind.FULL, None), opts)
        left = sorted(os.listdir(vol))
    ctarget.assert_running_untraced()
    assert "below the" in str(refused.value) and refused.value.reserve == reserve, refused.value
    assert left == ["someone-elses.bin"], left
