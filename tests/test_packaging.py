"""models/ and solvers/ ship inside the wheel as inferno_mip.models and inferno_mip.solvers."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


@pytest.mark.slow  # builds a wheel
def test_wheel_maps_models_and_solvers(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("inferno_mip-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("inferno_mip/models/allocation.py", "inferno_mip/solvers/highs.py", "inferno_mip/solvers/greedy.py",
                   "inferno_mip/queueing/perf.py", "inferno_mip/tuner/ekf.py", "inferno_mip/tuner/observers/online.py",
                   "inferno_mip/cli.py"):
        assert module in names, module
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_package_imports_mapped_subpackages():
    import inferno_mip.models.allocation
    import inferno_mip.solvers

    assert "highs" in inferno_mip.solvers.SOLVERS
    assert inferno_mip.models.allocation.build is not None
