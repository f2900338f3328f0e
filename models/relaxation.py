"""LP relaxations of a stage: bounds that prove a start optimal without a MIP solve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


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
    """Bounds with integer columns fixed where moving them one unit off the LP's bound would cost more than the
    gap between the incumbent and the LP bound: no solution at least as good as the incumbent moves them."""
    gap = lp.sign * float(c @ incumbent) - lp.sign * lp.objective
    at_lb = integer & (lp.x <= lb + 1e-9) & (lp.reduced_lower > gap + tol)
    at_ub = integer & (lp.x >= ub - 1e-9) & (-lp.reduced_upper > gap + tol)
    new_lb, new_ub = lb.copy(), ub.copy()
    new_ub[at_lb] = lb[at_lb]
    new_lb[at_ub] = ub[at_ub]
    return new_lb, new_ub
