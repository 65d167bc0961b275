"""The suite runs once, in one mode (CI: in a venv, as the README tells a person to). This proves the
other mode too, on the tests that once held in only one of them: the launcher tests start the real
interpreter behind sys.executable, outside any venv, and must still find dumplib's dependencies."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The tests that start interpreters outside the venv (the four that failed in one).
SUBSET = ["tests/unit/test_targets.py", "-k", "launcher or ancestor or caller"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher tests name processes by symlink")
def test_launcher_tests_pass_in_the_mode_the_suite_is_not_running_in(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("VIRTUAL_ENV", None)
    here = sysconfig.get_path("purelib")
    in_venv = sys.prefix != sys.base_prefix
    if in_venv:
        # A bare interpreter with the packages installed for it: the base interpreter, this venv's
        # site-packages added as a site directory (so its .pth files, an editable install's among them, work).
        python = getattr(sys, "_base_executable", None) or os.path.realpath(sys.executable)
        prelude = f"import site; site.addsitedir({here!r}); "
    else:
        # A venv (no pip, nothing installed) that sees this interpreter's packages through a .pth file.
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
        python, prelude = str(venv / "bin" / "python"), ""
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
        (Path(site) / "host.pth").write_text(f"import site; site.addsitedir({here!r})\n")

    def run(code: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", prelude + code, *args], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=600)

    probe = run("import sys, psutil; print(sys.prefix != sys.base_prefix)")
    assert probe.stdout.strip() == str(not in_venv), probe  # it really is the other mode
    done = run("import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))", "-q", "-p", "no:cacheprovider", *SUBSET)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.environ.get("CI") != "true",
                    reason="CI's Linux run is .ci/run's; elsewhere the suite may run in either mode")
def test_ci_runs_the_suite_in_a_venv_as_the_readme_tells_a_person():
    assert sys.prefix != sys.base_prefix, f"{sys.executable} is not a venv's: .ci/run makes and activates .venv"
    assert os.path.realpath(os.environ.get("VIRTUAL_ENV", "")) == os.path.realpath(sys.prefix)  # activated
