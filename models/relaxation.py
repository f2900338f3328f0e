"""LP relaxations of a stage: bounds that prove a start optimal without a MIP solve."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def lp_optimum(A: sp.csr_matrix, row_lb: np.ndarray, row_ub: np.ndarray, lb: np.ndarray, ub: np.ndarray,
               c: np.ndarray, maximize: bool) -> float | None:
    """The optimum of ``c · v`` over ``row_lb <= A v <= row_ub``, ``lb <= v <= ub`` (continuous), or None.

    A bound on the stage's MIP optimum: at most it for a maximisation, at least it for a minimisation.
    """
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
    return float(sign * result.fun)
