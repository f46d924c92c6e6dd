"""The one image reader of train.py, val.py, detect.py and heatmap.py.

Every script decodes images through :func:`read_image`, so an image that the dataset check
(``utils/data/verify.py``) accepts for training is read the same way, with the same EXIF
orientation, everywhere else.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from utils.logging import LOGGER


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


# ---------------------------------------------------------------------------------------------
# --cache disk: decoded images as .npy files

NPY_CACHE_VERSION = "yolo-image-1"  # bump when read_image's output changes


def npy_cache_path(im_file: str | Path) -> Path:
    """The ``--cache disk`` file of one image: ``<image name>.<key>.npy`` in
    :func:`~utils.data.verify.image_cache_folder` (beside the image, or under ``$YOLO_CACHE_DIR``).
    `key` hashes the image's size and modification time (and :data:`NPY_CACHE_VERSION`), so an
    image that is replaced or edited never meets the cache of its old pixels, and ``f.jpg`` and
    ``f.png`` of one folder have caches of their own. Raises OSError when the image is gone."""
    from utils.data.verify import image_cache_folder

    p = Path(im_file)
    st = p.stat()
    key = hashlib.sha1(f"{NPY_CACHE_VERSION}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return image_cache_folder(p.parent) / f"{p.name}.{key}.npy"


_BROKEN_NPY: set[Path] = set()  # unreadable cache files already reported in this process


def read_image_cached(im_file: str | Path) -> np.ndarray:
    """:func:`read_image`, from the image's current ``.npy`` cache when there is one (see
    :func:`npy_cache_path`). A cache file that cannot be read is reported once and the image
    is decoded instead. Raises as :func:`read_image`."""
    try:
        npy = npy_cache_path(im_file)
    except OSError:
        return read_image(im_file)  # the image is gone: read_image says so
    if npy.is_file():
        try:
            return np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            if npy not in _BROKEN_NPY:
                _BROKEN_NPY.add(npy)
                LOGGER.warning(f"WARNING: {npy}: unreadable image cache ({e}); reading {im_file} instead")
    return read_image(im_file)


def write_image_cache(im_file: str | Path) -> Path:
    """Decode `im_file` into its ``.npy`` cache unless that is current; older caches of the same
    image in that folder are removed. Returns the cache path. Raises OSError when it cannot be
    written (the caller decides whether the folder may be written at all) and as :func:`read_image`."""
    npy = npy_cache_path(im_file)
    if npy.is_file():
        return npy
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, read_image(im_file), allow_pickle=False)
        os.replace(tmp, npy)  # atomic: a concurrent reader sees no file or a whole one
    finally:
        tmp.unlink(missing_ok=True)
    stale = re.compile(re.escape(Path(im_file).name) + r"\.[0-9a-f]{12}\.npy")
    for old in npy.parent.glob(f"{glob.escape(Path(im_file).name)}.*.npy"):
        if old != npy and stale.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return npy
