"""LP relaxations of a stage: bounds that prove a start optimal without a MIP solve."""

from __future__ import annotations

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
    return WarmLp(A, row_lb, row_ub, lb, ub, time_limit).optimum(c, maximize)


class WarmLp:
    """One LP kept in HiGHS across changes of its costs and bounds: each solve starts from the last one's basis,
    so a sequence of related LPs costs little more than the first. `time_limit` (seconds) holds for all solves
    together (HiGHS's clock runs on across them)."""

    def __init__(self, A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray, ub: np.ndarray,
                 time_limit: float | None = None):
        import highspy  # HiGHS's simplex directly: scipy.optimize would cost 0.4 s to import

        self._highspy = highspy
        self._h = h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        if time_limit is not None:
            h.setOptionValue("time_limit", max(float(time_limit), 0.0))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(lb), A.shape[0]
        lp.col_cost_ = np.zeros(len(lb))
        lp.col_lower_, lp.col_upper_ = self._finite(lb), self._finite(ub)
        lp.row_lower_, lp.row_upper_ = self._finite(row_lb), self._finite(row_ub)
        csc = sp.csc_matrix(A)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
        lp.a_matrix_.index_ = csc.indices.astype(np.int32)
        lp.a_matrix_.value_ = csc.data.astype(np.float64)
        h.passModel(lp)
        self._cols = np.arange(len(lb), dtype=np.int32)

    def _finite(self, values) -> np.ndarray:
        inf = self._highspy.kHighsInf
        return np.clip(np.asarray(values, dtype=np.float64), -inf, inf)

    def set_bounds(self, lb: np.ndarray, ub: np.ndarray) -> None:
        self._h.changeColsBounds(len(self._cols), self._cols, self._finite(lb), self._finite(ub))

    def set_row_bounds(self, row: int, lower: float, upper: float) -> None:
        self._h.changeRowBounds(int(row), *self._finite([lower, upper]))

    def optimum(self, c: np.ndarray, maximize: bool) -> LpSolution | None:
        """The optimum of ``c · v`` (None if the LP fails or the time is up)."""
        h = self._h
        sign = -1.0 if maximize else 1.0
        h.changeColsCost(len(self._cols), self._cols, sign * np.asarray(c, dtype=np.float64))
        h.run()
        if h.getModelStatus() != self._highspy.HighsModelStatus.kOptimal:
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


def kept_row_bounds(lp: WarmLp, A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray,
                    ub: np.ndarray, integer: np.ndarray, rows: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds tightened by the rows that keep earlier integral stages at their optimum (``Σ a v <= T``, integral on
    integer points): per row, the LP minimum L of its left side over the other rows allows any point of the MIP at
    most T - L of reduced cost (``reduced_cost_bounds``). The count stage's own MIP proved T against a weaker LP
    bound; a later stage's LP does not see that, its MIP only by branching. `lp` is that LP (`A`, the row bounds,
    `lb`, `ub`); each row's solve uses the bounds the earlier rows tightened, and `lp` is left with the tightened
    bounds and every row in place. None if an LP fails or runs out of time."""
    A = sp.csr_matrix(A)
    for r in rows:
        lp.set_row_bounds(r, -np.inf, np.inf)
        solution = lp.optimum(A.getrow(r).toarray().ravel(), False)
        lp.set_row_bounds(r, row_lb[r], row_ub[r])
        if solution is None:
            return None
        # the margin covers the LP's dual tolerances (reduced costs of the wrong sign up to 1e-7)
        room = row_ub[r] - solution.objective + ROOM_MARGIN * max(1.0, abs(row_ub[r]))
        lb, ub = reduced_cost_bounds(solution, room, lb, ub, integer)
        lp.set_bounds(lb, ub)
    return lb, ub
