"""RowSet evaluation: blocked scratch evaluation, grid runs (rep) and padding agree exactly with solve_rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inferno_mip.queueing import make_perf_model, rows, solve_rows
from inferno_mip.queueing.models import gather, pad_rows
from inferno_mip.queueing.sizing import size_specs


def _models(compat: bool, kind: str = "new"):
    params = dict(alpha=8.0, beta=0.033, gamma=0.000333)
    if kind == "v02":
        params = dict(alpha=17.15, beta=0.34, gamma=170.0, delta=0.017)
    return [make_perf_model(kind, dict(params, alpha=params["alpha"] + k), in_tokens=64 + 100 * k,
                            out_tokens=128 + 50 * k, max_batch=big_n, max_queue=q, compat=compat)
            for k, (big_n, q) in enumerate([(8, 80), (12, 0), (5, 3), (12, 120)])]


def _reference(rs: rows.RowSet, idx, lam):
    """The pre-scratch evaluation: solve_rows on freshly gathered tables, then the model's latencies."""
    mi = rs.mi[idx]
    cum = np.concatenate((rs.cum[mi], np.full((mi.size, 1), np.inf)), axis=1)  # RowSet keeps the W head columns
    st = solve_rows(cum, None, lam, rs.n[idx], rs.q[idx], cum_n=rs.cum_n[idx], log_mu_n=rs.log_mu_n[idx],
                    mask=rs.masked)
    return type(rs.models[0].service).row_latencies(gather(rs.params, mi), st, rs.n[idx]), st


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("kind", ["new", "v02"])
@pytest.mark.parametrize("block", [1, 7, 64, 1 << 18])
def test_blocked_evaluation_is_exact(monkeypatch, compat, kind, block):
    monkeypatch.setattr(rows, "BLOCK", block)
    models = _models(compat, kind)
    mi = np.array([0, 1, 2, 3, 1, 3, 0])
    n = np.array([8, 12, 5, 12, 3, 7, 1])  # some rows below their model's N: masked states
    rs = rows.RowSet(models, mi, n, [m.max_queue for m in np.array(models)[mi]])
    rng = np.random.default_rng(0)
    grid = 5
    idx = np.repeat(np.arange(len(rs)), grid)
    lam = rs.lam_min[idx] + rng.uniform(0, 1, idx.size) * (rs.lam_max[idx] - rs.lam_min[idx])
    (pf, itl, ttft), st = _reference(rs, idx, lam)
    perm = rng.permutation(idx.size)
    back = np.argsort(perm)
    for ev, order in ((rs.evaluate(idx, lam), slice(None)), (rs.evaluate(idx, lam, rep=grid), slice(None)),
                      (rs.evaluate(idx[perm], lam[perm]), back)):  # a row's result does not depend on the others
        np.testing.assert_array_equal(ev.prefill[order], pf)
        np.testing.assert_array_equal(ev.itl[order], itl)
        np.testing.assert_array_equal(ev.ttft[order], ttft)
        for f in rows._STAT_FIELDS:
            np.testing.assert_array_equal(getattr(ev.st, f)[order], getattr(st, f))


def test_pad_rows_pads_and_truncates():
    arrays = [np.array([1.0, 2.0, 3.0]), np.array([4, 5]), np.array([6.0, 7.0, 8.0, 9.0, 10.0])]
    np.testing.assert_array_equal(pad_rows(arrays, 4), [[1, 2, 3, 3], [4, 5, 5, 5], [6, 7, 8, 9]])
    np.testing.assert_array_equal(pad_rows(arrays[::2], 2), [[1, 2], [6, 7]])
    assert pad_rows(arrays, 4).dtype == np.float64


@pytest.mark.parametrize("compat", [False, True])
def test_sizing_does_not_depend_on_the_block_size(monkeypatch, compat):
    models = _models(compat)
    mi = np.array([0, 1, 2, 3, 3, 1])
    n = np.array([8, 12, 5, 12, 6, 2])
    q = np.array([m.max_queue for m in np.array(models)[mi]])
    targets = np.array([[200.0, 30.0, 0.0], [0.0, 25.0, 0.0], [150.0, 0.0, 100.0], [400.0, 40.0, 0.0],
                        [1.0, 30.0, 0.0], [300.0, 35.0, 0.0]])

    def run():
        return [r if isinstance(r, Exception) else dataclasses.asdict(r) for r in size_specs(models, mi, n, q, targets)]

    ref = run()
    monkeypatch.setattr(rows, "BLOCK", 5)
    got = run()
    assert [str(r) if isinstance(r, Exception) else r for r in got] == \
        [str(r) if isinstance(r, Exception) else r for r in ref]
