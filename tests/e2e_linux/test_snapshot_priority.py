"""The injected clone() of a snapshot runs in a thread of the target, at that thread's priority; it is
raised to the stop's priority (backend.STOP_NICE, which dumplib's tracer runs at) for the call and put
back before the target is let go. Read from the kernel: the clone inherits the nice value its parent
thread had at the clone() (so the clone's /proc stat shows the priority the call ran at), and the
target's threads' own values are read after the dump."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

import dumplib
from dumplib._linux.backend import STOP_NICE
from linuxrig import Target, run_target

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority needs CAP_SYS_NICE (root)")


def _nice(pid: int, tid: int) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
    return int(stat[stat.rindex(b")") + 2:].split()[16])  # field 19 of stat: nice


def _children(pid: int) -> List[int]:
    kids: List[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _set_nice_everywhere(pid: int, nice: int) -> List[int]:
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    for tid in tids:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    return tids


@pytest.mark.parametrize("target_nice", [5, STOP_NICE - 5])
def test_the_clone_runs_at_the_stops_priority_and_the_target_gets_its_own_back(target_exe, tmp_path, target_nice):
    seen: List[int] = []
    tracers: List[bytes] = []

    def progress(done: int, elapsed: float) -> None:
        if not seen:  # the copy from the clone: it is held, stopped, as the target's child
            seen.extend(_nice(kid, kid) for kid in _children(t.pid))
            for kid in _children(t.pid):  # its tracer: the snapshot's helper, in a session of its own
                status = Path(f"/proc/{kid}/status").read_text()
                tracer = int(status.split("TracerPid:")[1].split()[0])
                tracers.append(Path(f"/proc/{tracer}/autogroup").read_bytes())

    with run_target([str(target_exe), "--heap", "16", "--threads", "3"]) as t:
        tids = _set_nice_everywhere(t.pid, target_nice)
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False,
                                     progress=progress)
        assert result.snapshot, result.warnings
        assert len(seen) == 1, f"one clone expected while its memory was copied, saw nice values {seen}"
        # Raised to the stop's priority, never lowered below the target's own.
        assert seen[0] == min(target_nice, STOP_NICE)
        assert {tid: _nice(t.pid, tid) for tid in tids} == {tid: target_nice for tid in tids}
    if Path("/proc/self/autogroup").exists():
        # The helper's own autogroup (its session's, no one else's) at the stop's nice: it weighs
        # against other sessions' load as much as its thread does inside it.
        assert len(tracers) == 1 and tracers[0].split()[2] == str(STOP_NICE).encode(), tracers
        # Not ours. Ours may be the kernel's default group (a process whose session was never made by
        # setsid: CI's runner, in session 0), whose file is empty.
        assert tracers[0].split()[:1] != Path("/proc/self/autogroup").read_bytes().split()[:1]


#: A process in the target's session that reads its own autogroup's nice (the target's: one session,
#: one group) as fast as it can, and writes every value it saw change to, once told to stop. With a
#: fourth argument it sets the group to that value itself as soon as it sees the stop's (another
#: writer, in the middle of the clone()).
AUTOGROUP_SAMPLER = r"""
import json, os, sys, time
out, ready, stop = sys.argv[1:4]
theirs = sys.argv[4] if len(sys.argv) > 4 else None
fd = os.open("/proc/self/autogroup", os.O_RDONLY)
seen = []
def nice():
    os.lseek(fd, 0, 0)
    return int(os.read(fd, 256).split()[2])
seen.append(nice())
open(ready, "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    for _ in range(200):
        value = nice()
        if value != seen[-1]:
            seen.append(value)
            if theirs is not None and value == STOP_NICE:
                with open("/proc/self/autogroup", "w") as f:
                    f.write(theirs)
                theirs = None
with open(out + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(out + ".tmp", out)
""".replace("STOP_NICE", str(STOP_NICE))


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} did not appear within 60 s"
        time.sleep(0.01)


def _autogroup_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_bytes().split()[2])


class Sampled:
    """The target (512 MiB) in a session of its own, as a service is, its autogroup at *group_nice*,
    and the sampler its child in that session; .seen once the block is over."""

    def __init__(self, target_exe: Path, tmp_path: Path, group_nice: int, theirs: Optional[int] = None) -> None:
        self.out, self.ready, self.stop = tmp_path / "seen.json", tmp_path / "ready", tmp_path / "stop"
        other = "" if theirs is None else f" {theirs}"
        sampler = (f"{sys.executable} -c '{AUTOGROUP_SAMPLER}' {self.out} {self.ready} {self.stop}{other}"
                   " </dev/null >/dev/null 2>&1 &")
        self.run = run_target(["sh", "-c", f"{sampler} exec {target_exe} --heap 512 --threads 2"], preexec=os.setsid)
        self.group_nice = group_nice
        self.seen: List[int] = []

    def __enter__(self) -> Target:
        self.target = self.run.__enter__()
        _wait_for(self.ready, "the sampler's start")
        Path(f"/proc/{self.target.pid}/autogroup").write_text(str(self.group_nice))
        return self.target

    def __exit__(self, *exc: object) -> None:
        self.stop.touch()
        try:
            _wait_for(self.out, "the sampler's report")
            self.seen = json.loads(self.out.read_text())
        finally:
            self.run.__exit__(None, None, None)


needs_autogroups = pytest.mark.skipif(not Path("/proc/self/autogroup").exists(),
                                      reason="a kernel with no autogroups (CONFIG_SCHED_AUTOGROUP)")


@needs_autogroups
@pytest.mark.parametrize("group_nice", [3, STOP_NICE - 5])
def test_the_clone_runs_with_the_targets_autogroup_raised_and_the_group_gets_its_own_back(target_exe, tmp_path, group_nice):
    running: List[int] = []

    def progress(done: int, elapsed: float) -> None:
        if not running:  # the copy from the clone: the target runs again by now
            running.append(_autogroup_nice(t.pid))

    sampled = Sampled(target_exe, tmp_path, group_nice)
    with sampled as t:
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False,
                                     progress=progress)
        assert result.snapshot, result.warnings
        after = _autogroup_nice(t.pid)
    seen = sampled.seen
    # The group's own value, then the stop's during the clone() (never lower than the group's own),
    # then its own again before the target runs (read from the kernel while the copy is made from
    # the clone, the target running, and after the dump).
    assert running == [group_nice] and after == group_nice, (running, after)
    if group_nice > STOP_NICE:
        assert STOP_NICE in seen, f"the sampler saw the target's autogroup at {seen} only"
        assert seen[-1] == group_nice
    else:
        assert STOP_NICE not in seen and min(seen[1:] or [group_nice]) >= group_nice, seen


@needs_autogroups
def test_a_value_another_sets_during_the_clone_is_theirs_to_keep(target_exe, tmp_path):
    sampled = Sampled(target_exe, tmp_path, 3, theirs=7)
    with sampled as t:
        result = dumplib.create_dump(t.pid, str(tmp_path / "t.core"), "full", snapshot=True, sidecar=False)
        assert result.snapshot, result.warnings
        after = _autogroup_nice(t.pid)
    assert STOP_NICE in sampled.seen, f"the sampler saw the target's autogroup at {sampled.seen} only"
    assert after == 7, f"the other writer's 7 was overwritten with {after} (seen: {sampled.seen})"


#: The dump, made by a process without CAP_SYS_ADMIN (setpriv drops it; root otherwise).
WITHOUT_SYS_ADMIN = r"""
import sys, dumplib
result = dumplib.create_dump(int(sys.argv[1]), sys.argv[2], "full", snapshot=True, sidecar=False)
print(result.snapshot, list(result.warnings))
"""


@needs_autogroups
def test_without_cap_sys_admin_the_group_is_not_raised_as_it_could_not_be_put_back_in_time(target_exe, tmp_path):
    # The kernel takes one autogroup write per 100 ms from a process without CAP_SYS_ADMIN (EAGAIN
    # otherwise), less than a clone() lasts: a raise would stay. So none is made.
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed: .ci/run installs it")
    sampled = Sampled(target_exe, tmp_path, 3)
    with sampled as t:
        done = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
                               sys.executable, "-c", WITHOUT_SYS_ADMIN, str(t.pid), str(tmp_path / "t.core")],
                              capture_output=True, text=True, timeout=300, cwd="/",
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert done.returncode == 0 and done.stdout.startswith("True"), done.stdout + done.stderr
        after = _autogroup_nice(t.pid)
    assert sampled.seen[1:] == [3] and after == 3, (sampled.seen, after)


#: group_raised by a process without CAP_SYS_ADMIN, past the kernel's 100 ms since the last write:
#: the group as seen inside the block, after it, and why a put-back failed.
GROUP_RAISED_WITHOUT_SYS_ADMIN = r"""
import sys, time
from dumplib._linux.priority import group_raised
pid = int(sys.argv[1])
def nice():
    return open(f"/proc/{pid}/autogroup").read().split()[2]
time.sleep(0.15)
with group_raised(pid, -10) as raised:
    inside = nice()
print(inside, nice(), raised.failed)
"""


@needs_autogroups
def test_group_raised_makes_no_raise_it_could_not_undo(tmp_path):
    # Without the check, the raise is the first write in 100 ms and is taken; the put-back, at once
    # after it, is refused (EAGAIN) and the group stays raised.
    with run_target([sys.executable, "-c", "import json, os, sys; print(json.dumps({'pid': os.getpid()}), flush=True);"
                     " sys.stdin.read()"], preexec=os.setsid) as t:
        Path(f"/proc/{t.pid}/autogroup").write_text("3")
        done = subprocess.run(["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
                               sys.executable, "-c", GROUP_RAISED_WITHOUT_SYS_ADMIN, str(t.pid)],
                              capture_output=True, text=True, timeout=60, cwd="/",
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["3", "3", "None"], done.stdout
        assert _autogroup_nice(t.pid) == 3


#: A snapshot's helper started by hand without a session of its own (its caller's session, here a
#: fresh one at nice 2, started at the stop's nice): the group it may raise for its life is then its
#: caller's. Prints the seize's
#: answer, the caller's group after the seize, and after the helper has ended.
HELPER_NOT_LEADER = r"""
import os, pickle, socket, subprocess, sys
from dumplib._linux.snapshot.remote import _helper_command
open("/proc/self/autogroup", "w").write("2")
os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[2]))  # as dumplib's stopping thread is, whose nice it inherits
ours, theirs = socket.socketpair()
commands = theirs.detach()
answers_r, answers_w = os.pipe()
executable, argv = _helper_command("serve", str(commands), str(answers_w), sys.argv[1], "None")
proc = subprocess.Popen(argv, executable=executable,
                        pass_fds=(commands, answers_w), cwd="/")
os.close(commands)
os.close(answers_w)
answers = os.fdopen(answers_r, "rb")
kind, _ = pickle.load(answers)
during = open("/proc/self/autogroup").read().split()[2]
ours.sendall(pickle.dumps(("release",)))
pickle.load(answers)
proc.wait(timeout=60)
print(kind, during, open("/proc/self/autogroup").read().split()[2])
"""


@needs_autogroups
def test_a_helper_without_a_session_of_its_own_leaves_its_callers_group_alone(target_exe):
    with run_target([str(target_exe), "--threads", "2"]) as t:
        done = subprocess.run([sys.executable, "-c", HELPER_NOT_LEADER, str(t.pid), str(STOP_NICE)], capture_output=True, text=True,
                              timeout=120, cwd="/", preexec_fn=os.setsid,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["ok", "2", "2"], done.stdout + done.stderr
        assert t.proc.poll() is None
        t.assert_running_untraced()
