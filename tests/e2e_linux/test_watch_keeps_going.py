"""A watch is not ended by one process's trouble: a process gone at any step, frozen or refused is an event for
that process alone (the list is in docs/watch.md, "When a dump fails"); names two dumps would share are refused
before anything is watched; an --exec hook does not outlive the watcher."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import dumplib
from helpers import leftovers, require
from linuxrig import assert_running_untraced, proc_status, signal_defaults

REPO = Path(__file__).resolve().parent.parent.parent
FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture(scope="module")
def cli_path(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A PYTHONPATH under which `python -m dumplib_cli` is this tree's cli/ (not an installed copy)."""
    where = tmp_path_factory.mktemp("clipath")
    (where / "dumplib_cli").symlink_to(REPO / "cli")
    return os.pathsep.join([str(REPO), str(where), os.environ.get("PYTHONPATH", "")])


class Events(list):
    def __call__(self, e: dumplib.WatchEvent) -> None:
        self.append(e)

    def of(self, kind: str) -> List[dumplib.WatchEvent]:
        return [e for e in self if e.event == kind]


def unique_sleep(tmp_path: Path) -> str:
    """/bin/sleep under a name no other process has (comm is the file's name)."""
    link = tmp_path / ("dlk" + uuid.uuid4().hex[:8])
    link.symlink_to(os.path.realpath("/bin/sleep"))
    return str(link)


@contextlib.contextmanager
def frozen_group() -> Iterator[Path]:
    """A cgroup v1 freezer group of our own (root; skipped where the freezer is not mounted)."""
    if os.geteuid() != 0 or not (FREEZER / "freezer.state").exists() and not FREEZER.is_dir():
        pytest.skip("no cgroup v1 freezer here (root and /sys/fs/cgroup/freezer are needed)")
    group = FREEZER / ("dumplib-test-" + uuid.uuid4().hex[:8])
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a freezer cgroup here: {exc}")
    try:
        yield group
    finally:
        (group / "freezer.state").write_text("THAWED")
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        _rmdir_once_empty(group)


def _rmdir_once_empty(group: Path) -> None:
    """Remove a test's cgroup once its killed processes have left it (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while group.exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            group.rmdir()
        time.sleep(0.05)


def freeze(group: Path, state: str) -> None:
    (group / "freezer.state").write_text(state)
    deadline = time.monotonic() + 10
    while (group / "freezer.state").read_text().strip() != state:
        assert time.monotonic() < deadline, "the freezer never settled"
        time.sleep(0.02)


def test_the_frozen_cgroup_refusal_names_the_freezer_and_how_to_thaw(tmp_path: Path) -> None:
    with frozen_group() as group:
        proc = subprocess.Popen(["sleep", "1000"])
        try:
            (group / "cgroup.procs").write_text(str(proc.pid))
            freeze(group, "FROZEN")
            with pytest.raises(dumplib.TargetRefused) as refused:
                dumplib.create_dump(proc.pid, str(tmp_path / "frozen.core"))
            text = str(refused.value)
            assert refused.value.reason == "thread-not-stopping"
            assert "frozen by the cgroup freezer" in text and str(group) in text, text
            assert f"echo THAWED > {group}/freezer.state" in text
            assert "vfork" not in text and "NFS" not in text
            assert refused.value.cgroup == str(group)  # type: ignore[attr-defined]
            assert leftovers(tmp_path) == [] and not (tmp_path / "frozen.core").exists()
        finally:
            (group / "freezer.state").write_text("THAWED")  # a frozen process takes no SIGKILL until thawed
            proc.kill()
            proc.wait(30)


def _cgroup2_mount() -> Optional[Path]:
    """Where cgroup v2 is mounted (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def test_a_process_frozen_by_cgroup_v2_is_dumped_and_left_frozen_and_untraced(tmp_path: Path) -> None:
    """cgroup v2's freezer (cgroup.freeze, kernel 5.2+: no controller needed, so it works on a hybrid
    host as on a unified one) parks a task in a trap that ptrace can interrupt (the frozen task waits in
    get_signal, not v1's __refrigerator): no refusal is needed there, the dump is made. It must leave
    the process as it found it: still frozen (never thawed by dumplib), and untraced. A snapshot cannot
    be made of it, and that is said up front."""
    mount = _cgroup2_mount()
    require(os.geteuid() == 0 and mount is not None, "no cgroup v2 mounted here, or not root")
    assert mount is not None
    group = _v2_group(mount, "dumplib-test-" + uuid.uuid4().hex[:8])
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        (group / "cgroup.procs").write_text(str(proc.pid))
        _v2_freeze(group, True)
        result = dumplib.create_dump(proc.pid, str(tmp_path / "frozen.core"), "mini")
        head = subprocess.run(["readelf", "-n", result.path], capture_output=True, text=True, timeout=60)
        assert "NT_PRSTATUS" in head.stdout, head.stdout + head.stderr
        assert "frozen 1" in (group / "cgroup.events").read_text()
        assert proc_status(proc.pid)["TracerPid"] == "0"
        # A snapshot cannot be made there (the thread made to clone goes back into the trap): said
        # before the target is touched, naming the freezer, rather than found at the call's bound.
        auto = dumplib.create_dump(proc.pid, str(tmp_path / "auto.core"), "mini", snapshot="auto")
        assert auto.snapshot is False and any("cgroup v2's freezer" in w and str(group) in w
                                              for w in auto.warnings), auto.warnings
        with pytest.raises(dumplib.TargetRefused) as refused:
            dumplib.create_dump(proc.pid, str(tmp_path / "snap.core"), "mini", snapshot=True)
        assert refused.value.reason == "snapshot-unavailable" and f"echo 0 > {group}/cgroup.freeze" in str(refused.value)
        assert not (tmp_path / "snap.core").exists()
        assert "frozen 1" in (group / "cgroup.events").read_text()
        assert proc_status(proc.pid)["TracerPid"] == "0"
        assert leftovers(tmp_path) == []
    finally:
        proc.kill()
        _v2_remove(group)
        proc.wait(30)


def test_a_frozen_process_is_reported_and_the_watch_goes_on_to_dump_it_once_thawed(outdir: Path) -> None:
    with frozen_group() as group:
        proc = subprocess.Popen(["sleep", "1000"])
        try:
            (group / "cgroup.procs").write_text(str(proc.pid))
            freeze(group, "FROZEN")
            events = Events()

            def on_event(e: dumplib.WatchEvent) -> None:
                events(e)
                if e.event == "failed":
                    freeze(group, "THAWED")  # the refusal has passed: the next look dumps it

            results = dumplib.watch(proc.pid, dumplib.ThreadsAbove(1), path=outdir, interval=0, sample_every=0.2,
                                    timeout=120, on_event=on_event, count=1)
            failed = events.of("failed")
            assert failed and failed[0].error["reason"] == "thread-not-stopping", failed  # type: ignore[index]
            assert "cgroup freezer" in (failed[0].message or "")
            # ... and the watch went on: once thawed the process was dumped, by the same watch.
            assert [r.pid for r in results] == [proc.pid] and events[-1].event == "done", events
            assert_running_untraced(proc.pid)
        finally:
            (group / "freezer.state").write_text("THAWED")
            proc.kill()
            proc.wait(30)


def test_watching_every_process_of_a_name_survives_processes_that_come_and_go(tmp_path: Path,
                                                                               outdir: Path) -> None:
    """Short-lived processes die at every step of a watch (seen, sampled, planned, stopped); each is an
    event for that process, and the watch runs to its timeout and dumps the one that stays."""
    exe = unique_sleep(tmp_path)
    stop = threading.Event()
    started: List[subprocess.Popen] = []  # type: ignore[type-arg]

    def churn() -> None:
        while not stop.is_set():
            started.append(subprocess.Popen([exe, "0.0%d" % (len(started) % 9 + 1)]))
            started[-1].wait()

    stays = subprocess.Popen([exe, "1000"])
    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        events = Events()
        results = dumplib.watch(all=Path(exe).name, triggers=dumplib.ThreadsAbove(1), path=outdir, interval=0,
                                sample_every=0.01, timeout=6, on_event=events, count=1)
    finally:
        stop.set()
        churner.join(10)
        stays.kill()
        stays.wait()
    assert events[-1].event == "timeout", events[-3:]
    assert stays.pid in [r.pid for r in results]
    assert len(started) > 20, "the churn never got going"
    for e in events.of("failed"):  # caught at whatever step (gone, or refused while it was exiting)
        assert e.pid != stays.pid, e
    assert leftovers(outdir) == []


@pytest.mark.parametrize("path,options", [
    ("fixed.core", dict(count=3)),
    ("at_{time}.core", dict(count=2, interval=0.5)),
    ("fixed.core", dict(all="anything")),
])
def test_a_name_two_dumps_would_share_is_refused_before_anything_is_watched(tmp_path: Path, path: str,
                                                                             options: dict) -> None:  # type: ignore[type-arg]
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        target = {} if "all" in options else {"target": proc.pid}
        with pytest.raises(dumplib.InvalidArgument) as refused:
            dumplib.watch(triggers=dumplib.ThreadsAbove(1), path=tmp_path / path, timeout=5, **target, **options)
        assert "give a directory" in str(refused.value)
        assert list(tmp_path.iterdir()) == []
        assert_running_untraced(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_a_directory_or_a_name_with_pid_and_time_is_not_refused(tmp_path: Path, outdir: Path) -> None:
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        results = dumplib.watch(proc.pid, dumplib.ThreadsAbove(1), path=outdir / "x_{pid}_{time}.core", count=2,
                                interval=1.0, sample_every=0.1, timeout=60)
        assert len({r.path for r in results}) == 2
    finally:
        proc.kill()
        proc.wait()


#: The command, its hook's thread held for a while between starting the hook and noting it (as a loaded
#: machine holds it): the window in which the watcher's end used to find no hook to kill.
LATE_NOTING = r"""
import subprocess, sys, time
import dumplib_cli.watch as watch

class Held:
    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs):
        started = subprocess.Popen(*args, **kwargs)
        if kwargs.get("shell"):  # the hook: it runs; its thread notes it 2 s later
            time.sleep(2.0)
        return started

watch.subprocess = Held()
sys.argv[0] = "dumplib"
from dumplib_cli.app import main
main()
"""


@pytest.mark.parametrize("noted", ["at-once", "late"])
def test_a_stuck_exec_hook_is_killed_with_its_children_when_the_watcher_ends(tmp_path: Path, outdir: Path,
                                                                           cli_path: str, noted: str) -> None:
    """"late": the watcher is ended while the hook's thread has yet to note the hook it started (the race
    the loaded CI met: the hook outlived the watcher, holding its stdout)."""
    proc = subprocess.Popen(["sleep", "1000"])
    marks = tmp_path / "hook"
    hook = f"echo $$ > {marks}.sh; sleep 1000 & echo $! > {marks}.child; wait"
    command = ["-m", "dumplib_cli"] if noted == "at-once" else ["-c", LATE_NOTING]
    cli = subprocess.Popen([sys.executable, *command, "watch", str(proc.pid), str(outdir), "--threads", "1",
                            "--sample-every", "0.1", "--json", "--exec", hook], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=cli_path), preexec_fn=signal_defaults())
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{marks}.child").exists() or not Path(f"{marks}.child").read_text().strip():
            assert time.monotonic() < deadline and cli.poll() is None, "the hook never ran"
            time.sleep(0.05)
        pids = [int(Path(f"{marks}.sh").read_text()), int(Path(f"{marks}.child").read_text())]
        assert os.getpgid(pids[0]) == pids[0] != os.getpgid(cli.pid), "the hook is not in a group of its own"
        cli.send_signal(signal.SIGTERM)
        out = cli.communicate(timeout=60)[0]
        assert cli.returncode == 143, out
        last = json.loads(out.splitlines()[-1])
        assert last["event"] == "stopped"
        # The dump the hook ran for is kept, and the last word says so, by name (the SIGTERM
        # case: "the dump kept though the message says nothing was kept").
        kept = [str(p) for p in outdir.iterdir() if p.suffix == ".core"]
        assert len(kept) == 1 and f"1 dump(s) kept: {kept[0]}" in last["message"], (last, kept)
        for pid in pids:  # gone (or a zombie its new parent has yet to reap), not running on
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and not _zombie(pid):
                assert time.monotonic() < deadline, f"hook process {pid} outlived the watcher"
                time.sleep(0.05)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        proc.kill()
        proc.wait()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _v2_group(mount: Path, name: str) -> Path:
    group = mount / name
    group.mkdir()
    return group


def _v2_freeze(group: Path, frozen: bool) -> None:
    (group / "cgroup.freeze").write_text("1" if frozen else "0")
    deadline = time.monotonic() + 10
    while f"frozen {int(frozen)}" not in (group / "cgroup.events").read_text():
        assert time.monotonic() < deadline, "the v2 freezer never settled"
        time.sleep(0.02)


def _v2_remove(*groups: Path) -> None:
    """Thaw (a frozen task takes no SIGKILL until thawed) and remove each group, its processes killed."""
    for group in groups:
        with contextlib.suppress(OSError):
            (group / "cgroup.freeze").write_text("0")
        _rmdir_once_empty(group)


def test_a_cgroup_named_by_someone_else_neither_fakes_a_freeze_nor_runs_in_the_thaw_command(tmp_path: Path) -> None:
    """Cgroup names are anyone's who may make one (a delegated subtree, a rootless container). The
    kernel refuses "\\n" in them but prints "\\r" as is: a process in a group named "x\\r0::/F" must not
    be taken for one in F, a frozen group of someone else's. And the thaw command the refusal gives for
    a group named with a space and "$(...)" must thaw that group when pasted into a shell, and run
    nothing else."""
    mount = _cgroup2_mount()
    require(os.geteuid() == 0 and mount is not None, "no cgroup v2 mounted here, or not root")
    assert mount is not None
    tag = uuid.uuid4().hex[:8]
    marker = tmp_path / "ran"
    other = _v2_group(mount, f"dumplib-other-{tag}")
    liar_parent = _v2_group(mount, f"dumplib-liar-{tag}\r0::")
    liar = _v2_group(liar_parent, other.name)  # /proc/PID/cgroup: "0::/dumplib-liar-...\r0::/<other's name>"
    hostile = _v2_group(mount, f"dumplib-test-{tag} $(touch ran)")  # run in tmp_path, were it run
    procs = [subprocess.Popen(["sleep", "1000"]) for _ in range(3)]
    try:
        for proc, group in zip(procs, (other, liar, hostile)):
            (group / "cgroup.procs").write_text(str(proc.pid))
        _v2_freeze(other, True)
        # The liar's process runs: a snapshot is taken of it, no freezer said.
        made = dumplib.create_dump(procs[1].pid, str(tmp_path / "liar.core"), "mini", snapshot=True, sidecar=False)
        assert made.snapshot is True, made.warnings
        _v2_freeze(hostile, True)
        with pytest.raises(dumplib.TargetRefused) as refused:
            dumplib.create_dump(procs[2].pid, str(tmp_path / "hostile.core"), "mini", snapshot=True)
        command = str(refused.value).split("`")[1]
        assert command.startswith("echo 0 > "), str(refused.value)
        subprocess.run(["sh", "-c", command], check=True, timeout=30, cwd=tmp_path)
        deadline = time.monotonic() + 10
        while "frozen 0" not in (hostile / "cgroup.events").read_text():
            assert time.monotonic() < deadline, f"{command!r} did not thaw {hostile}"
            time.sleep(0.02)
        assert not marker.exists(), f"the thaw command ran the group name's $(...): {command!r}"
    finally:
        for proc in procs:
            proc.kill()
        _v2_remove(other, liar, liar_parent, hostile)
        for proc in procs:
            proc.wait(30)
