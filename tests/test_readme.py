"""The README's commands work as printed: each parses with the CLI, names files that exist, and the quick start
installs only what the demo needs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from conftest import ROOT
from inferno_mip.cli import _parser

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _shell_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _cli_commands() -> list[list[str]]:
    commands = []
    for line in _shell_commands():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
            words.pop(0)
        if words and words[0] == "inferno-mip":
            commands.append(words[1:])
    return commands


def test_readme_has_cli_commands():
    assert len(_cli_commands()) >= 15


@pytest.mark.parametrize("argv", _cli_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_readme_command_parses_and_names_existing_inputs(argv):
    args = _parser().parse_args(argv)  # argparse exits (SystemExit) on an unknown flag or bad value
    for name in ("path", "trace"):
        value = getattr(args, name, None)
        if value is not None:
            assert (ROOT / value).exists(), f"{' '.join(argv)}: {value} does not exist"


def test_quick_start_activates_the_venv_before_using_the_command():
    quick = README[README.index("## Quick start"):README.index("## Command line")]
    assert quick.index(". .venv/bin/activate") < quick.index("inferno-mip solve")


def _make_plan(target: str) -> str:
    """What `make TARGET` would run (no directory lines, which make adds when it runs under make)."""
    argv = ["make", "--no-print-directory", "-n", "-B", target]
    return subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_demo_installs_no_test_extras_and_says_how_to_activate():
    plan = _make_plan("demo")
    assert "pip install --quiet -e ." in plan
    assert "[test" not in plan and "ray" not in plan
    assert ". .venv/bin/activate" in plan.splitlines()[-1]
    tests = _make_plan("test")
    assert "'.[test]'" in tests and "-m \"not slow\"" in tests


def test_license_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "Apache-2.0"$', pyproject, flags=re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, flags=re.M)
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
