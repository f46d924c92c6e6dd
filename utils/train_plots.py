"""Training plots: mosaics of training batches, label statistics, results.png from results.csv."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.logging import LOGGER
from utils.plots import color, epoch_axis


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_images(images: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, fname: str | Path,
                names: list[str] | None = None, max_size: int = 1920, max_subplots: int = 16) -> Path:
    """A grid of up to 16 batch images (uint8 or 0-1 floats, RGB CHW) with their labels drawn.

    `targets` rows are ``(image index, class, x, y, w, h)`` normalised, or with a 7th
    confidence column for predictions.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().float().numpy()
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().float().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.max(initial=0) <= 1.0:
        images = images * 255
    bs, _, h, w = images.shape
    bs = min(bs, max_subplots)
    ns = math.ceil(bs**0.5)  # tiles per side
    scale = min(1.0, max_size / (ns * max(h, w)))
    th, tw = math.ceil(h * scale), math.ceil(w * scale)
    mosaic = np.full((ns * th, ns * tw, 3), 255, dtype=np.uint8)
    lw = max(1, round(min(th, tw) / 200))
    for i in range(bs):
        x0, y0 = (i % ns) * tw, (i // ns) * th
        im = images[i].transpose(1, 2, 0).clip(0, 255).astype(np.uint8)
        if scale < 1:
            im = cv2.resize(im, (tw, th))
        tile = np.ascontiguousarray(im[:, :, ::-1])  # RGB -> BGR for OpenCV drawing
        rows = targets[targets[:, 0] == i] if len(targets) else targets
        for r in rows:
            cls = int(r[1])
            cx, cy, bw, bh = r[2] * tw, r[3] * th, r[4] * tw, r[5] * th
            p1 = (int(cx - bw / 2), int(cy - bh / 2))
            p2 = (int(cx + bw / 2), int(cy + bh / 2))
            c = color(cls, bgr=True)
            cv2.rectangle(tile, p1, p2, c, lw, cv2.LINE_AA)
            label = names[cls] if names and cls < len(names) else str(cls)
            if len(r) > 6:
                label += f" {r[6]:.1f}"
            cv2.putText(tile, label, (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * lw + 0.05, c,
                        max(lw - 1, 1), cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (tw - 1, th - 1), (255, 255, 255), 2)
        mosaic[y0:y0 + th, x0:x0 + tw] = tile
    fname = Path(fname)
    cv2.imwrite(str(fname), mosaic)
    return fname


def plot_labels(labels: np.ndarray, names: list[str], save_dir: str | Path) -> Path:
    """labels.jpg: instances per class, box centres, and box width vs height (normalised)."""
    plt = _mpl()
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
    nc = max(len(names), int(labels[:, 0].max()) + 1 if len(labels) else 1)
    fig, ax = plt.subplots(1, 3, figsize=(15, 5), tight_layout=True)
    counts = np.bincount(labels[:, 0].astype(int), minlength=nc)
    ax[0].bar(range(nc), counts, color=[np.array(color(i)) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    if nc <= 30:
        ax[0].set_xticks(range(nc))
        ax[0].set_xticklabels([names[i] if i < len(names) else str(i) for i in range(nc)], rotation=90, fontsize=8)
    else:
        ax[0].set_xlabel("class")
    ax[0].set_title(f"{len(labels)} labels")
    ax[1].hist2d(labels[:, 1], labels[:, 2], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[1].set_xlabel("x")
    ax[1].set_ylabel("y")
    ax[2].scatter(labels[:, 3], labels[:, 4], s=3, alpha=0.4)
    ax[2].set_xlim(0, 1)
    ax[2].set_ylim(0, 1)
    ax[2].set_xlabel("width")
    ax[2].set_ylabel("height")
    f = Path(save_dir) / "labels.jpg"
    fig.savefig(f, dpi=120)
    plt.close(fig)
    return f


def plot_results(csv: str | Path) -> Path | None:
    """results.png beside `csv`: one panel per column (losses, metrics, learning rates) vs epoch."""
    import pandas as pd

    csv = Path(csv)
    try:
        df = pd.read_csv(csv, skipinitialspace=True)
    except Exception as e:  # an unreadable log must not stop training
        LOGGER.warning(f"WARNING: cannot plot {csv}: {e}")
        return None
    plt = _mpl()
    cols = [c for c in df.columns if c != "epoch"]
    n = len(cols)
    ncols = 5 if n > 10 else max(n, 1)
    nrows = math.ceil(n / ncols)
    fig, ax = plt.subplots(nrows, ncols, figsize=(3 * ncols + 2, 3 * nrows), tight_layout=True, squeeze=False)
    x = df["epoch"].to_numpy()
    for a, c in zip(ax.ravel(), cols):
        y = df[c].to_numpy(dtype=float)
        a.plot(x, y, marker=".", linewidth=2, markersize=6)
        a.set_title(c, fontsize=11)
        epoch_axis(a, x.max() if len(x) else 0)
    for a in ax.ravel()[n:]:
        a.axis("off")
    out = csv.with_name("results.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
