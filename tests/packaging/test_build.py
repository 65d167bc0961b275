"""The sdist and the wheel: built without a warning, offline from the sdist, holding what they promise."""
from __future__ import annotations

import email.parser
import re
import tarfile
import zipfile
from typing import List

import dumplib
from dumplib.compression import ZSTD_REQUIREMENT
from pkgrig import ROOT


def _names(dists) -> "tuple[List[str], List[str]]":  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(dists.wheel) as whl:
        wheel = whl.namelist()
    with tarfile.open(dists.sdist) as tar:
        sdist = tar.getnames()
    return wheel, sdist


def test_sdist_and_wheel_build_offline_without_a_warning(dists):
    # PYTHONWARNINGS=error made any Python warning fatal; setuptools also prints some it does not raise.
    assert not re.search(r"warn|deprecat", dists.log, re.I), dists.log
    assert "Successfully built" in dists.log and dists.sdist.name in dists.log and dists.wheel.name in dists.log
    # The wheel was built from the sdist, not from the checkout: `build` says so.
    assert re.search(r"Building wheel from sdist", dists.log), dists.log


def test_wheel_holds_the_packages_py_typed_and_license_and_no_tests(dists):
    wheel, _ = _names(dists)
    version = dumplib.__version__
    info = f"dumplib-{version}.dist-info"
    assert dists.wheel.name == f"dumplib-{version}-py3-none-any.whl"
    assert "dumplib/py.typed" in wheel
    assert f"{info}/licenses/LICENSE" in wheel
    assert "dumplib_cli/app.py" in wheel and "dumplib_cli/__main__.py" in wheel
    tops = {name.split("/", 1)[0] for name in wheel}
    assert tops == {"dumplib", "dumplib_cli", info}, tops
    assert not [n for n in wheel if re.search(r"(^|/)(tests?|conftest)[/._]", n)], wheel


def test_build_system_asks_for_a_setuptools_that_reads_spdx_licenses():
    # setuptools 77.0 is the first to take `license = "MIT"` and `license-files` (its changelog, PEP 639);
    # with an older one picked from a looser pin, pip's isolated build would refuse the project table.
    pyproject = (ROOT / "pyproject.toml").read_text()
    requires = re.search(r"^\[build-system\]\n(?:#.*\n)*requires = \[(.*?)\]", pyproject, re.M)
    assert requires, pyproject
    setuptools = re.search(r'"setuptools>=(\d+)', requires.group(1))
    assert setuptools and int(setuptools.group(1)) >= 77, requires.group(1)


def test_wheel_metadata_is_current(dists):
    with zipfile.ZipFile(dists.wheel) as whl:
        meta = email.parser.Parser().parsestr(whl.read(f"dumplib-{dumplib.__version__}.dist-info/METADATA").decode())
        entry_points = whl.read(f"dumplib-{dumplib.__version__}.dist-info/entry_points.txt").decode()
    assert float(meta["Metadata-Version"]) >= 2.4  # the first with License-Expression (PEP 639)
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None  # the deprecated free-text field is gone
    assert "dumplib = dumplib_cli.app:main" in entry_points
    requires = meta.get_all("Requires-Dist")
    # The zstd extra brings exactly what the missing-zstd error tells a user to install.
    assert [r for r in requires if "extra == \"zstd\"" in r] == [f'{ZSTD_REQUIREMENT}; extra == "zstd"'], requires
    assert "zstd" in meta.get_all("Provides-Extra")


def test_sdist_holds_what_the_wheel_is_built_from(dists):
    _, sdist = _names(dists)
    top = f"dumplib-{dumplib.__version__}"
    for name in ("pyproject.toml", "README.md", "LICENSE", "dumplib/py.typed", "cli/app.py", "PKG-INFO"):
        assert f"{top}/{name}" in sdist, name
