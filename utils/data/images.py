"""The one image reader of train.py, val.py, detect.py and heatmap.py.

Every script decodes images through :func:`read_image`, so an image that the dataset check
(``utils/data/verify.py``) accepts for training is read the same way, with the same EXIF
orientation, everywhere else.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps


class ImageReadError(ValueError):
    """The file exists but holds no image OpenCV or PIL can decode."""


def read_image(path: str | Path) -> np.ndarray:
    """A 3-channel BGR uint8 (H, W, 3) image with its EXIF orientation applied.

    Grey and alpha images are converted to BGR. OpenCV decodes first (``IMREAD_COLOR`` applies
    the EXIF orientation, as ``verify.exif_size`` assumes); PIL (with ``exif_transpose``) reads
    what OpenCV cannot. Raises FileNotFoundError when `path` is not a file and
    :class:`ImageReadError` (a ValueError) when it cannot be decoded.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    im = cv2.imread(path, cv2.IMREAD_COLOR)
    if im is None:
        try:
            with Image.open(path) as pim:
                im = np.asarray(ImageOps.exif_transpose(pim).convert("RGB"))[:, :, ::-1].copy()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data; all mean "not an image"
            raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return im
