"""AutoAnchor: check that the model's anchors fit the dataset's boxes, evolve new ones if not.

A label box "fits" an anchor when neither side ratio exceeds ``thr`` (``anchor_t`` in the
hyperparameters, 4.0 by default): that is exactly the condition the loss uses to assign
targets to anchors. The best possible recall (BPR) is the share of label boxes with at
least one fitting anchor. When it is below 0.98, new anchors are computed by k-means on the
(whitened) label widths and heights, then refined by a simple genetic search that mutates
them and keeps any mutation that raises the fitness; they replace the old anchors only if
their BPR is higher. Within each level the new anchors go to the slots of the most similar
old anchors, so that a pretrained head's outputs for each slot still fit (on the coco128
fine-tuning benchmark this is worth about +0.02 mAP50-95 after 3 epochs).

Label sizes are measured at training resolution: each image scaled so its long side is
``imgsz``; the BPR check adds a random 0.9-1.1 jitter standing in for the scale augmentation.

Unset anchors: a model built from an anchor *count* (``anchors: 3`` in a model YAML, or the
``anchors`` hyperparameter) holds zeros until anchors are computed (:func:`anchors_unset`).
:func:`check_anchors` then always computes them by k-means, with no slots to match and no
ratios taken against the zeros; asked to (``recompute``), it computes them for set anchors too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.vq import kmeans

from utils.logging import LOGGER

PREFIX = "AutoAnchor: "
MIN_BPR = 0.98


def anchors_unset(anchors) -> bool:
    """True when any anchor size (tensor or array, any shape) is not a finite positive number:
    the zeros a model built from an anchor count holds until AutoAnchor computes its anchors."""
    a = np.asarray(anchors.detach().cpu() if isinstance(anchors, torch.Tensor) else anchors, dtype=np.float64)
    return bool(a.size == 0 or not np.isfinite(a).all() or (a <= 0).any())


def label_wh(shapes: np.ndarray, labels: Sequence[np.ndarray], imgsz: int = 640,
             rng: np.random.Generator | None = None, jitter: float = 0.1) -> np.ndarray:
    """Label box (w, h) in pixels at training size; `shapes` are image (w, h), labels rows (cls, x, y, w, h)."""
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    sizes = imgsz * shapes / shapes.max(1, keepdims=True)
    if rng is not None and jitter:
        sizes = sizes * rng.uniform(1 - jitter, 1 + jitter, size=(len(sizes), 1))
    parts = [np.asarray(lb, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for s, lb in zip(sizes, labels)]
    return np.concatenate(parts, 0) if parts else np.zeros((0, 2))


def _ratio_metric(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """(n, k) worst side ratio of each box to each anchor, as min(r, 1/r) in (0, 1]."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def anchor_metrics(anchors: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> tuple[float, float]:
    """(best possible recall, mean number of anchors above threshold per box) for pixel anchors."""
    if len(wh) == 0:
        return 1.0, 0.0
    x = _ratio_metric(np.asarray(anchors, dtype=np.float64).reshape(-1, 2), wh)
    best = x.max(1)
    return float((best > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def anchor_fitness(anchors: np.ndarray, wh: np.ndarray, thr: float = 4.0) -> float:
    """Mean best ratio over boxes, counting only boxes with a fitting anchor."""
    best = _ratio_metric(anchors, wh).max(1)
    return float((best * (best > 1 / thr)).mean())


def _describe(anchors: np.ndarray, wh: np.ndarray, thr: float, imgsz: int) -> str:
    x = _ratio_metric(anchors, wh)
    best = x.max(1)
    bpr, aat = (best > 1 / thr).mean(), (x > 1 / thr).sum(1).mean()
    return (f"thr={1 / thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr; n={len(anchors)}, "
            f"img_size={imgsz}, metric_all={x.mean():.3f}/{(x * (x > 1 / thr)).mean():.3f}-mean/best, "
            f"past_thr={x[x > 1 / thr].mean() if (x > 1 / thr).any() else 0:.3f}-mean: "
            + ", ".join(f"{round(w)},{round(h)}" for w, h in anchors))


def _kmeans(obs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    try:
        return kmeans(obs, n, iter=30, rng=rng)[0]
    except TypeError:  # scipy < 1.15 names it `seed`
        return kmeans(obs, n, iter=30, seed=rng)[0]


def kmean_anchors(wh: np.ndarray, n: int = 9, img_size: int = 640, thr: float = 4.0, gen: int = 1000,
                  rng: np.random.Generator | None = None, verbose: bool = True) -> np.ndarray:
    """`n` anchors (pixels, sorted by area) for label sizes `wh`: k-means, then `gen` mutations."""
    rng = rng if rng is not None else np.random.default_rng(0)
    wh0 = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    tiny = int((wh0 < 3.0).any(1).sum())
    if tiny:
        LOGGER.warning(f"{PREFIX}WARNING: {tiny} of {len(wh0)} labels are smaller than 3 pixels")
    wh = wh0[(wh0 >= 2.0).any(1)]

    k = None
    if len(wh) >= n and n > 0:
        s = wh.std(0)
        s[s == 0] = 1.0
        try:
            centroids = _kmeans(wh / s, n, rng)
            if len(centroids) == n:
                k = centroids * s
        except Exception as e:  # degenerate data (all boxes equal, ...)
            LOGGER.warning(f"{PREFIX}WARNING: k-means failed ({e}), starting from random anchors")
    if k is None:
        LOGGER.warning(f"{PREFIX}WARNING: k-means on {len(wh)} boxes could not give {n} anchors, "
                       "starting from random anchors")
        k = (np.sort(rng.random(n * 2)).reshape(n, 2) * img_size).clip(min=2.0)
    if len(wh) == 0:
        return k[np.argsort(k.prod(1))]
    k = k[np.argsort(k.prod(1))]

    # genetic refinement: multiply anchors by random factors, keep improvements
    f = anchor_fitness(k, wh, thr)
    mutation_prob, sigma = 0.9, 0.1
    for _ in range(gen):
        v = np.ones(k.shape)
        while (v == 1).all():
            v = ((rng.random(k.shape) < mutation_prob) * rng.random() * rng.standard_normal(k.shape) * sigma + 1)
            v = v.clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = anchor_fitness(kg, wh, thr)
        if fg > f:
            f, k = fg, kg
    k = k[np.argsort(k.prod(1))]
    if verbose:
        LOGGER.info(f"{PREFIX}{_describe(k, wh, thr, img_size)}")
    return k


def match_slots(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Reorder the anchors of each level (``(nl, na, 2)`` arrays) so that new anchor j sits in the
    slot of the old anchor closest in shape: the assignment minimising the summed squared log
    width and height ratios. Levels themselves are not changed.

    Raises ValueError when an anchor of either set is not a finite positive size (unset anchors
    have no shape to match: leave them out instead of calling this)."""
    from scipy.optimize import linear_sum_assignment

    new, old = np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)
    if new.shape != old.shape:
        raise ValueError(f"match_slots: new anchors {new.shape} and old anchors {old.shape} differ in shape")
    for name, a in (("new", new), ("old", old)):
        bad = np.argwhere(~(np.isfinite(a) & (a > 0)))
        if len(bad):
            lvl, slot = int(bad[0][0]), int(bad[0][1])
            raise ValueError(f"match_slots: {name} anchor {a[lvl, slot].tolist()} (level {lvl}, slot {slot}) is not a "
                             "finite positive size; unset anchors have no slots to match, so do not pass them")
    out = new.copy()
    for lvl in range(new.shape[0]):
        cost = (np.log(new[lvl][:, None] / old[lvl][None]) ** 2).sum(-1)  # (new, old)
        rows, cols = linear_sum_assignment(cost)
        out[lvl][cols] = new[lvl][rows]
    return out


def check_anchors(model: torch.nn.Module, shapes: np.ndarray, labels: Sequence[np.ndarray], thr: float = 4.0,
                  imgsz: int = 640, rng: np.random.Generator | None = None, gen: int = 1000,
                  recompute: str = "") -> dict:
    """Check the Detect head's anchors against the labels; replace them in place when evolved ones fit better.

    Unset anchors (:func:`anchors_unset`) are always replaced by computed ones. A non-empty
    `recompute` (why, e.g. ``"hyp anchors: 3 (hyp.yaml)"``) replaces set anchors by computed ones
    too, each in the slot of the most similar old anchor, whatever the BPRs; the log names it.

    Returns ``{"bpr", "aat", "replaced", "new_bpr", "unset"}`` (``bpr``/``aat`` are 0 for unset anchors).
    """
    from utils.torch_utils import de_parallel

    rng = rng if rng is not None else np.random.default_rng(0)
    det = de_parallel(model).model[-1]
    stride = det.stride.view(-1, 1, 1).to(det.anchors.device)
    anchors_px = (det.anchors * stride).detach().cpu().numpy().reshape(-1, 2)
    na = det.anchors.numel() // 2
    count = f"{det.anchors.shape[1]} anchors per output layer"
    wh = label_wh(shapes, labels, imgsz, rng=rng)
    unset = anchors_unset(anchors_px)
    bpr, aat = (0.0, 0.0) if unset else anchor_metrics(anchors_px, wh, thr)
    out = {"bpr": bpr, "aat": aat, "replaced": False, "new_bpr": bpr, "unset": unset}
    if unset:
        LOGGER.info(f"\n{PREFIX}the model's {count} are unset ({recompute or 'an anchor count only'}): "
                    f"computing them by k-means on {len(wh)} label boxes...")
    elif recompute:
        LOGGER.info(f"\n{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR) of the current anchors; "
                    f"{recompute}: computing {count} by k-means on {len(wh)} label boxes...")
    else:
        msg = f"\n{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
        if bpr >= MIN_BPR or len(wh) == 0:
            LOGGER.info(f"{msg}Current anchors are a good fit to dataset")
            return out
        LOGGER.info(f"{msg}Anchors are a poor fit to dataset, attempting to improve...")
    wh_fit = label_wh(shapes, labels, imgsz)  # k-means and evolution on the unjittered sizes
    new = kmean_anchors(wh_fit, n=na, img_size=imgsz, thr=thr, gen=gen, rng=rng, verbose=False)
    new_bpr, _ = anchor_metrics(new, wh, thr)
    out["new_bpr"] = new_bpr
    if unset or recompute or new_bpr > bpr:
        # sorted by area: small anchors on the small-stride level; within a level, each new
        # anchor takes the slot of the old anchor most like it (the head's outputs per slot
        # were trained for that shape: a pretrained model loses much less this way); unset
        # anchors have no shapes, their slots are taken in area order
        new = new.reshape(det.anchors.shape)
        if not unset:
            new = match_slots(new, anchors_px.reshape(det.anchors.shape))
        t = torch.tensor(new, dtype=det.anchors.dtype, device=det.anchors.device).view_as(det.anchors)
        det.anchors[:] = t / stride
        out["replaced"] = True
        if unset or recompute:
            LOGGER.info(f"{PREFIX}Done: the model trains with the {count} computed from the labels "
                        f"(BPR {new_bpr:.4f}" + ("" if unset else f", the previous ones {bpr:.4f}") + "): "
                        + ", ".join(f"{round(w)},{round(h)}" for w, h in new.reshape(-1, 2)))
        else:
            LOGGER.info(f"{PREFIX}Done: new anchors saved to the model (BPR {new_bpr:.4f}). "
                        "Update the model YAML to use them in the future.")
    else:
        LOGGER.info(f"{PREFIX}Done: the evolved anchors are not better (BPR {new_bpr:.4f}), keeping the originals.")
    return out
