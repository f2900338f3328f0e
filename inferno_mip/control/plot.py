"""One figure of a run from its cycle records: load and forecast, replicas, ITL and TTFT against their SLOs,
cost, and the tuned alpha per (model, accelerator)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _series(records: Sequence[dict], name: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        for s in r["servers"]:
            if s["name"] == name and s.get(key) is not None:
                xs.append(r["time"] / 60.0)
                ys.append(s[key])
    return xs, ys


def plot_cycles(records: Sequence[dict], path: Path, title: str = "") -> Path:
    """Write the figure to `path` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({s["name"] for r in records for s in r["servers"]})
    fig, axes = plt.subplots(5, 1, figsize=(10, 14), sharex=True)
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for n in names:
        c = colors[n]
        axes[0].plot(*_series(records, n, "rpm"), color=c, label=f"{n} observed")
        axes[0].plot(*_series(records, n, "forecastRpm"), color=c, ls="--", label=f"{n} forecast")
        axes[1].step(*_series(records, n, "replicas"), where="post", color=c, label=n)
        for key, slo_key, ax in (("itl", "sloItl", axes[2]), ("ttft", "sloTtft", axes[3])):
            xs, ys = _series(records, n, key)
            _, slo = _series(records, n, slo_key)
            if xs and slo:
                ax.plot(xs, [y / s if s else float("nan") for y, s in zip(ys, slo)], color=c, label=n)
    for ax in axes[2:4]:
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
    axes[0].set_ylabel("load (req/min)")
    axes[1].set_ylabel("replicas")
    axes[2].set_ylabel("ITL / SLO")
    axes[3].set_ylabel("TTFT / SLO")
    times = [r["time"] / 60.0 for r in records]
    axes[4].plot(times, [r["totalCost"] for r in records], color="k", label="total cost")
    axes[4].set_ylabel("cost (per hour)")
    twin = axes[4].twinx()
    pairs = sorted({(p["model"], p["acc"]) for r in records for p in r["internals"]})
    for i, (m, a) in enumerate(pairs):
        ys = [next((p["alpha"] for p in r["internals"] if (p["model"], p["acc"]) == (m, a)), float("nan"))
              for r in records]
        twin.plot(times, ys, color=f"C{(i + 3) % 10}", ls="-.", label=f"alpha {m}/{a}")
    twin.set_ylabel("alpha (ms)")
    for ax in (*axes, twin):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left" if ax is not twin else "upper right")
    axes[-1].set_xlabel("time (min)")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
