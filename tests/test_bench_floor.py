"""`benchmarks/fast.py floor`: each instance's stage MIPs recorded and proven again from their own optima."""

from __future__ import annotations

import re
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import fast  # noqa: E402


def test_floor_proves_every_recorded_mip_again_from_its_optimum(capsys):
    fast.main(["floor", "--servers", "12", "--cycles", "2", "--seeds", "0,1", "--sigma", "0.2"])
    out = capsys.readouterr().out
    runs = int(re.search(r"(\d+) HiGHS runs\n", out).group(1))
    rows = re.findall(r"^\| (\d) \| (\d) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert [(seed, cycle) for seed, cycle, *_ in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert runs > 0 and sum(int(r[2]) for r in rows) == runs
    assert all(float(as_run) <= float(whole) for *_, whole, as_run, _ in rows)  # HiGHS's share of each solve()
    assert "0 HiGHS runs not proven" in out and "; 0 of the others not proven again" in out
