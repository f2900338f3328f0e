from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

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
