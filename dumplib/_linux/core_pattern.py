"""Installing the core_pattern pipe handler: kernel.core_pattern, core_pipe_limit and a sysctl.d file,
each backed up byte for byte first and put back exactly by uninstall."""
from __future__ import annotations

import sys

# A check that survives `python -O` (an assert alone is stripped there); the assert after it is for
# the type checker, which narrows on it.
if not sys.platform.startswith("linux"):
    raise ImportError("dumplib._linux is Linux only")
assert sys.platform.startswith("linux")

import base64
import importlib
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InvalidArgument
from .coredump_handler import CONFIG, LOG, RATE, SPECIFIERS, read_private_json, write_private_json
from .host import write_new_file

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
CORE_PIPE_LIMIT = "/proc/sys/kernel/core_pipe_limit"
SUID_DUMPABLE = "/proc/sys/fs/suid_dumpable"
DEFAULT_STATE_DIR = "/var/lib/dumplib/postmortem"
#: After systemd's 50-coredump.conf, so at boot ours is the core_pattern that stays.
DEFAULT_SYSCTL_FILE = "/etc/sysctl.d/90-dumplib-postmortem.conf"
BACKUP = "backup.json"
HANDLER = "handler"
#: The kernel keeps at most 127 bytes of core_pattern (CORENAME_MAX_SIZE).
PATTERN_MAX = 127
#: Crashes piped at once; non-zero also makes the kernel wait for the handler, so /proc/PID stays
#: readable while it runs (systemd-coredump sets the same).
PIPE_LIMIT = 16
#: Who else may hold core_pattern, by the start of the command.
KNOWN = (("systemd-coredump", b"systemd-coredump"), ("apport", b"apport"), ("abrt", b"abrt-hook-ccpp"))


class PostmortemRefused(InvalidArgument):
    """install/uninstall refused: what is in place, or what was given, is not safe to act on."""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_sysctl(path: str, value: bytes) -> None:
    with open(path, "wb") as f:
        f.write(value)


def kernel_has_pidfd() -> bool:
    """%F (a pidfd for the crashed process, fd 3 of the handler) exists from Linux 6.16."""
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (6, 16)
    except (IndexError, ValueError):
        return False


def _trusted_path(path: str, what: str, *, durable: bool = False) -> None:
    """Refuse *path* unless root owns it and every directory above it, none writable by others (sticky
    aside). *durable*: a sticky one above it is refused too (the state directory, whose handler the
    kernel runs as root at every crash: a sticky /tmp may be emptied by a reboot or a cleaner, and
    then anyone may make the path again, with their own handler in it; nothing dumplib checks at the
    crash can help, since the kernel runs the file before any of dumplib's code)."""
    real = os.path.realpath(path)
    parts = real.split("/")
    for i in range(len(parts), 0, -1):
        here = "/".join(parts[:i]) or "/"
        st = os.stat(here)
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and here != real
        if durable and sticky:
            raise PostmortemRefused(
                f"{what} {real} is under {here}, a directory anyone can add to (sticky, mode"
                f" {stat.S_IMODE(st.st_mode):o}): a reboot or a cleaner may empty it, and anyone could then"
                " make the path again with a handler of their own, which the kernel would run as root. Use a"
                " directory only root can write all the way up (the default: /var/lib/dumplib/postmortem)",
                argument=what, value=real)
        if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky):
            raise PostmortemRefused(
                f"{what} {real} is not safe for a handler the kernel runs as root: {here} is owned by uid"
                f" {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}. Use a directory only root can write",
                argument=what, value=real)


def sticky_above(path: str) -> Optional[str]:
    """The nearest directory above *path* that anyone can add to (sticky, like /tmp), or None."""
    here = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            if os.stat(here).st_mode & stat.S_ISVTX:
                return here
        except OSError:
            return None
        if here == "/":
            return None
        here = os.path.dirname(here)


def _trusted_tree(top: str, what: str) -> None:
    """_trusted_path for *top* and everything under it: the handler imports each file as root."""
    _trusted_path(top, what)
    for here, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                _trusted_path(path, what)  # where it leads must be root's too
            elif st.st_uid != 0 or st.st_mode & 0o022:
                raise PostmortemRefused(
                    f"{what} holds {path}, owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}: the"
                    " handler runs it as root at every crash. Make every file there root's, writable by root only",
                    argument=what, value=path)




#: The store retention key of the handler's dumps (_egress/signing.py), in the state directory.
EGRESS_KEY = "egress-key"
#: The environment the kernel gives a core_pattern handler (call_usermodehelper): nothing else.
KERNEL_ENV = {"HOME": "/", "TERM": "linux", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}


def site_dirs(modules: Tuple[str, ...], what: str, dirs: List[str]) -> None:
    """Add to *dirs* the directories *modules* were imported from here (ImportError if one is missing),
    each checked to be root's only, all of it, once (one venv's site-packages holds most of them, and
    the check walks every file): the handler runs the real interpreter (not a venv's launcher, whose
    site-packages it would not see) and imports them from there as root at every crash."""
    for name in modules:
        module = importlib.import_module(name)
        top = os.path.realpath(str(module.__file__))
        for _ in name.split("."):
            top = os.path.dirname(top)
        top = os.path.dirname(top)  # the directory the top package is in
        if top not in dirs:
            _trusted_tree(top, what)
            dirs.append(top)


def _check_url(url: str, env_file: Optional[str], sdk_dirs: List[str]) -> str:
    """A URL --dir made a prefix (dumplib names each crash's object), its extra's packages root's only
    (the handler imports them as root at every crash: their directories are added to *sdk_dirs*), the
    environment file root's only."""
    from ..remote import parse_url
    from ..errors import RemoteDestinationError

    target = parse_url(url)  # InvalidDumpPath: a query string, a credential, not a store
    if not target.is_prefix:
        target = target.with_key(target.key + "/")
    # The handler runs the real interpreter (not a venv's launcher), so the directories the SDK and its
    # dependencies were found in go on its sys.path: each is imported from as root at every crash, so
    # each must be root's only, all of it.
    modules = ("boto3", "botocore", "s3transfer") if target.store == "s3" else ("azure.storage.blob", "azure.core")
    try:
        site_dirs(modules, f"the {target.store} SDK's site directory", sdk_dirs)
    except ImportError:
        from ..remote import EXTRAS

        raise RemoteDestinationError(f"dumping to {target.display()} needs the {target.store} extra:"
                                     f" pip install '{EXTRAS[target.store]}'", url=target.display(),
                                     store=target.store, reason="no-extra") from None
    if env_file is not None:
        from .coredump_handler import Refused, read_env_file

        if not os.path.isabs(env_file):
            raise InvalidArgument(f"--env-file {env_file}: give an absolute path (the kernel runs the handler in /)",
                                  argument="env_file", value=env_file)
        from .coredump_handler import root_only_dir

        try:
            read_env_file(env_file)
            # The check every crash makes (no symlink on the way, root's, writable by root only), made
            # here first: a path that passes install must pass at the crash.
            root_only_dir(os.path.dirname(env_file))
        except Refused as exc:
            raise PostmortemRefused(exc.why, argument="env_file", value=env_file) from None
        _trusted_path(os.path.dirname(env_file), "the environment file's directory")
    return target.display()


def handler_path(package_root: str, sdk_dirs: List[str]) -> str:
    """The handler's sys.path line (and its probe's). It runs ``python -IS``: isolated, and without the
    site module, so sys.path is the standard library alone, with no site-packages and no .pth file run
    as root; then the dumplib package's directory and its dependencies' (each checked root's only, all
    of it), after the standard library: a module of a site directory named like one of the standard
    library's (a backport) never shadows it."""
    return f"sys.path += {[package_root] + [d for d in sdk_dirs if d != package_root]!r}\n"


def _egress_probe(url: str, env_file: Optional[str], package_root: str, sdk_dirs: List[str], python: str,
                  key: str) -> None:
    """Probe the store the way the handler will reach it: the handler's interpreter, the kernel's
    environment plus the file's, nothing of this shell's; and make the retention key. A refusal is the
    store's RemoteDestinationError (exit 14), before anything is registered."""
    import json
    import subprocess

    from ..errors import RemoteDestinationError

    code = ("import json, os, sys\n" + handler_path(package_root, sdk_dirs) +
            "from dumplib._linux.coredump_handler import egress_environment\n"
            "from dumplib._egress import check_destination\n"
            "from dumplib.errors import DumpError\n"
            "try:\n"
            f"    egress_environment({{'env_file': {env_file!r}, 'egress_key': {key!r}}})\n"
            "    check_destination(sys.argv[1])\n"
            "except DumpError as e:\n"
            "    print(json.dumps(dict(e.details(), message=e.message), default=str)); sys.exit(14)\n"
            "except ImportError as e:\n"
            "    print(json.dumps({'reason': 'no-extra', 'message': 'the handler\\'s interpreter (python -IS, the'\n"
            "          ' directories install found) cannot import ' + str(e.name)})); sys.exit(14)\n")
    try:
        done = subprocess.run([python, "-IS", "-c", code, url], env=dict(KERNEL_ENV), capture_output=True, text=True,
                              timeout=120, cwd="/")
    except subprocess.TimeoutExpired:
        raise RemoteDestinationError(f"probing {url} from the handler's environment did not end in 120 s",
                                     url=url, store="s3" if url.startswith("s3:") else "azure",
                                     reason="unreachable") from None
    if done.returncode != 0:
        try:
            facts = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            # Not our JSON: the probe itself failed. Only the exception's type is said: its text may
            # quote a variable of the env file (an SDK's ValueError names a bad endpoint).
            last = (done.stderr.strip().splitlines() or [""])[-1].split(":", 1)[0][:100]
            facts = {"message": f"the probe from the handler's environment failed (exit {done.returncode})"
                                + (f": {last}" if all(w.isidentifier() for w in last.split(".")) else "")}
        raise RemoteDestinationError(f"from the crash handler's environment (the kernel's, plus --env-file):"
                                     f" {facts.get('message', 'the probe failed')}", url=facts.get("url") or url,
                                     store=facts.get("store"), reason=facts.get("reason") or "unreachable",
                                     service_code=facts.get("service_code"), status=facts.get("status"))
    from .._egress.signing import make_key
    from .host import LinuxHost

    make_key(key, LinuxHost())


def our_pattern(state_dir: str, pidfd: bool) -> bytes:
    """``|STATE/handler F%F P%P ...``: every specifier tagged (see coredump_handler.SPECIFIERS)."""
    words = [k + v for k, v in SPECIFIERS.items() if pidfd or k != "F"]
    return ("|" + os.path.join(state_dir, HANDLER) + " " + " ".join(words)).encode()


def install(directory: str, *, kind: str = "mini", fit: bool = False, compress: Optional[str] = None,
            keep: Optional[int] = None, max_total: Optional[int] = None, min_free: Optional[int] = None,
            max_per: Optional[str] = "10:3", max_exes_per_user: Optional[int] = 16, max_seconds: float = 120.0,
            pidfd: Optional[bool] = None, env_file: Optional[str] = None,
            state_dir: str = DEFAULT_STATE_DIR, sysctl_file: str = DEFAULT_SYSCTL_FILE) -> Dict[str, Any]:
    """Register the handler in kernel.core_pattern (and the sysctl.d file), backing up what was there.

    *directory* may be a URL prefix (docs/egress.md): see _check_url."""
    from ..compression import parse_codec
    from ..kinds import DumpKind
    from ..limits import check_limits, parse_max_per

    if os.geteuid() != 0:
        raise PostmortemRefused("installing a core_pattern handler needs root", argument="user", value=os.geteuid())
    from .interpreter import not_an_interpreter, python_interpreter

    if python_interpreter() is None:  # the kernel would run that program, as root, at every crash
        raise PostmortemRefused(f"no handler can be installed from here: {not_an_interpreter()}. Install it with"
                                " the `dumplib` command, or from a python interpreter", argument="python",
                                value=sys.executable)
    kind_value = DumpKind.parse(kind).value
    parse_codec(compress)
    check_limits(keep=keep, max_total=max_total, min_free=min_free)

    rate = parse_max_per(max_per)
    if max_exes_per_user is not None and max_exes_per_user < 1:
        raise InvalidArgument(f"--max-exes-per-user {max_exes_per_user}: give at least 1",
                              argument="max_exes_per_user", value=max_exes_per_user)
    if os.path.islink(sysctl_file):
        # Renaming our file over it would cut the link; a copy put back later would not be the link.
        raise PostmortemRefused(f"{sysctl_file} is a symlink (to {os.readlink(sysctl_file)}); give --sysctl-file"
                                " a file of its own", argument="sysctl_file", value=sysctl_file)
    # core_pattern and the handler name the real directory: a symlink on the way is someone's to repoint.
    state_dir = os.path.realpath(state_dir)
    from ..remote import is_remote

    remote = is_remote(directory)
    # psutil is dumplib's one dependency (the guard's refusals use it): wherever pip put it (a venv), the
    # handler's interpreter must find it too.
    sdk_dirs: List[str] = []
    site_dirs(("psutil",), "psutil's site directory", sdk_dirs)
    if compress == "zstd" and sys.version_info < (3, 14):
        # zstd before Python 3.14 is the zstandard package (dumplib's zstd extra): wherever pip put it
        # (a venv), the handler's interpreter must find it, or every crash would fail to compress.
        try:
            site_dirs(("zstandard",), "the zstandard package's site directory", sdk_dirs)
        except ImportError:
            raise InvalidArgument("--compress zstd needs the zstandard package (pip install 'dumplib[zstd]') where"
                                  " dumplib is installed, or use --compress gzip", argument="compress",
                                  value=compress) from None
    if remote:
        directory = _check_url(directory, env_file, sdk_dirs)
    elif env_file is not None:
        raise InvalidArgument("--env-file is for a URL --dir (store credentials); a local directory needs none",
                              argument="env_file", value=env_file)
    elif not os.path.isdir(directory):
        raise PostmortemRefused(f"{directory} is not an existing directory; create it (owned by root, mode 700)",
                                argument="dir", value=directory)
    else:
        directory = os.path.realpath(directory)
        _trusted_path(directory, "the dump directory")
    pidfd = kernel_has_pidfd() if pidfd is None else pidfd
    current = _read(CORE_PATTERN).rstrip(b"\n")
    pattern = our_pattern(state_dir, pidfd)
    if len(pattern) > PATTERN_MAX:
        raise PostmortemRefused(f"the core_pattern would be {len(pattern)} bytes, over the kernel's {PATTERN_MAX};"
                                " choose a shorter --state-dir", argument="state_dir", value=state_dir)
    if current.startswith(b"|" + os.path.join(state_dir, HANDLER).encode()) or read_private_json(
            os.path.join(state_dir, BACKUP)):
        raise PostmortemRefused(f"dumplib's handler is already installed from {state_dir}; uninstall it first",
                                argument="state_dir", value=state_dir)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    python = os.path.realpath(sys.executable)
    _trusted_path(python, "the Python interpreter")
    _trusted_tree(os.path.join(package_root, "dumplib"), "the dumplib package")
    existing = state_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    _trusted_path(existing, "the state directory", durable=True)  # before anything is made there
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)
    _trusted_path(state_dir, "the state directory", durable=True)
    egress_key: Optional[str] = None
    if remote:
        egress_key = os.path.join(state_dir, EGRESS_KEY)
        _egress_probe(directory, env_file, package_root, sdk_dirs, python, egress_key)
    try:
        old_sysctl: Optional[bytes] = _read(sysctl_file)
    except FileNotFoundError:
        old_sysctl = None
    backup: Dict[str, Any] = {
        "core_pattern": base64.b64encode(current).decode(),
        "core_pipe_limit": _read(CORE_PIPE_LIMIT).strip().decode(),
        "sysctl_file": sysctl_file,
        "sysctl_content": None if old_sysctl is None else base64.b64encode(old_sysctl).decode(),
        "sysctl_stat": None if old_sysctl is None else _owner_mode(sysctl_file),
        "pattern": pattern.decode(),
        "previous_handler": _who(current),
    }
    # What the handler runs or imports as root, under a directory anyone can add to: root's now, but a
    # reboot or a cleaner may empty /tmp, and anyone could then put code there. Not refused (a checkout
    # under /tmp is how tests run): said at install and by every status.
    transient = [p for p in [python, package_root, *sdk_dirs] if sticky_above(p)]
    config = {"dir": directory, "kind": kind_value, "fit": fit, "compress": compress, "keep": keep,
              "max_total": max_total, "min_free": min_free, "max_per": rate, "max_exes_per_user": max_exes_per_user,
              "max_seconds": max_seconds,
              "pidfd": pidfd, "env_file": env_file, "egress_key": egress_key, "transient_paths": transient}
    handler = os.path.join(state_dir, HANDLER)
    script = (f"#!{python} -IS\n# dumplib's core_pattern handler (`dumplib postmortem uninstall` removes it)\n"
              "import sys\n" + handler_path(package_root, sdk_dirs)
              + "from dumplib._linux.coredump_handler import main\n"
              f"sys.exit(main(sys.argv[1:], {state_dir!r}))\n")
    write_private_json(os.path.join(state_dir, BACKUP), backup)
    try:
        write_private_json(os.path.join(state_dir, CONFIG), config)
        _write_file(handler, script.encode(), 0o700)
        limit = max(int(backup["core_pipe_limit"] or 0), PIPE_LIMIT) if backup["core_pipe_limit"] != "0" else PIPE_LIMIT
        _write_file(sysctl_file, _sysctl_text(pattern, limit), 0o644, replace=True)
        _write_sysctl(CORE_PIPE_LIMIT, str(limit).encode())
        _write_sysctl(CORE_PATTERN, pattern)
    except BaseException:
        _restore(state_dir, backup, force=True)
        raise
    return status(state_dir=state_dir)


def _sysctl_text(pattern: bytes, limit: int) -> bytes:
    return (b"# Written by `dumplib postmortem install`; `dumplib postmortem uninstall` puts back what was here.\n"
            b"kernel.core_pattern = " + pattern + b"\nkernel.core_pipe_limit = " + str(limit).encode() + b"\n")


def _owner_mode(path: str) -> List[int]:
    st = os.stat(path)
    return [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]


def _write_file(path: str, data: bytes, mode: int, replace: bool = False,
                owner: Optional[Tuple[int, int]] = None) -> None:
    """*path* made new (exclusive, no symlink) under a temporary name, then renamed into place."""
    try:
        write_new_file(path, data, mode, replace=replace, owner=owner)
    except FileExistsError:
        raise PostmortemRefused(f"{path} exists already", argument="path", value=path) from None


def uninstall(*, state_dir: str = DEFAULT_STATE_DIR, force: bool = False) -> Dict[str, Any]:
    """Put back the core_pattern, core_pipe_limit and sysctl.d file install found; refuse if the
    registration now in place is not dumplib's (someone changed it since) unless *force*."""
    if os.geteuid() != 0:
        raise PostmortemRefused("uninstalling needs root", argument="user", value=os.geteuid())
    state_dir = os.path.realpath(state_dir)
    backup = read_private_json(os.path.join(state_dir, BACKUP))
    if backup is None:
        raise PostmortemRefused(f"no dumplib installation in {state_dir} (no backup there); nothing changed",
                                argument="state_dir", value=state_dir)
    current = _read(CORE_PATTERN).rstrip(b"\n")
    if current != backup["pattern"].encode() and not force:
        raise PostmortemRefused(
            f"kernel.core_pattern is now {current.decode('utf-8', 'replace')!r}, not dumplib's: someone registered"
            " another handler since; nothing changed (--force puts back what was there before dumplib anyway)",
            argument="core_pattern", value=current.decode("utf-8", "replace"))
    _restore(state_dir, backup, force=force)
    return status(state_dir=state_dir)


def _restore(state_dir: str, backup: Dict[str, Any], force: bool) -> None:
    # An empty pattern is written as a lone newline (writing nothing would change nothing).
    _write_sysctl(CORE_PATTERN, base64.b64decode(backup["core_pattern"]) or b"\n")
    _write_sysctl(CORE_PIPE_LIMIT, str(backup["core_pipe_limit"]).encode())
    path = backup["sysctl_file"]
    old = backup.get("sysctl_content")
    if old is not None:
        uid, gid, mode = backup.get("sysctl_stat") or (0, 0, 0o644)
        _write_file(path, base64.b64decode(old), mode, replace=True, owner=(uid, gid))
    else:
        try:
            ours = _read(path).startswith(b"# Written by `dumplib postmortem install`")
        except FileNotFoundError:
            ours = False
        if ours:
            os.unlink(path)
    for name in (HANDLER, CONFIG, RATE, "rate.lock", BACKUP):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass


def _who(pattern: bytes) -> Optional[str]:
    if not pattern.startswith(b"|"):
        return None
    for name, marker in KNOWN:
        if marker in pattern.split(b" ")[0]:
            return name
    return "another pipe handler"


def status(*, state_dir: str = DEFAULT_STATE_DIR) -> Dict[str, Any]:
    """What is registered now (dumplib's handler or someone else's), the backup, and the kernel's settings."""
    state_dir = os.path.realpath(state_dir)
    current = _read(CORE_PATTERN).rstrip(b"\n")
    backup = read_private_json(os.path.join(state_dir, BACKUP))
    ours = backup is not None and current == backup["pattern"].encode()
    out: Dict[str, Any] = {
        "platform": "linux",
        "core_pattern": current.decode("utf-8", "replace"),
        "registered": "dumplib" if ours else (_who(current) or "the kernel writes core files itself"),
        "installed": backup is not None,
        "config": read_private_json(os.path.join(state_dir, CONFIG)) if backup is not None else None,
        "backup": None if backup is None else {
            "core_pattern": base64.b64decode(backup["core_pattern"]).decode("utf-8", "replace"),
            "core_pipe_limit": backup["core_pipe_limit"],
            "sysctl_file": backup["sysctl_file"],
            "sysctl_file_existed": backup.get("sysctl_content") is not None,
            "previous_handler": backup.get("previous_handler"),
        },
        "core_pipe_limit": _read(CORE_PIPE_LIMIT).strip().decode(),
        "suid_dumpable": _read(SUID_DUMPABLE).strip().decode(),
        "kernel_pidfd": kernel_has_pidfd(),
        "state_dir": state_dir,
        "log": os.path.join(state_dir, LOG),
    }
    warnings = []
    if backup is not None and not ours:
        warnings.append("dumplib's handler is installed but core_pattern was changed since by someone else;"
                        " uninstall refuses until it is dumplib's again (or use --force)")
    transient = (out["config"] or {}).get("transient_paths") or []
    if transient:
        warnings.append(f"the handler runs or imports as root {', '.join(transient)}, under a directory anyone can"
                        " add to (sticky, like /tmp): a reboot or a cleaner may empty it, and anyone could then put"
                        " code there. Install dumplib (and its dependencies) where only root can write all the way"
                        " up, and install the handler again")
    if warnings:
        out["warning"] = "; ".join(warnings)
    return out
