"""Image-weighted sampling for ``train.py --image-weights``.

Each epoch the training images are drawn with replacement, image ``i`` with probability
proportional to ``sum_c w_c * n_ic`` where ``n_ic`` counts the labels of class ``c`` in
image ``i`` and ``w_c`` is a class weight: inverse class frequency (normalised to sum to 1),
times ``(1 - mAP_c)^2`` with the per-class mAP50-95 of the last validation, divided by the
number of classes (upstream YOLOv5's rule). Rare and badly detected classes are thus seen
more often. The indices are drawn in the main process by a sampler, so unlike upstream it
also takes effect with persistent loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def labels_to_class_weights(labels: Sequence[np.ndarray], nc: int) -> np.ndarray:
    """(nc,) float64 inverse class frequencies over all labels (rows ``cls ...``), summing to 1;
    a class without labels counts as seen once."""
    classes = np.concatenate([lb[:, 0] for lb in labels if len(lb)] or [np.zeros(0)]).astype(int)
    counts = np.bincount(classes, minlength=nc)[:nc].astype(np.float64)
    counts[counts == 0] = 1
    w = 1 / counts
    return w / w.sum()


def labels_to_image_weights(labels: Sequence[np.ndarray], nc: int, class_weights: np.ndarray) -> np.ndarray:
    """(n_images,) float64: each image's class counts dotted with `class_weights` (nc,)."""
    counts = np.stack([np.bincount(lb[:, 0].astype(int), minlength=nc)[:nc] if len(lb) else np.zeros(nc)
                       for lb in labels])
    return counts @ np.asarray(class_weights, dtype=np.float64)


def image_weights(labels: Sequence[np.ndarray], nc: int, maps: np.ndarray) -> np.ndarray:
    """Sampling weights per image for one epoch from the per-class mAP50-95 `maps` (nc,)."""
    # upstream: (class weights * nc) * (1 - maps)^2 / nc; the two nc cancel
    cw = labels_to_class_weights(labels, nc) * (1 - np.asarray(maps, dtype=np.float64)) ** 2
    return labels_to_image_weights(labels, nc, cw)


class WeightedImageSampler(Sampler[int]):
    """`n` indices per epoch drawn with replacement by weight (uniform until :meth:`set_weights`).
    Reproducible: epoch ``e`` uses a generator seeded with ``seed + e``."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0
        self.weights = torch.ones(n, dtype=torch.float64)

    def set_weights(self, w: np.ndarray) -> None:
        w = torch.as_tensor(np.asarray(w, dtype=np.float64))
        if w.shape != (self.n,) or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"image weights must be {self.n} finite non-negative numbers, got shape {tuple(w.shape)}")
        # an image without labels (weight 0) may still be drawn, rarely, as upstream's background images
        self.weights = w if w.sum() > 0 else torch.ones(self.n, dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
