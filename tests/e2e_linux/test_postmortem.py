"""The core_pattern handler, with real crashes: the kernel starts it, it writes through the pipeline.

kernel.core_pattern is machine-wide: every test holds it only inside `installed()`, which puts back
the exact bytes found whatever happens (and other tests that set it, linuxrig.kernel_cores, do the
same), so the window in which another test's crash would come to us is the test's own few seconds.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from helpers import private_state, require, tmpfs
from linuxrig import build_source, gdb, have, run_cli

pytestmark = pytest.mark.linux

HERE = Path(__file__).resolve().parent
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
PIPE_LIMIT = Path("/proc/sys/kernel/core_pipe_limit")
SUID_DUMPABLE = Path("/proc/sys/fs/suid_dumpable")


@pytest.fixture(scope="module")
def crasher() -> Iterator[Path]:
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    require(have("gdb"), "gdb is not installed; cores cannot be checked")
    # A directory every user can reach (pytest's are root's only): the setuid test runs it as nobody.
    where = Path(tempfile.mkdtemp(prefix="dumplib-crasher-", dir="/tmp"))
    where.chmod(0o755)
    try:
        yield build_source(where, HERE / "crasher.c")
    finally:
        shutil.rmtree(where)


@pytest.fixture()
def dumps(tmp_path: Path) -> Path:
    d = tmp_path / "crashes"
    d.mkdir(mode=0o700)
    return d


@contextlib.contextmanager
def installed(state: Path, directory: Path, *options: str) -> Iterator[Dict[str, Any]]:
    """`dumplib postmortem install` for the duration; core_pattern and core_pipe_limit go back whatever happens."""
    pattern, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    try:
        done = run_cli("postmortem", "install", "--dir", str(directory), "--state-dir", str(state),
                       "--sysctl-file", str(state.parent / "sysctl.conf"), "--json", *options, timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
        yield json.loads(done.stdout)
    finally:
        run_cli("postmortem", "uninstall", "--state-dir", str(state), "--force", timeout=60)
        if CORE_PATTERN.read_bytes() != pattern:
            CORE_PATTERN.write_bytes(pattern.rstrip(b"\n"))
        if PIPE_LIMIT.read_bytes() != limit:
            PIPE_LIMIT.write_bytes(limit.strip())


def crash(exe: Path, *args: str, **popen: Any) -> subprocess.CompletedProcess:
    done = subprocess.run([str(exe), *args], capture_output=True, timeout=120, **popen)
    assert done.returncode == -11, (done.returncode, done.stderr)
    return done


def log_records(state: Path, wait_for: int = 1, timeout: float = 60.0) -> List[Dict[str, Any]]:
    """The handler's log lines; the handler may still be writing after the crashed process is gone."""
    deadline = time.monotonic() + timeout
    path = state / "postmortem.log"
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= wait_for or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)


def cores(directory: Path) -> List[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith((".core", ".core.zst", ".core.gz")))


def test_thread_crash_gives_a_core_gdb_reads_with_every_thread(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    with installed(state, dumps, "--kind", "mini", "--min-free", "1M") as st:
        assert st["registered"] == "dumplib" and "F%F" in st["core_pattern"]
        proc = crash(crasher, "2")
        records = log_records(state)
    assert [r["outcome"] for r in records] == ["written"], records
    assert records[0]["pidfd"] == "kernel"
    [core] = cores(dumps)
    st_core = core.stat()
    assert stat.S_IMODE(st_core.st_mode) == 0o600 and st_core.st_uid == 0
    out = gdb(str(crasher), str(core), "info threads", "bt")
    assert "signal SIGSEGV" in out and "too small" not in out, out  # xstate notes in the layout gdb reads
    line = 1 + (HERE / "crasher.c").read_text().splitlines().index("    *nowhere = 42; /* CRASH HERE */")
    assert f"in worker (arg=0x0) at {HERE / 'crasher.c'}:{line}" in out, out  # the faulting line
    assert out.count("New LWP ") == 4, out  # main, two idle threads, the worker
    assert "* 1    LWP" in out and "in worker" in out.split("* 1")[1].splitlines()[0], out  # crashing thread first
    side = json.loads(Path(str(core) + ".json").read_text())
    pm = side["postmortem"]
    assert (pm["signal_name"], pm["address"], pm["si_code"]) == ("SIGSEGV", "0x8", 1)  # SEGV_MAPERR at 8
    assert pm["exe"] == str(crasher) and side["command_line"] == [str(crasher), "2"]
    assert st_core.st_size * 8 < pm["kernel_core_bytes"], pm  # mini: filtered down from the kernel's core
    listed = run_cli("postmortem", "list", "--dir", str(dumps), "--json")
    rows = json.loads(listed.stdout)
    assert [(r["path"], r["signal"], r["pid"]) for r in rows] == [(str(core), "SIGSEGV", side["pid"])]
    del proc


def test_full_core_compressed_as_it_streams_holds_the_heap(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    require(have("zstd"), "zstd is not installed")
    state = private_state(tmp_path)
    with installed(state, dumps, "--kind", "full", "--compress", "zstd", "--min-free", "1M"):
        crash(crasher, "8")
        log_records(state)
    [core] = cores(dumps)
    assert core.name.endswith(".core.zst")
    plain = tmp_path / "plain.core"
    subprocess.run(["zstd", "-q", "-d", str(core), "-o", str(plain)], check=True)
    out = gdb(str(crasher), str(plain), "p (char*)marker")
    assert "POSTMORTEM-MARKER" in out, out
    assert json.loads(Path(str(core) + ".json").read_text())["compression"]["codec"] == "zstd"


def test_a_200_mib_crash_on_a_64_mib_volume_is_refused_or_fitted(crasher: Path, tmp_path: Path) -> None:
    reserve = 16 << 20
    with tmpfs(tmp_path / "small", "64m", options="mode=700") as small:
        for fit in (False, True):
            state = private_state(tmp_path, f"state-{fit}")
            with installed(state, small, "--kind", "full", "--min-free", str(reserve), *(["--fit"] if fit else [])):
                crash(crasher, "200")
                [record] = log_records(state)
            free = shutil.disk_usage(small).free
            assert free >= reserve, free
            if not fit:
                assert record["outcome"] == "refused-for-space", record
                assert cores(small) == [] and os.listdir(small) == []
            else:
                assert record["outcome"] == "written" and record["kind"] in ("miniplus", "mini", "triage"), record
                assert "--fit" in record["note"]
                [core] = cores(small)
                assert "in worker" in gdb(str(crasher), str(core), "bt")


@pytest.mark.parametrize("mib", ["50", "60"])
def test_compressed_core_of_random_memory_stops_at_the_reserve(crasher: Path, tmp_path: Path, mib: str) -> None:
    """The guard assumes a compressed core takes half its raw size; random bytes do not compress, so
    only the watch during the stream (60 MiB: it would fill the volume) and after the compressor's last
    flush (50 MiB: it ends just under the reserve) keep the volume above its reserve."""
    reserve = 16 << 20
    lowest = [1 << 62]
    with tmpfs(tmp_path / "small", "64m", options="mode=700") as small:
        state = private_state(tmp_path)
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                lowest[0] = min(lowest[0], shutil.disk_usage(small).free)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        with installed(state, small, "--kind", "full", "--compress", "zstd", "--min-free", str(reserve)):
            watcher.start()
            try:
                crash(crasher, mib, "", "0", "r")
                [record] = log_records(state)
            finally:
                stop.set()
                watcher.join()
        assert record["outcome"] == "refused-for-space", (record, lowest)
        assert os.listdir(small) == []
    assert lowest[0] >= reserve - (4 << 20), lowest  # within the check's step of the reserve, never below it


def test_a_crash_loop_writes_at_most_the_rate_limit(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    with installed(state, dumps, "--max-per", "10:3", "--min-free", "1M"):
        for _ in range(10):
            crash(crasher, "1")
        records = log_records(state, wait_for=10)
    outcomes = [r["outcome"] for r in records]
    assert outcomes.count("written") == 3 and outcomes.count("rate-limited") == 7, outcomes
    # A refusal closes the kernel's stream unread: the crashed process is let go at once.
    assert all(r["read_bytes"] == 0 for r in records if r["outcome"] == "rate-limited"), records
    assert len(cores(dumps)) == 3


def test_setuid_crasher_is_dumped_only_as_suid_dumpable_says(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    suid = crasher.parent / "suid-crasher"
    shutil.copy(crasher, suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    nobody = dict(preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    before = SUID_DUMPABLE.read_bytes()
    state = private_state(tmp_path)
    try:
        with installed(state, dumps, "--min-free", "1M"):
            SUID_DUMPABLE.write_bytes(b"0")
            crash(suid, "1", **nobody)  # not dumpable: the kernel does not call the handler at all
            time.sleep(1)
            assert cores(dumps) == []
            SUID_DUMPABLE.write_bytes(b"2")
            crash(suid, "1", **nobody)
            [record] = log_records(state)
    finally:
        SUID_DUMPABLE.write_bytes(before.strip())
    assert record["outcome"] == "written" and record["dumpable"] == 2, record
    [core] = cores(dumps)
    st_core = core.stat()
    assert st_core.st_uid == 0 and stat.S_IMODE(st_core.st_mode) == 0o600  # root's only, as the kernel's would be


def test_a_crasher_named_like_a_path_stays_in_dir(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    assert not Path("/etc/x").exists()
    with installed(state, dumps, "--min-free", "1M"):
        crash(crasher, "1", "../../etc/x")
        [record] = log_records(state)
    assert record["outcome"] == "written", record
    assert not Path("/etc/x").exists() and not list(Path("/etc").glob("x*.core*"))
    [core] = cores(dumps)
    assert core.parent == dumps and "/" not in core.name and not core.name.startswith(".")
    assert json.loads(Path(str(core) + ".json").read_text())["process_name"] == "../../etc/x"


def test_a_crasher_that_forks_is_the_one_dumped(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    with installed(state, dumps, "--min-free", "1M"):
        done = crash(crasher, "1", "", "4")  # four children live on after the parent crashes
        [record] = log_records(state)
    [core] = cores(dumps)
    side = json.loads(Path(str(core) + ".json").read_text())
    assert record["pid"] == side["pid"]
    out = gdb(str(crasher), str(core), "info threads")
    assert f"LWP {side['pid']}" in out and out.count("New LWP ") == 4, out  # the parent's threads, not a child's
    del done


def _kernel_core(crasher: Path, tmp_path: Path) -> bytes:
    """A real kernel core of the crasher (core_pattern briefly a file path), to feed the handler by hand."""
    where = tmp_path / "kcore"
    where.mkdir()
    pattern = CORE_PATTERN.read_bytes()
    try:
        CORE_PATTERN.write_bytes(str(where / "core").encode())
        import resource

        crash(crasher, "1", preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (-1, -1)))
    finally:
        CORE_PATTERN.write_bytes(pattern.rstrip(b"\n"))
    [core] = list(where.iterdir())
    return core.read_bytes()


@pytest.mark.parametrize("mode", ["opened", "kernel"])
def test_a_pid_that_is_not_the_crashed_process_is_never_dumped(crasher: Path, dumps: Path, tmp_path: Path,
                                                               mode: str) -> None:
    """What a recycled pid looks like to the handler: a live process that is not dumping core (%P), or
    a pidfd that names another process than %P (%F). Either is refused, the stream closed unread."""
    core = _kernel_core(crasher, tmp_path)
    other = subprocess.Popen(["sleep", "30"])
    state = private_state(tmp_path)
    try:
        with installed(state, dumps, "--min-free", "1M"):
            args = [f"P{other.pid}", f"p{other.pid}", f"i{other.pid}", "s11", "d1", f"t{int(time.time())}"]
            pass_fds: tuple = ()
            if mode == "kernel":
                pidfd = os.pidfd_open(os.getpid())  # names this test, not %P
                os.dup2(pidfd, 3, inheritable=True)
                args.insert(0, "F3")
                pass_fds = (3,)
            done = subprocess.run([str(state / "handler"), *args], input=core, capture_output=True, timeout=60,
                                  pass_fds=pass_fds)
            [record] = log_records(state)
    finally:
        other.kill()
        other.wait()
    assert done.returncode == 0
    assert record["outcome"] == "identity", record
    assert ("pidfd" in record["why"]) if mode == "kernel" else ("not dumping core" in record["why"]), record
    assert cores(dumps) == []


def test_fallback_without_pidfd_dumps_a_real_crash(crasher: Path, dumps: Path, tmp_path: Path) -> None:
    state = private_state(tmp_path)
    with installed(state, dumps, "--no-pidfd", "--min-free", "1M") as st:
        assert "F%F" not in st["core_pattern"]
        crash(crasher, "1")
        [record] = log_records(state)
    assert record["outcome"] == "written" and record["pidfd"] == "opened", record
    assert len(cores(dumps)) == 1


@pytest.mark.parametrize("before", [b"core", b"|/bin/false %p %e x"])
def test_uninstall_puts_back_core_pattern_and_the_sysctl_file_byte_for_byte(dumps: Path, tmp_path: Path,
                                                                            before: bytes) -> None:
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    original, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    state = private_state(tmp_path)
    sysctl = state.parent / "sysctl.conf"  # where installed() points --sysctl-file
    sysctl.write_bytes(b"# the admin's own\nkernel.core_pattern = core\n\n")
    sysctl_before = sysctl.read_bytes()
    try:
        CORE_PATTERN.write_bytes(before)
        expected = CORE_PATTERN.read_bytes()
        with installed(state, dumps, "--min-free", "1M"):
            assert CORE_PATTERN.read_bytes() != expected
            assert sysctl.read_bytes().startswith(b"# Written by `dumplib postmortem install`")
            assert PIPE_LIMIT.read_bytes().strip() != b"0"
            # Someone else takes core_pattern over: uninstall refuses to remove their registration.
            ours = CORE_PATTERN.read_bytes()
            CORE_PATTERN.write_bytes(b"|/usr/lib/systemd/systemd-coredump %P")
            refused = run_cli("postmortem", "uninstall", "--state-dir", str(state))
            assert refused.returncode == 2 and "not dumplib's" in refused.stderr
            assert run_cli("postmortem", "status", "--state-dir", str(state), "--json").stdout.count("systemd") >= 1
            CORE_PATTERN.write_bytes(ours.rstrip(b"\n"))
            done = run_cli("postmortem", "uninstall", "--state-dir", str(state))
            assert done.returncode == 0, done.stderr
            # Read before installed() puts anything back itself.
            assert CORE_PATTERN.read_bytes() == expected
            assert PIPE_LIMIT.read_bytes() == limit
            assert sysctl.read_bytes() == sysctl_before
            assert not (state / "handler").exists()
    finally:
        CORE_PATTERN.write_bytes(original.rstrip(b"\n"))
        PIPE_LIMIT.write_bytes(limit.strip())


def test_install_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    before, limit = CORE_PATTERN.read_bytes(), PIPE_LIMIT.read_bytes()
    try:
        done = run_cli("postmortem", "install", "--dir", str(open_dir), "--state-dir", str(tmp_path / "s"),
                       "--sysctl-file", str(tmp_path / "sysctl.conf"))
        assert done.returncode == 2 and "only root can write" in done.stderr, done.stderr
        assert CORE_PATTERN.read_bytes() == before
    finally:  # a handler installed by mistake must not outlive the test
        CORE_PATTERN.write_bytes(before.rstrip(b"\n"))
        PIPE_LIMIT.write_bytes(limit.strip())


def test_the_handlers_python_sees_the_standard_library_first_and_no_other_site_directory(dumps: Path,
                                                                                         tmp_path: Path) -> None:
    """The kernel runs the handler as root at every crash: its sys.path is the standard library, then
    dumplib's directory and its dependencies' (each checked root's only), and nothing else; no site-packages
    of the interpreter's own, no .pth file, and no module of a site directory (a backport named like a
    standard module) ahead of the standard library. Checked by running the handler's own first lines."""
    require(os.geteuid() == 0, "the postmortem handler is installed as root")
    state = private_state(tmp_path)
    with installed(state, dumps, "--kind", "mini", "--compress", "zstd"):
        script = (state / "handler").read_text().splitlines()
    shebang = script[0][2:].split()
    # The whole script but its last two lines (the handler's import and call): whatever else it does to
    # sys.path (a site line, say) is run too.
    body = [ln for ln in script[1:] if not ln.startswith(("from dumplib._linux.coredump_handler", "sys.exit(main("))]
    assert len(body) == len(script) - 3, script
    probe = "\n".join(body + ["import json, sysconfig", "print(json.dumps([sys.path, sysconfig.get_paths()]))"])
    done = subprocess.run([*shebang, "-c", probe], capture_output=True, text=True, timeout=60, env={"PATH": "/bin"})
    assert done.returncode == 0, done.stderr
    path, paths = json.loads(done.stdout)
    stdlib = {paths["stdlib"], paths["platstdlib"]}
    import dumplib
    import psutil
    import zstandard

    root = str(Path(dumplib.__file__).resolve().parent.parent)
    deps = {str(Path(m.__file__).resolve().parent.parent) for m in (psutil, zstandard)}
    def standard(p: str) -> bool:
        return p.endswith(".zip") or (not p.endswith(("site-packages", "dist-packages"))
                                      and any(p == s or p.startswith(s + "/") for s in stdlib))

    ours = [p for p in path if not standard(p)]
    assert ours == [root] + sorted(deps - {root}, key=path.index), path  # only these, after the stdlib
    assert path.index(root) > max(i for i, p in enumerate(path) if p not in ours), path
    assert paths["purelib"] not in path or paths["purelib"] in deps | {root}, path
