"""Training curves as a PNG (matplotlib, the ``plots`` extra)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(history: Sequence[dict[str, float]], path: str | os.PathLike[str]) -> Path | None:
    """Plot each numeric history column against the epoch: losses in one panel, other metrics in a
    second; save to ``path`` (PNG). Returns the path, or None when matplotlib is not installed or
    the history is empty."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not history:
        return None
    keys = [k for k in history[-1] if k != "epoch" and isinstance(history[-1][k], (int, float))]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses and k != "lr"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, group, title in ((axes[0], losses, "loss"), (axes[1], others, "metrics")):
        for key in group:
            points = [(h["epoch"], h[key]) for h in history if key in h]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if group:
            ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
