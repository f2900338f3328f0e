"""Start-up hygiene: importing the package or building the CLI loads no heavy library; backends load on use."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("numpy", "scipy", "pandas", "pydantic", "yaml", "highspy", "ortools", "pyomo", "matplotlib", "fastapi",
         "uvicorn", "httpx", "ray", "tqdm", "statsmodels", "prometheus_client")
BACKENDS = ("highspy", "ortools", "pyomo", "matplotlib", "fastapi", "uvicorn", "scipy", "pandas", "ray")


def _loaded_after(code: str) -> set[str]:
    """Top-level packages among HEAVY that a fresh interpreter holds after running `code`."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_package_loads_nothing_heavy():
    assert _loaded_after("import inferno_mip") == set()


def test_cli_parser_with_every_subcommand_loads_nothing_heavy():
    assert _loaded_after("from inferno_mip.cli import _parser\n_parser()") == set()


def test_greedy_solve_loads_no_backend():
    loaded = _loaded_after("import inferno_mip\ninferno_mip.solve('scenarios/inferno-small', solver='greedy')")
    assert {"numpy", "pydantic"} <= loaded  # the probe does see what is used
    assert loaded.isdisjoint(BACKENDS), loaded & set(BACKENDS)


def test_public_names_resolve_lazily():
    import inferno_mip
    from inferno_mip.solution import Solution

    assert inferno_mip.Solution is Solution
    assert set(inferno_mip.__all__) <= set(dir(inferno_mip))


def test_tuner_merge_is_the_function_after_its_module_is_imported():
    import inferno_mip.tuner.merging  # noqa: F401  (the submodule first, then the name)
    from inferno_mip.tuner import merge

    assert callable(merge) and merge.__module__ == "inferno_mip.tuner.merging"


def test_python_m_and_version_match_package_metadata():
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "inferno_mip", "--version"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == f"inferno-mip {version('inferno-mip')}"
    helped = subprocess.run([sys.executable, "-m", "inferno_mip", "--help"], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    for command in ("solve", "compare", "generate", "bench", "tune", "analyze", "size"):
        assert command in helped.stdout


def test_solver_registry_names_without_importing():
    out = subprocess.run([sys.executable, "-c", "import sys, inferno_mip.solvers as s; "
                          "print(sorted(s.SOLVERS), 'highspy' in sys.modules, 'pyomo' in sys.modules)"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.split("]")[1].split() == ["False", "False"]
    assert "'cpsat', 'greedy', 'highs', 'pyomo', 'unlimited'" in out.stdout


def test_command_map_names_what_each_module_registers():
    import argparse
    from importlib import import_module

    from inferno_mip.cli import COMMAND_MODULES

    for module, commands in COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        import_module(module, "inferno_mip").register(sub)
        assert tuple(sub.choices) == commands, module


def test_a_command_line_loads_only_its_own_command_module():
    from inferno_mip.cli import _parser

    assert set(_parser(["simulate", "--help"])._subparsers._group_actions[0].choices) == {
        "solve", "compare", "generate", "bench", "simulate"}
    assert set(_parser(["solve", "x"])._subparsers._group_actions[0].choices) == {
        "solve", "compare", "generate", "bench"}
    everything = set(_parser(["no-such-command"])._subparsers._group_actions[0].choices)
    assert {"tune", "serve-tuner", "analyze", "size", "control", "operator", "serve-optimizer"} <= everything
    assert everything == set(_parser([])._subparsers._group_actions[0].choices)
