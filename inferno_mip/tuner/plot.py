"""PNG of a tuning run: parameters, innovations, predicted vs observed latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .perfmodel import PARAM_NAMES

__all__ = ["plot_trajectory"]


def plot_trajectory(points, path: str | Path, *, truth=None, title: str = "inferno-mip tuner") -> Path:
    """Write the figure; ``truth(step) -> (alpha, beta, gamma)`` draws the true parameters when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in points if p.params]
    steps = np.array([p.step for p in pts])
    names = [n for n in PARAM_NAMES if pts and n in pts[0].params]
    fig, axes = plt.subplots(len(names) + 2, 1, figsize=(8, 2.0 * (len(names) + 2)), sharex=True)
    for ax, name in zip(axes, names):
        ax.plot(steps, [p.params[name] for p in pts], ".-", label="estimate")
        if truth is not None:
            k = PARAM_NAMES.index(name)
            ax.plot(steps, [truth(int(s))[k] for s in steps], "k--", label="truth")
        rej = [p for p in pts if p.status == "rejected"]
        if rej:
            ax.plot([p.step for p in rej], [p.params[name] for p in rej], "rx", label="rejected")
        ax.set_ylabel(name)
        ax.legend(loc="best", fontsize="small")
    labels = ("z0", "z1")
    ax = axes[len(names)]
    for j in range(2):
        ax.plot(steps, [p.innovation[j] if len(p.innovation) > j else np.nan for p in pts], ".-", label=f"y[{j}]")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_yscale("symlog", linthresh=1.0)  # overload spikes would flatten everything else
    ax.set_ylabel("innovation (ms)")
    ax.legend(loc="best", fontsize="small")
    ax = axes[-1]
    for j, lab in enumerate(labels):
        ax.plot(steps, [p.observed[j] if len(p.observed) > j else np.nan for p in pts], "o", ms=3,
                label=f"observed {lab}")
        ax.plot(steps, [p.predicted[j] if len(p.predicted) > j else np.nan for p in pts], "-",
                label=f"predicted {lab}")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_xlabel("step")
    ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
