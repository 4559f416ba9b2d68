"""A PNG grid of central slices before and after a transform (matplotlib, optional)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from delira.augment._arrays import to_host


def _central(x: np.ndarray) -> np.ndarray:
    """The central slice along the first spatial axis of a (C, *spatial) array, channel 0."""
    img = x[0]
    return img[img.shape[0] // 2] if img.ndim == 3 else img


def preview(
    batch: dict[str, Any],
    transform: Any,
    path: str | Path,
    *,
    rng: Any = 0,
    data_key: str = "data",
    seg_key: str = "seg",
    max_samples: int = 4,
    title: str | None = None,
) -> Path:
    """Write a grid of central slices of ``batch`` before and after ``transform`` to ``path`` (PNG).

    Rows are samples (at most ``max_samples``); columns show the image before and after, with the
    segmentation drawn as a coloured overlay where present. ``rng`` seeds the transform. ``title``
    (e.g. the names of the transforms) is drawn above the grid and stored as the PNG's ``Title``
    text chunk.

    Returns:
        The path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("preview needs matplotlib: pip install 'delira-augment[preview]'") from exc
    after = transform(rng=rng, **dict(batch))
    before_d = to_host(batch[data_key], data_key)[0]
    after_d = to_host(after[data_key], data_key)[0]
    has_seg = seg_key in batch and batch[seg_key] is not None
    before_s = to_host(batch[seg_key], seg_key)[0] if has_seg else None
    after_s = to_host(after[seg_key], seg_key)[0] if has_seg else None
    n = min(before_d.shape[0], max_samples)
    fig, axes = plt.subplots(n, 2, figsize=(6, 3 * n), squeeze=False)
    for i in range(n):
        for col, (d, s, label) in enumerate([(before_d, before_s, "before"), (after_d, after_s, "after")]):
            ax = axes[i, col]
            ax.imshow(_central(d[i]), cmap="gray")
            if s is not None:
                mask = np.ma.masked_equal(_central(s[i]), 0)
                ax.imshow(mask, cmap="autumn", alpha=0.4, interpolation="nearest")
            ax.set_title(f"sample {i}: {label}", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(textwrap.fill(title, 60), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Title": title} if title else None)
    plt.close(fig)
    return path
