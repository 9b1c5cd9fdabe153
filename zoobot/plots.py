"""Figures a user looks at in the MLflow UI. Each function returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(rows: dict[str, tuple[list[str], np.ndarray]], title: str = "") -> plt.Figure:
    """One row of example images per key (e.g. per split), labelled with their ids."""
    n_cols = max(len(ids) for ids, _ in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 1.8 * len(rows)), squeeze=False)
    for r, (name, (ids, images)) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(ids):
                image = images[c]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
                ax.set_title(str(ids[c])[-14:], fontsize=6)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
