"""Start-up cost: CPU seconds (user + system) of short commands in a fresh interpreter.

Run from the repository root:  python -m benchmarks.startup [--repeat 5]
Prints the RESULTS.md "## Start-up" table: the median over repeats of each command's CPU time, from
``resource.getrusage(RUSAGE_CHILDREN)``, which a busy machine disturbs far less than wall time. The package is
byte-compiled first, as in a warm venv (an interpreter run with PYTHONDONTWRITEBYTECODE would otherwise compile
every module of it on every start).
"""

from __future__ import annotations

import argparse
import compileall
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "inferno_mip"]
COMMANDS = {
    "python -c pass (the interpreter alone)": [sys.executable, "-c", "pass"],
    "python -c 'import inferno_mip'": [sys.executable, "-c", "import inferno_mip"],
    "inferno-mip --help": CLI + ["--help"],
    "inferno-mip solve scenarios/inferno-small --solver greedy": CLI + ["solve", "scenarios/inferno-small",
                                                                        "--solver", "greedy"],
    "inferno-mip solve scenarios/inferno-large --solver greedy": CLI + ["solve", "scenarios/inferno-large",
                                                                        "--solver", "greedy"],
    "inferno-mip solve scenarios/inferno-small --solver highs": CLI + ["solve", "scenarios/inferno-small",
                                                                       "--solver", "highs"],
}


def cpu_seconds(argv: list[str]) -> float:
    """User + system CPU seconds of one run of `argv` (its output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    compileall.compile_dir(ROOT / "inferno_mip", quiet=1)
    compileall.compile_dir(ROOT / "models", quiet=1)
    compileall.compile_dir(ROOT / "solvers", quiet=1)
    print("| command | median CPU s |\n|---|---:|")
    for label, command in COMMANDS.items():
        times = [cpu_seconds(command) for _ in range(args.repeat)]
        print(f"| `{label}` | {statistics.median(times):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
