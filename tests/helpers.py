"""Shared test helpers. `CI=true` turns "this machine lacks X" skips into failures."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip loudly when a tool is missing here; in CI a missing tool is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(f"NOT RUN: {reason}")


def leftovers(directory: "os.PathLike[str] | str") -> List[str]:
    """dumplib temporary files left in *directory* (there must never be any after a call returns)."""
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".dumplib-"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False, options: str = "") -> Iterator[Path]:
    """A real tmpfs volume of *size* mounted at *path* for the duration (root only; CI runs as root)."""
    require(os.geteuid() == 0, "mounting a tmpfs volume needs root")
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "") + (f",{options}" if options else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def ext4_volume(path: Path, size: str, *, leave_free: "int | None" = None) -> Iterator[Path]:
    """A real ext4 volume of *size* on a sparse loop-mounted image, mounted at *path* (root only).

    With *leave_free*, a preallocated file takes all but that many bytes: fallocate marks the blocks
    used without writing them, so a 40 GiB volume that is nearly full costs almost nothing here.
    """
    require(os.geteuid() == 0, "mounting a loop device needs root")
    require(shutil.which("mkfs.ext4") is not None, "mkfs.ext4 is not installed (apt-get install e2fsprogs)")
    image = path.with_name(path.name + ".img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-T", "largefile4", str(image)], check=True)
    path.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True)
    try:
        if leave_free is not None:
            st = os.statvfs(path)
            fd = os.open(path / "filler", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - leave_free)
            finally:
                os.close(fd)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
        image.unlink()


_STATE_BASE = Path("/var/lib/dumplib-tests")
_state_session: List[Path] = []


def private_state(tmp_path: Path, name: str = "state") -> Path:
    """A postmortem state directory for *tmp_path*'s test, where install accepts one: under directories
    only root can write all the way up. pytest's tmp_path is under /tmp, which is sticky: the kernel would
    run a handler there that anyone could make again after a reboot, so install refuses it. Removed when
    the test process ends."""
    import atexit
    import hashlib
    import tempfile

    if not _state_session:
        _STATE_BASE.mkdir(mode=0o700, exist_ok=True)
        _STATE_BASE.chmod(0o700)
        _state_session.append(Path(tempfile.mkdtemp(prefix="session-", dir=_STATE_BASE)))
        atexit.register(shutil.rmtree, _state_session[0], True)
    here = _state_session[0] / hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    here.mkdir(mode=0o700, exist_ok=True)
    return here / name
