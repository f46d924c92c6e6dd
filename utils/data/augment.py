"""Image transforms that keep labels right: letterbox (inference and val) and the training
augmentations (mosaic, random perspective, HSV, flips, mixup)."""

from __future__ import annotations

import cv2
import numpy as np

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
