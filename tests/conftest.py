from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

# CI gates on a fixed set of property-test examples, so that a run is reproducible; elsewhere every run draws anew.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


@pytest.fixture
def scenario_copy(tmp_path):
    """Copy a scenario folder into tmp_path; returns (folder, edit) where edit(file, fn) rewrites a JSON file."""

    copies = iter(range(1_000_000))

    def make(name: str = "inferno-small"):
        folder = tmp_path / f"{next(copies)}" / name
        shutil.copytree(SCENARIOS / name, folder)

        def edit(file: str, fn):
            path = folder / file
            data = json.loads(path.read_text())
            result = fn(data)
            path.write_text(json.dumps(data if result is None else result))

        return folder, edit

    return make
