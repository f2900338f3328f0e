"""LP relaxations of a stage: bounds that prove a start optimal without a MIP solve."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

ROOM_MARGIN = 1e-6  # relative, added to the room a kept row leaves (kept_row_bounds)


@dataclass(frozen=True)
class LpSolution:
    """An optimal LP vertex in the minimisation frame of ``sign · c`` (sign -1 for a maximisation)."""

    objective: float  # of c itself: a bound on the MIP optimum (at most it for a max., at least for a min.)
    x: np.ndarray
    sign: float
    reduced_lower: np.ndarray  # >= 0: the minimised objective grows at least this much per unit above lb
    reduced_upper: np.ndarray  # <= 0: the same per unit below ub
    row_dual: np.ndarray | None = None  # HiGHS's row duals in the minimisation frame (> 0: a lower bound binds)


def lp_optimum(A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray, ub: np.ndarray,
               c: np.ndarray, maximize: bool, time_limit: float | None = None) -> LpSolution | None:
    """The LP relaxation's optimum over ``row_lb <= A v <= row_ub``, ``lb <= v <= ub``, or None if it fails or
    does not end within ``time_limit`` seconds."""
    import highspy  # HiGHS's simplex directly: scipy.optimize would cost 0.4 s to import

    inf = highspy.kHighsInf
    sign = -1.0 if maximize else 1.0
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if time_limit is not None:
        h.setOptionValue("time_limit", max(float(time_limit), 0.0))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = len(lb), A.shape[0]
    lp.col_cost_ = sign * np.asarray(c, dtype=np.float64)
    lp.col_lower_, lp.col_upper_ = np.clip(lb, -inf, inf), np.clip(ub, -inf, inf)
    lp.row_lower_, lp.row_upper_ = np.clip(row_lb, -inf, inf), np.clip(row_ub, -inf, inf)
    csc = A.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = csc.data.astype(np.float64)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    solution = h.getSolution()
    x = np.array(solution.col_value, dtype=np.float64)
    dual = np.array(solution.col_dual, dtype=np.float64)
    return LpSolution(float(c @ x), x, sign, np.maximum(dual, 0.0), np.minimum(dual, 0.0),
                      np.array(solution.row_dual, dtype=np.float64))


def reduced_cost_fixing(lp: LpSolution, c: np.ndarray, incumbent: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                        integer: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the integer columns that no solution at least as good as the incumbent moves further off the LP's
    bound than the gap between the incumbent and the LP bound pays for (``reduced_cost_bounds``)."""
    gap = lp.sign * float(c @ incumbent) - lp.sign * lp.objective
    return reduced_cost_bounds(lp, gap + tol, lb, ub, integer)


def reduced_cost_bounds(lp: LpSolution, room: float, lb: np.ndarray, ub: np.ndarray,
                        integer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the integer columns within `room` of the LP's minimised objective: a column at its bound with
    reduced cost d moves at most floor(room / d) units off it in any point whose objective is at most the LP's
    plus `room` (the objective grows by at least d per unit)."""
    room = max(room, 0.0)
    new_lb, new_ub = lb.copy(), ub.copy()
    up = integer & (lp.x <= lb + 1e-9) & (lp.reduced_lower > 0.0)
    down = integer & (lp.x >= ub - 1e-9) & (lp.reduced_upper < 0.0)
    new_ub[up] = np.minimum(ub[up], lb[up] + np.floor(room / lp.reduced_lower[up]))
    new_lb[down] = np.maximum(lb[down], ub[down] - np.floor(room / -lp.reduced_upper[down]))
    return new_lb, new_ub


def kept_row_bounds(A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                    integer: np.ndarray, rows: list[int], time_limit: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds tightened by the rows that keep earlier integral stages at their optimum (``Σ a v <= T``, integral on
    integer points): per row, the LP minimum L of its left side over the other rows allows any point of the MIP at
    most T - L of reduced cost (``reduced_cost_bounds``). The count stage's own MIP proved T against a weaker LP
    bound; a later stage's LP does not see that, its MIP only by branching. Each row's LP uses the bounds the
    earlier rows tightened. None if an LP fails or the LPs do not end within `time_limit` seconds."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    A = sp.csr_matrix(A)
    for r in rows:
        free_lb, free_ub = row_lb.copy(), row_ub.copy()
        free_lb[r], free_ub[r] = -np.inf, np.inf
        left = None if deadline is None else deadline - time.perf_counter()
        lp = None if left is not None and left <= 0 else lp_optimum(A, free_lb, free_ub, lb, ub,
                                                                     A.getrow(r).toarray().ravel(), False, left)
        if lp is None:
            return None
        # the margin covers the LP's dual tolerances (reduced costs of the wrong sign up to 1e-7)
        room = row_ub[r] - lp.objective + ROOM_MARGIN * max(1.0, abs(row_ub[r]))
        lb, ub = reduced_cost_bounds(lp, room, lb, ub, integer)
    return lb, ub
