"""Image transforms that keep labels right: letterbox (inference and val) and the training
augmentations (mosaic, random perspective, HSV, flips, mixup)."""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from utils.boxes import xywhn2xyxy

PAD_VALUE = 114  # grey used for letterbox and mosaic borders


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (PAD_VALUE, PAD_VALUE, PAD_VALUE),
    auto: bool = True,
    scale_fill: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (height, width).

    With `auto` the padding is only what is needed to reach a multiple of `stride` (minimum
    rectangle); with `scale_fill` the image is stretched to fill without padding; without
    `scaleup` images are only ever shrunk. Returns the image, the (w, h) scale ratios and
    the (left, top) padding in pixels, as `scale_boxes` needs them.
    """
    shape = img.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    ratio = (r, r)
    unpadded = (int(round(shape[1] * r)), int(round(shape[0] * r)))  # (w, h)
    dw, dh = new_shape[1] - unpadded[0], new_shape[0] - unpadded[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    elif scale_fill:
        dw, dh = 0.0, 0.0
        unpadded = (new_shape[1], new_shape[0])
        ratio = (new_shape[1] / shape[1], new_shape[0] / shape[0])
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != unpadded:
        img = cv2.resize(img, unpadded, interpolation=cv2.INTER_LINEAR)
    # split odd padding so the extra pixel goes to the bottom/right
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, ratio, (dw, dh)


# ------------------------------------------------------------------------------------------
# Training augmentations. Labels here are (n, 5) arrays ``cls x1 y1 x2 y2`` in pixels unless
# a docstring says otherwise; randomness comes from the global `random` / `np.random` state,
# which the data loader seeds per worker.


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value jitter of a BGR uint8 image, in place, through lookup tables.

    Each gain is the maximum relative change: hue is shifted (wrapping round OpenCV's 0-179
    range), saturation and value are scaled and clipped. Pixels do not move, so labels stay.
    """
    if not (hgain or sgain or vgain):
        return
    gains = np.random.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    h, s, v = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Which transformed boxes to keep. `box1` (before, scaled by the zoom) and `box2` (after)
    are (4, n) xyxy; a box survives when both sides exceed `wh_thr` pixels, it keeps more than
    `area_thr` of its area and its aspect ratio stays below `ar_thr`."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def random_perspective(
    im: np.ndarray,
    targets: np.ndarray | None = None,
    degrees: float = 10,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation, zoom, shear, translation and perspective in one warp.

    The output is ``im`` grown by ``2 * border`` on each axis (mosaic passes a negative border
    of half the image size to crop its 2x canvas back to the training size). Each box becomes
    the bounding box of its four warped corners, clipped to the output; boxes that lose too
    much (see :func:`box_candidates`) are dropped. `targets` is (n, 5) ``cls x1 y1 x2 y2``.
    """
    height = im.shape[0] + border[0] * 2
    width = im.shape[1] + border[1] * 2

    centre = np.eye(3)  # move the image centre to the origin
    centre[0, 2] = -im.shape[1] / 2
    centre[1, 2] = -im.shape[0] / 2
    persp = np.eye(3)
    persp[2, 0] = random.uniform(-perspective, perspective)
    persp[2, 1] = random.uniform(-perspective, perspective)
    rot = np.eye(3)
    angle = random.uniform(-degrees, degrees)
    zoom = random.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))
    move = np.eye(3)  # back from the origin to a (jittered) centre of the output
    move[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * width
    move[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * height
    m = move @ sh @ rot @ persp @ centre  # applied right to left

    if border[0] or border[1] or (m != np.eye(3)).any():
        fill = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
        if perspective:
            im = cv2.warpPerspective(im, m, dsize=(width, height), borderValue=fill)
        else:
            im = cv2.warpAffine(im, m[:2], dsize=(width, height), borderValue=fill)

    targets = np.zeros((0, 5)) if targets is None else np.asarray(targets, dtype=np.float64).reshape(-1, 5)
    n = len(targets)
    if n:
        corners = np.ones((n * 4, 3))
        corners[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # 4 corners per box
        corners = corners @ m.T
        xy = corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]
        xy = xy.reshape(n, 8)
        xs, ys = xy[:, 0::2], xy[:, 1::2]
        new = np.stack((xs.min(1), ys.min(1), xs.max(1), ys.max(1)), 1)
        if m[0, 1] != 0 or m[1, 0] != 0 or perspective:
            # the box is now a tilted quadrilateral: where it crosses the border, keep the bounding
            # box of its visible part (clipping the corner-bbox instead would overshoot)
            crossing = (new[:, 0] < 0) | (new[:, 1] < 0) | (new[:, 2] > width) | (new[:, 3] > height)
            for j in np.flatnonzero(crossing):
                new[j] = _visible_bbox(xy[j].reshape(4, 2)[[0, 3, 1, 2]], width, height, new[j])
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(targets[:, 1:5].T * zoom, new.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


def _visible_bbox(quad: np.ndarray, width: int, height: int, fallback: np.ndarray) -> np.ndarray:
    """xyxy bounding box of the part of a convex quadrilateral (4, 2) inside the image."""
    frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    hull = cv2.convexHull(quad.astype(np.float32))
    area, poly = cv2.intersectConvexConvex(hull, frame)
    if area <= 0 or poly is None:
        return fallback  # entirely outside: clipping makes it degenerate and it is dropped
    poly = poly.reshape(-1, 2)
    return np.array([poly[:, 0].min(), poly[:, 1].min(), poly[:, 0].max(), poly[:, 1].max()])


def mosaic4(ims: list[np.ndarray], labels: list[np.ndarray], img_size: int,
            centre: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tile four images round a (random) centre of a ``2 * img_size`` square canvas.

    Image 0 goes top-left of the centre, 1 top-right, 2 bottom-left, 3 bottom-right, each
    touching the centre and cropped at the canvas edge. `labels` are each image's (n, 5)
    ``cls cx cy w h`` normalised to that image. Returns the canvas and its labels as
    ``cls x1 y1 x2 y2`` pixels, clipped to the canvas. The canvas is meant to be cropped back
    to `img_size` by :func:`random_perspective` with ``border=(-img_size // 2, -img_size // 2)``.
    """
    s = img_size
    if centre is None:
        centre = (int(random.uniform(s / 2, 3 * s / 2)), int(random.uniform(s / 2, 3 * s / 2)))
    xc, yc = centre
    canvas = np.full((2 * s, 2 * s, ims[0].shape[2]), PAD_VALUE, dtype=np.uint8)
    out = []
    for i, (im, lb) in enumerate(zip(ims, labels)):
        h, w = im.shape[:2]
        # destination rectangle on the canvas (a) and the matching part of the image (b)
        if i == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(yc + h, 2 * s)
            x1b, y1b = w - (x2a - x1a), 0
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(yc + h, 2 * s)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = im[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        lb = np.asarray(lb, dtype=np.float64).reshape(-1, 5).copy()
        if len(lb):
            lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, padw=x1a - x1b, padh=y1a - y1b)
        out.append(lb)
    labels4 = np.concatenate(out, 0)
    labels4[:, 1:] = labels4[:, 1:].clip(0, 2 * s)
    return canvas, labels4


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(32, 32) weight (close to 0.5) and keep both label sets."""
    r = np.random.beta(32.0, 32.0)
    out = (im.astype(np.float32) * r + im2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return out, np.concatenate((labels, labels2), 0)


def copy_paste(im: np.ndarray, labels: np.ndarray, p: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Box-level copy-paste: a fraction `p` of the objects is copied, mirrored left-right, to the
    mirrored position, where it may cover at most 30% of any existing box.

    (Upstream YOLOv5 pastes segmentation masks; with box labels only the object's rectangle can
    be copied, background included.) `labels` are ``cls x1 y1 x2 y2`` pixels. In place on `im`.
    """
    n = len(labels)
    if not p or not n:
        return im, labels
    w = im.shape[1]
    new = []
    boxes = labels[:, 1:5]
    for j in random.sample(range(n), k=round(p * n)):
        c, x1, y1, x2, y2 = labels[j]
        mirrored = np.array([w - x2, y1, w - x1, y2])
        ix = (np.minimum(mirrored[2], boxes[:, 2]) - np.maximum(mirrored[0], boxes[:, 0])).clip(0)
        iy = (np.minimum(mirrored[3], boxes[:, 3]) - np.maximum(mirrored[1], boxes[:, 1])).clip(0)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + 1e-7
        if (ix * iy / area).max() >= 0.30:
            continue
        xa, ya, xb, yb = (int(round(v)) for v in (x1, y1, x2, y2))
        if xb <= xa or yb <= ya:
            continue
        patch = im[ya:yb, xa:xb][:, ::-1]
        im[ya:yb, w - xb:w - xa] = patch
        new.append([c, w - xb, ya, w - xa, yb])
    if new:
        labels = np.concatenate((labels, np.array(new, dtype=labels.dtype)), 0)
    return im, labels


def flip_lr(im: np.ndarray, labels_xywhn: np.ndarray) -> np.ndarray:
    """Mirror left-right; normalised ``cls cx cy w h`` labels are updated in place."""
    if len(labels_xywhn):
        labels_xywhn[:, 1] = 1 - labels_xywhn[:, 1]
    return np.ascontiguousarray(im[:, ::-1])


def flip_ud(im: np.ndarray, labels_xywhn: np.ndarray) -> np.ndarray:
    """Mirror up-down; normalised ``cls cx cy w h`` labels are updated in place."""
    if len(labels_xywhn):
        labels_xywhn[:, 2] = 1 - labels_xywhn[:, 2]
    return np.ascontiguousarray(im[::-1])
