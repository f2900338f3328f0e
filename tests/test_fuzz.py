"""A bounded run of the fuzz runner (benchmarks/fuzz.py): every case ends in a result or a clean one-line error."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import fuzz  # noqa: E402


def test_cases_are_reproducible_and_cover_every_kind():
    first, again = fuzz.draw_cases(40, 11), fuzz.draw_cases(40, 11)
    assert [c["what"] for c in first] == [c["what"] for c in again]
    assert {c["kind"] for c in first} == set(fuzz.KINDS)


def _run(cases: list[dict]) -> tuple[Counter, list[str]]:
    outcomes = Counter()
    defects = []
    for case in cases:
        outcome, detail = fuzz.run_case(case)
        outcomes[outcome] += 1
        if outcome in fuzz.DEFECTS:
            defects.append(f"{outcome}: {case['kind']} {case['what'][:120]} -> {detail[:200]}")
    return outcomes, defects


def test_bounded_fuzz_run_has_no_defects():
    outcomes, defects = _run([c for c in fuzz.draw_cases(60, 5) if c.get("solver") != "highs"])
    assert defects == []
    assert outcomes["result"] >= 10 and outcomes["clean-error"] >= 10  # the run exercised both sides


@pytest.mark.slow
def test_fuzz_run_with_the_exact_solver_has_no_defects():
    outcomes, defects = _run(fuzz.draw_cases(300, 6))
    assert defects == []
    assert outcomes["result"] >= 50
