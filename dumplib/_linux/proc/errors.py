"""What a refused or failed call on another process means: the one OSError -> dumplib error mapping,
and the refusals explained from /proc (a tracer already there, another user, Yama, a frozen cgroup,
a thread asleep where no stop reaches it).
"""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import errno
import os

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

from ...errors import AccessDenied, DumpError, DumpFailed, ProcessNotFound, TargetRefused
from .pidfiles import has_capability, read_small_text, read_status, thread_states, tids_or_none

#: errno values that mean the process (or thread) is gone: ESRCH from a call on it, ENOENT from /proc.
GONE = (errno.ESRCH, errno.ENOENT)
#: errno values that mean the kernel refused access.
REFUSED = (errno.EPERM, errno.EACCES)


def target_error(exc: OSError, pid: int, doing: str, *, mid_dump: bool = False) -> DumpError:
    """The dumplib error for *exc*, raised while *doing* something to process *pid* (a call on it, a
    read of its /proc files): the one place errno values become dumplib errors.

    - gone (GONE): before the dump ProcessNotFound (nothing was started), *mid_dump* DumpFailed
      reason "exited" (DumpFailed.target_exited);
    - refused (REFUSED) before the dump: AccessDenied, saying why (permission_error); mid-dump a
      DumpFailed like any other failure (the target changed credentials under us: an exec of a setuid
      program), since what was refused is no longer the process that was checked;
    - anything else: DumpFailed naming what failed, with the errno.
    """
    if exc.errno in GONE:
        return DumpFailed.target_exited(pid) if mid_dump else ProcessNotFound.exited(pid)
    if exc.errno in REFUSED and not mid_dump:
        return permission_error(pid, doing)
    return DumpFailed(f"{doing} process {pid} failed: {exc}", pid=pid, errno=exc.errno)


def unstoppable_refusal(pid: int, tids: List[int], timeout: float) -> TargetRefused:
    """The refusal for threads that did not reach their stop: which, in what state, waiting where."""
    tid = tids[0]
    status = read_status(pid, tid)
    state = status.get("State", "?")
    wchan = read_small_text(f"/proc/{pid}/task/{tid}/wchan")
    where = f" in the kernel at {wchan}" if wchan and wchan != "0" else " in the kernel"
    others = f" (and {len(tids) - 1} more)" if len(tids) > 1 else ""
    # The freezer's wait shows as __refrigerator on most kernels, as the call it froze in on others.
    frozen = frozen_cgroup(pid)
    if frozen or "refrigerator" in wchan:
        thaw = ("thaw its cgroup" if not frozen else thaw_command(frozen))
        return TargetRefused(
            f"process {pid} is frozen by the cgroup freezer (thread {tid}{others} waits in the kernel at {wchan}"
            f"{', cgroup ' + frozen if frozen else ''}): a frozen task takes no signal and no"
            f" ptrace stop until it is thawed. Nothing was written and its threads are as they were; thaw it"
            f" ({thaw}, `docker unpause`, `systemctl thaw`) and try again",
            pid=pid, reason="thread-not-stopping", tid=tid, tids=list(tids), state=state, wchan=wchan,
            cgroup=frozen,
        )
    return TargetRefused(
        f"thread {tid}{others} of process {pid} did not stop within {timeout:g} s: it is in state {state}, waiting"
        f"{where}, where no signal or ptrace stop reaches it (a vfork parent waiting for its child, a read from"
        f" a hung NFS or FUSE mount). Its other threads were let go at once and nothing was written; try again"
        f" once it is out of that call (/proc/{pid}/task/{tid}/stack shows where it waits)",
        pid=pid, reason="thread-not-stopping", tid=tid, tids=list(tids), state=state, wchan=wchan,
    )


def memory_map_locked(pid: int, seconds: float, *, stopped: bool = False) -> TargetRefused:
    """The refusal for a process whose mmap lock is held for good: a read of its memory map (smaps,
    pagemap, map_files) or memory got no answer within *seconds*. *stopped*: it was found while the
    process was stopped for the dump (it has been let go since). Names the threads waiting in the
    kernel (state D): read from /proc/PID/task, which takes no lock of the process's."""
    waiting = sorted(tid for tid, state in thread_states(pid).items() if state == "D")
    tid = waiting[0] if waiting else None
    wchan = read_small_text(f"/proc/{pid}/task/{tid}/wchan") if tid is not None else ""
    who = ""
    if tid is not None:
        others = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
        where = f" at {wchan}" if wchan and wchan != "0" else ""
        who = f" Its thread {tid}{others} waits in the kernel{where}."
    done = ("it was let go and nothing was kept" if stopped
            else "nothing was written and it was not stopped")
    ours = _our_stuck_readers(pid)
    if ours:
        who += (f" dumplib's own reader process{'es' if len(ours) > 1 else ''} {', '.join(map(str, ours))}"
                f" wait{'' if len(ours) > 1 else 's'} in a read of one of its pages of a file on such a mount and"
                f" may be what holds it: killed, {'they end' if len(ours) > 1 else 'it ends'} and let"
                f"{'' if len(ours) > 1 else 's'} go once that mount answers.")
    return TargetRefused(
        f"process {pid}'s memory map is locked: a read of its memory map or memory got no answer within"
        f" {seconds:g} s. Something holds its mmap lock for good (a read of one of its pages stuck on a hung FUSE"
        f" or NFS mount, with a call that changes its mappings queued behind it), and every read of its"
        f" memory, smaps or command line waits behind that.{who} The read was given up on: {done}, and it"
        f" runs on untraced; try again once that mount answers",
        pid=pid, reason="memory-map-locked", tid=tid, tids=waiting or None, state="D" if tid is not None else None,
        wchan=wchan or None,
    )


def thaw_command(frozen: str) -> str:
    """The shell command that thaws the frozen cgroup directory *frozen* (v1's freezer or v2's), its
    path quoted: a cgroup's name is anyone's who may make one (a delegated subtree, a container)."""
    from ..._text import shell_word

    if os.path.exists(os.path.join(frozen, "freezer.state")):
        return f"echo THAWED > {shell_word(frozen + '/freezer.state')}"
    return f"echo 0 > {shell_word(frozen + '/cgroup.freeze')}"


def frozen_cgroup(pid: int) -> str:
    """The frozen cgroup directory holding *pid*: cgroup v2 (``cgroup.freeze`` 1 there or in a parent)
    or v1's freezer (``freezer.state`` not THAWED); ``""`` when none is (or it cannot be read)."""
    try:
        # Split on "\n" only: the kernel refuses it in a cgroup's name but prints "\r" and the other
        # characters str.splitlines() also breaks at as they are, which would make a name a line of its own.
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            groups = f.read(1 << 16).decode("utf-8", "backslashreplace").split("\n")
        with open("/proc/self/mounts", "rb") as f:
            mounts = [line.split() for line in f.read(1 << 20).decode("utf-8", "backslashreplace").split("\n")]
    except OSError:
        return ""
    frozen: Tuple[str, ...]
    for line in groups:
        _, controllers, relative = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            base, flag, frozen = _mount_of(mounts, "cgroup2", None), "cgroup.freeze", ("1",)
        elif "freezer" in controllers.split(","):
            base, flag, frozen = _mount_of(mounts, "cgroup", "freezer"), "freezer.state", ("FROZEN", "FREEZING")
        else:
            continue
        if base is None:
            continue
        path = os.path.normpath(base + "/" + relative.strip("/"))
        while path == base or path.startswith(base + "/"):
            if read_small_text(os.path.join(path, flag)) in frozen:
                return path
            if path == base:
                break
            path = os.path.dirname(path)
    return ""


def _mount_of(mounts: List[List[str]], fstype: str, option: Optional[str]) -> Optional[str]:
    """Where a cgroup file system is mounted (of type *fstype*, with *option* among its options)."""
    for fields in mounts:
        if len(fields) >= 4 and fields[2] == fstype and (option is None or option in fields[3].split(",")):
            return fields[1]
    return None


def permission_error(pid: int, action: str = "attach to", tid: Optional[int] = None) -> DumpError:
    """Explain why the kernel refused access (ptrace, or /proc files guarded by the same rules):
    a tracer, another user, a non-dumpable process, Yama, or a missing capability."""
    status = read_status(pid, tid)
    tracer = tracer_process(pid, tid)
    if tracer and tracer != os.getpid() and action == "attach to":
        return traced_refusal(pid, tracer, tid)
    reasons = []
    uid = int(status.get("Uid", "0").split()[0]) if status.get("Uid") else None
    if uid is not None and uid != os.geteuid():
        reasons.append(f"it belongs to uid {uid}, not to this user (uid {os.geteuid()})")
    elif uid is not None and _proc_owner(pid) == 0 != uid:
        # The kernel hands the files in /proc/PID to root when a process is not dumpable.
        reasons.append("it is not dumpable (it called prctl(PR_SET_DUMPABLE, 0) or changed its credentials,"
                       " e.g. a setuid program), so only a process with CAP_SYS_PTRACE may read it")
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
        if scope >= 1:
            reasons.append(f"kernel.yama.ptrace_scope is {scope} (1 allows only descendants, 2 only CAP_SYS_PTRACE, 3 nobody)")
    except (OSError, ValueError):
        pass
    if not _has_cap_sys_ptrace():
        reasons.append("this process lacks CAP_SYS_PTRACE (run as root, or grant the capability)")
    why = "; ".join(reasons) or "the kernel refused ptrace (a security module may forbid it)"
    return AccessDenied(f"cannot {action} process {pid}: {why}", pid=pid, code=errno.EPERM)


def _proc_owner(pid: int) -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/status").st_uid
    except OSError:
        return None


def foreign_tracer(pid: int) -> Optional[Tuple[int, int]]:
    """(thread id, tracer pid) of the first thread of *pid* traced by another process, if any.

    A tracer may hold a single thread (`strace -p TID`), so every thread is checked, before anything
    is stopped: once dumplib holds some threads, the leader's TracerPid would name dumplib itself.
    """
    for tid in tids_or_none(pid):
        tracer = tracer_process(pid, tid)
        if tracer and tracer != os.getpid():
            return tid, tracer
    return None


def tracer_process(pid: int, tid: Optional[int] = None) -> int:
    """The process tracing a thread (0: none). TracerPid names the tracer *thread*; this is its process."""
    tracer = int(read_status(pid, tid).get("TracerPid", "0") or 0)
    if not tracer:
        return 0
    return int(read_status(tracer).get("Tgid", tracer) or tracer)


def traced_refusal(pid: int, tracer: int, tid: Optional[int] = None) -> TargetRefused:
    try:
        with open(f"/proc/{tracer}/comm", "rb") as f:
            name = f.read().decode("utf-8", "backslashreplace").strip()
    except OSError:
        name = "?"
    who = f"process {pid}" if tid is None or tid == pid else f"thread {tid} of process {pid}"
    return TargetRefused(
        f"{who} is already being traced by process {tracer} ({name}); a thread has one tracer"
        f" at a time. Detach that debugger first, or take the dump from it (gdb: `gcore`)",
        pid=pid,
        reason="traced",
        tracer_pid=tracer,
        tid=tid if tid is not None else pid,
    )


def _has_cap_sys_ptrace() -> bool:
    return has_capability(19)  # CAP_SYS_PTRACE


def _our_stuck_readers(pid: int) -> List[int]:
    """Reader children of ours (core/far.py) stuck in a read of *pid*'s memory: only if that module is in
    use at all (a dump that read no page of a file on a FUSE, NFS or CIFS mount never loads it)."""
    far = sys.modules.get("dumplib._linux.core.far")
    return [] if far is None else list(far.stuck_readers(pid))
