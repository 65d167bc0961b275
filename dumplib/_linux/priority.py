"""Priorities raised for a block and put back: the work done while a target is stopped (backend.py's
copying thread; snapshot/clone.py's injected clone(), run in a target thread, and that thread's
autogroup)."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import errno
import os

from .proc.pidfiles import has_capability

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Optional


class _Raised:
    """A nice value at *nice* for the block, where that is the higher priority and allowed (CAP_SYS_NICE,
    or RLIMIT_NICE); never lowered. The value found comes back at the end of the block, or at restore()
    (idempotent). Subclasses say whose value it is (_get, _set; OSError when it cannot be read or set)."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self.before: Optional[int] = None
        #: Why the value found could not be put back (None: put back, or nothing to put back).
        self.failed: Optional[str] = None

    def _get(self) -> int:
        raise NotImplementedError

    def _set(self, nice: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> "_Raised":
        try:
            current = self._get()
            if current > self.nice:
                self._set(self.nice)
                self.before = current
        except (OSError, ValueError):  # EPERM without the right; ESRCH for a thread gone meanwhile
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Back to the value found (idempotent), unless another has set a value of its own meanwhile: that
        one is theirs to keep (putting ours back would undo it, even lower a priority they raised)."""
        before, self.before = self.before, None
        if before is None:
            return
        try:
            if self._get() == self.nice:
                self._set(before)
        except (OSError, ValueError) as exc:
            if getattr(exc, "errno", None) not in (errno.ESRCH, errno.ENOENT):  # gone: nothing to put back
                self.failed = f"{type(exc).__name__}: {exc}"


class raised(_Raised):
    """Thread *tid* at nice *nice* for the block (see _Raised). Nice weighs only within one autogroup
    (session) or cpu cgroup: the scheduler shares CPU between groups first (sched(7)); group_raised
    is the autogroup's."""

    def __init__(self, tid: int, nice: int) -> None:
        super().__init__(nice)
        self.tid = tid

    def _get(self) -> int:
        return os.getpriority(os.PRIO_PROCESS, self.tid)  # Linux: a tid names one thread

    def _set(self, nice: int) -> None:
        os.setpriority(os.PRIO_PROCESS, self.tid, nice)


class group_raised(_Raised):
    """The autogroup of process *pid* (its session's group, when the cpu controller puts the process in
    no cgroup of its own) at nice *nice* for the block (see _Raised): that nice weighs the whole group
    against the host's other groups, as a thread's nice weighs it inside its group (sched(7)
    "The autogroup feature"). Every process of the session shares the raise for the block. No effect,
    and nothing changed, where the kernel has no autogroups (no /proc/PID/autogroup, or it is empty
    for the root group); no effect where the process is in a cpu cgroup of its own (a systemd service
    with CPUWeight=, a container), though the value is still set and put back."""

    def __init__(self, pid: int, nice: int) -> None:
        super().__init__(nice)
        self.path = f"/proc/{pid}/autogroup"

    def __enter__(self) -> "_Raised":
        # Without CAP_SYS_ADMIN the kernel takes at most one autogroup write per 100 ms host-wide
        # (EAGAIN otherwise: proc_sched_autogroup_set_nice), so the put-back after a call of tens of
        # milliseconds would fail and leave the group raised for good: no raise at all then.
        return super().__enter__() if has_capability(CAP_SYS_ADMIN) else self

    def _get(self) -> int:
        # "/autogroup-ID nice N\n", written by the kernel (not by the process).
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            words = os.read(fd, 256).split()
        finally:
            os.close(fd)
        if len(words) != 3 or words[1] != b"nice":
            raise ValueError(f"{self.path}: no autogroup")
        return int(words[2])

    def _set(self, nice: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"%d" % nice)
        finally:
            os.close(fd)


#: CAP_SYS_ADMIN's bit in /proc/PID/status's CapEff (linux/capability.h).
CAP_SYS_ADMIN = 21
