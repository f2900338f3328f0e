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


def lp_optimum(A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray, ub: np.ndarray,
               c: np.ndarray, maximize: bool) -> LpSolution | None:
    """The LP relaxation's optimum over ``row_lb <= A v <= row_ub``, ``lb <= v <= ub``, or None if it fails."""
    from scipy.optimize import linprog  # scipy.optimize costs a fifth of a second to import

    eq = np.isfinite(row_lb) & (row_lb == row_ub)
    upper = np.isfinite(row_ub) & ~eq
    lower = np.isfinite(row_lb) & ~eq
    A_ub = sp.vstack([A[np.flatnonzero(upper)], -A[np.flatnonzero(lower)]], format="csr")
    b_ub = np.r_[row_ub[upper], -row_lb[lower]]
    sign = -1.0 if maximize else 1.0
    result = linprog(sign * c, A_ub=A_ub if A_ub.shape[0] else None, b_ub=b_ub if len(b_ub) else None,
                     A_eq=A[np.flatnonzero(eq)] if eq.any() else None, b_eq=row_lb[eq] if eq.any() else None,
                     bounds=np.column_stack([lb, ub]), method="highs")
    if result.status != 0:
        return None
    return LpSolution(float(sign * result.fun), result.x, sign, result.lower.marginals, result.upper.marginals)


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
