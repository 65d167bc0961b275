"""Attacks on what mini and miniplus take for thread libraries (loaded objects' .bss, each thread's TLS).

A target chooses its .bss size and can write anything at its thread pointer: the core's size must follow
the pages present, and stay within the estimate the free-space guard trusts.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import dumplib
from linuxrig import build_source, gdb, run_target

pytestmark = pytest.mark.linux
HERE = Path(__file__).resolve().parent
MIB = 1 << 20


@pytest.fixture(scope="module")
def attack_exe(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("attack_mini"), HERE / "attack_mini_target.c", "-fno-stack-protector")


@pytest.mark.parametrize("kind", ["mini", "miniplus"])
def test_untouched_gib_bss_costs_nothing_and_reads_true(attack_exe, outdir, kind):
    with run_target([str(attack_exe), "bss"]) as t:
        est = dumplib.estimate(t.pid, kind)
        result = dumplib.create_dump(t.pid, outdir / f"bss-{kind}.core", kind)
        t.assert_running_untraced()
    size = os.stat(result.path).st_size
    assert est.bytes < 64 * MIB, est  # one touched page of a 1 GiB .bss
    assert size < 64 * MIB and size <= est.bytes, (size, est)
    out = gdb(str(attack_exe), result.path, f"x/1xb {t.info['touched']}", f"x/1xb {t.info['untouched']}")
    assert re.search(r":\s+0x42\n", out), out  # the touched byte is stored
    assert re.search(r":\s+0x00\n", out), out  # an untouched one reads as the zero it is


def test_forged_thread_pointer_and_dtv_stay_within_the_estimate(attack_exe, outdir):
    with run_target([str(attack_exe), "tls"]) as t:
        est = dumplib.estimate(t.pid, "mini")
        result = dumplib.create_dump(t.pid, outdir / "tls-mini.core", "mini")
        t.assert_running_untraced()
    size = os.stat(result.path).st_size
    # 16 MiB of forged dynamic blocks and a 1 MiB static one, all untouched: the estimate bounds what is written.
    assert size <= est.bytes, (size, est)
    assert size < 4 * MIB, size


def test_a_file_claimed_by_a_forged_link_map_node_is_not_taken_whole(attack_exe, outdir, tmp_path):
    big = tmp_path / "sparse"
    with open(big, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, no block allocated
    with run_target([str(attack_exe), "linkmap", str(big)]) as t:
        est = dumplib.estimate(t.pid, "mini")
        t.assert_running_untraced()
    assert est.bytes < 64 * MIB, est
