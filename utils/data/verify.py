"""Finding a dataset's images and labels, checking every one once, and caching the result.

Bad data never crashes a run: each problem is reported with the file it concerns, and the
image is either used (with a warning) or skipped. The rules, per image:

* The image must open with PIL, decode completely, and be at least 10 x 10 pixels (after
  its EXIF orientation). A JPEG without the end-of-image marker is used only when it still
  decodes completely (for instance trailing bytes after the marker); a truncated JPEG does
  not, and is skipped. User files are never rewritten.
* Missing label file: background image, counted under "missing labels".
  Empty label file: background image.
* Label rows are ``cls cx cy w h`` with normalised coordinates. A row with another number of
  columns (4, 6, ...), a value that is not a finite number, a class id that is negative,
  fractional or ``>= nc``, or a coordinate outside ``[0, 1]`` by more than
  :data:`COORD_TOLERANCE`, makes the whole label file invalid and the image is skipped as
  corrupt (as upstream YOLOv5 does: a half-read label file would silently teach the model
  that the dropped objects are background). Coordinates outside ``[0, 1]`` by less than
  the tolerance are clipped into it. Rows of an odd count >= 7 are segmentation polygons
  (``cls x1 y1 x2 y2 ...``) and are reduced to their bounding box.
* Identical rows are kept once, with a warning.

Results are cached in an ``.npz`` file (loaded with ``allow_pickle=False``, so it cannot
run code) beside the labels folder, keyed by a hash of every file's path, size and
modification time, ``nc`` and :data:`CACHE_VERSION`. When the folder is not writeable the
scan is simply repeated next time. The rules of where dataset caches go (beside the data,
or under ``$YOLO_CACHE_DIR``; never into a folder marked read-only) are
:func:`default_cache_path`, :func:`image_cache_folder` and :func:`may_write_cache`; the
label cache and ``--cache disk`` images both follow them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from utils.data.sources import IMG_FORMATS
from utils.logging import LOGGER

CACHE_VERSION = "yolo-labels-1"
CACHE_DIR_ENV = "YOLO_CACHE_DIR"  # optional folder for label caches (default: beside the labels)
COORD_TOLERANCE = 0.01  # how far outside [0, 1] a coordinate may stray before the file counts as invalid
MIN_IMAGE_SIZE = 10  # pixels, both sides
EXIF_ORIENTATION = 0x0112
JPEG_EOI = b"\xff\xd9"


# ----------------------------------------------------------------------------------- file lists


def list_image_files(path: str | Path | list | tuple, prefix: str = "") -> list[str]:
    """Image files named by `path`: a folder (searched recursively), a glob, a ``.txt`` list of
    image paths (relative ones resolve against the list's folder), a single image, or a list of
    any of these. Returns sorted absolute paths; raises FileNotFoundError when nothing is found."""
    items = list(path) if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for item in items:
        p = Path(item).expanduser()
        s = str(p)
        if any(ch in s for ch in "*?["):
            files += [f for f in glob.glob(s, recursive=True) if os.path.isfile(f)]
        elif p.is_dir():
            files += [str(f) for f in p.rglob("*") if f.is_file()]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    files.append(str(q if q.is_absolute() else p.parent / q))
        elif p.is_file():
            files.append(s)
        else:
            raise FileNotFoundError(f"{prefix}{p} does not exist")
    out = sorted({os.path.abspath(f) for f in files if f.rsplit(".", 1)[-1].lower() in IMG_FORMATS})
    if not out:
        raise FileNotFoundError(f"{prefix}no images found in {path} (formats: {', '.join(sorted(IMG_FORMATS))})")
    return out


def img2label_paths(im_files: list[str]) -> list[str]:
    """Label file of each image: the last ``/images/`` of the path becomes ``/labels/`` and the
    extension ``.txt`` (an image outside any ``images`` folder has its label beside it)."""
    a, b = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for f in im_files:
        head, sep, tail = f.rpartition(a)
        f = head + b + tail if sep else f
        out.append(os.path.splitext(f)[0] + ".txt")
    return out


# ----------------------------------------------------------------------------------- one image


def exif_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation (5-8 swap the sides)."""
    w, h = im.size
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF: the pixels are still fine
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


@dataclass
class Record:
    """Verification result of one image/label pair."""

    im_file: str
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    shape: tuple[int, int] = (0, 0)  # (w, h) after EXIF orientation
    corrupt: bool = False
    missing: bool = False
    empty: bool = False
    duplicates: int = 0
    msgs: list[str] = field(default_factory=list)


def verify_image(im_file: str) -> tuple[tuple[int, int], str | None]:
    """Check that an image decodes fully; returns its displayed (w, h) and an optional warning.
    Raises ValueError (with the reason) when the image cannot be used."""
    try:
        with Image.open(im_file) as im:
            im.verify()  # structure check (PNG chunk CRCs, ...)
        with Image.open(im_file) as im:
            fmt = im.format
            shape = exif_size(im)
            if fmt in ("JPEG", "MPO"):
                # decoding at 1/8 scale still reads the whole entropy-coded stream, at a fraction of the cost
                im.draft("RGB", (max(im.size[0] // 8, 1), max(im.size[1] // 8, 1)))
            im.load()
    except UnidentifiedImageError:
        raise ValueError("not an image (PIL cannot identify it)") from None
    except Exception as e:
        raise ValueError(f"cannot decode image: {e}") from None
    if shape[0] < MIN_IMAGE_SIZE or shape[1] < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {shape[0]}x{shape[1]} is below {MIN_IMAGE_SIZE} pixels")
    warning = None
    if fmt in ("JPEG", "MPO"):
        with open(im_file, "rb") as f:
            f.seek(-2, os.SEEK_END)
            has_eoi = f.read() == JPEG_EOI
        if not has_eoi:
            if ImageFile.LOAD_TRUNCATED_IMAGES:  # PIL was told to accept truncated data: we cannot tell
                raise ValueError("JPEG has no end-of-image marker (truncated)")
            warning = "JPEG has no end-of-image marker but decodes completely; used as is"
    return shape, warning


def parse_label_file(lb_file: str, nc: int | None = None) -> tuple[np.ndarray, int]:
    """Rows of a YOLO label file as (n, 5) float32 ``cls cx cy w h``, duplicates removed.
    Returns the labels and the number of duplicate rows dropped; raises ValueError when the file
    is invalid (see the module docstring)."""
    rows = []
    for k, line in enumerate(Path(lb_file).read_text(encoding="utf-8-sig").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        n = len(parts)
        if n != 5 and (n < 7 or n % 2 == 0):
            raise ValueError(f"row {k} has {n} columns, expected 5 (cls cx cy w h)")
        try:
            values = np.array(parts, dtype=np.float64)
        except ValueError:
            raise ValueError(f"row {k} is not numeric: {line.strip()[:60]!r}") from None
        if not np.isfinite(values).all():
            raise ValueError(f"row {k} has a non-finite value")
        if n > 5:  # polygon -> its bounding box
            xy = values[1:].reshape(-1, 2)
            (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
            values = np.array([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        rows.append(values)
    if not rows:
        return np.zeros((0, 5), np.float32), 0
    lb = np.stack(rows)
    cls = lb[:, 0]
    bad = (cls < 0) | (cls != np.round(cls))
    if bad.any():
        raise ValueError(f"invalid class id {cls[bad][0]:g} (must be a non-negative integer)")
    if nc is not None and (cls >= nc).any():
        raise ValueError(f"class id {int(cls.max())} >= nc={nc}")
    xywh = lb[:, 1:]
    if (xywh < -COORD_TOLERANCE).any() or (xywh > 1 + COORD_TOLERANCE).any():
        raise ValueError(f"coordinates outside [0, 1] (min {xywh.min():.4g}, max {xywh.max():.4g}): "
                         "labels must be normalised cx cy w h")
    lb[:, 1:] = xywh.clip(0, 1)
    lb = lb.astype(np.float32)
    _, first = np.unique(lb, axis=0, return_index=True)
    ndup = len(lb) - len(first)
    if ndup:
        lb = lb[np.sort(first)]  # keep the first copy of each row, in file order
    return lb, ndup


def verify_image_label(im_file: str, lb_file: str, nc: int | None = None) -> Record:
    """Verify one image and parse its label file; never raises."""
    r = Record(im_file)
    try:
        r.shape, warning = verify_image(im_file)
        if warning:
            r.msgs.append(f"WARNING: {im_file}: {warning}")
    except (ValueError, OSError) as e:
        r.corrupt = True
        r.msgs.append(f"WARNING: {im_file}: ignoring corrupt image: {e}")
        return r
    if not os.path.isfile(lb_file):
        r.missing = True
        return r
    try:
        r.labels, r.duplicates = parse_label_file(lb_file, nc)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        r.corrupt = True
        r.msgs.append(f"WARNING: {im_file}: ignoring image, invalid label file {lb_file}: {e}")
        return r
    r.empty = len(r.labels) == 0
    if r.duplicates:
        r.msgs.append(f"WARNING: {im_file}: {r.duplicates} duplicate label rows removed from {lb_file}")
    return r


# ----------------------------------------------------------------------------------- whole dataset


@dataclass
class ScanResult:
    """The usable images of a dataset (corrupt ones left out) with their labels and sizes."""

    im_files: list[str]
    labels: list[np.ndarray]  # (n, 5) float32 cls cx cy w h, normalised
    shapes: np.ndarray  # (n, 2) original (w, h) after EXIF orientation
    found: int = 0  # images listed
    missing: int = 0  # label file absent (background)
    empty: int = 0  # label file empty (background)
    corrupt: int = 0  # skipped
    duplicates: int = 0  # label rows removed
    msgs: list[str] = field(default_factory=list)
    cache_path: Path | None = None
    from_cache: bool = False

    @property
    def backgrounds(self) -> int:
        return sum(len(lb) == 0 for lb in self.labels)

    @property
    def instances(self) -> int:
        return int(sum(len(lb) for lb in self.labels))

    def summary(self, where: str | Path) -> str:
        s = (f"Scanning {where}... {len(self.im_files)} images, {self.backgrounds} backgrounds, "
             f"{self.missing} missing labels, {self.corrupt} corrupt ({self.instances} instances")
        s += f", {self.duplicates} duplicate rows removed)" if self.duplicates else ")"
        return s + (" [cached]" if self.from_cache else "")


def files_hash(im_files: list[str], label_files: list[str], nc: int | None) -> str:
    """Changes when any image or label file is added, removed, resized or touched."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, nc]).encode())
    for f in (*im_files, *label_files):
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0-\n".encode())
    return h.hexdigest()


def _elsewhere(beside: Path) -> tuple[Path, str] | None:
    """``($YOLO_CACHE_DIR, a hash of the default place)`` when the variable is set, else None."""
    d = os.getenv(CACHE_DIR_ENV)
    if not d:
        return None
    return Path(d).expanduser(), hashlib.sha1(str(beside.resolve()).encode()).hexdigest()[:12]


def default_cache_path(path: str | Path | list, label_files: list[str]) -> Path:
    """``labels/train2017.cache.npz`` beside the labels folder, or ``list.cache.npz`` beside a
    ``.txt`` image list. With ``$YOLO_CACHE_DIR`` set, the file goes there instead (named by
    a hash of that default place), so a shared or read-only dataset is never written to."""
    items = list(path) if isinstance(path, (list, tuple)) else [path]
    if len(items) == 1 and str(items[0]).endswith(".txt") and Path(items[0]).is_file():
        beside = Path(items[0]).with_suffix(".cache.npz")
    else:
        beside = Path(label_files[0]).parent.with_suffix(".cache.npz")
    away = _elsewhere(beside)
    if away:
        return away[0] / f"{beside.name[:-len('.cache.npz')]}-{away[1]}.cache.npz"
    return beside


def image_cache_folder(image_folder: str | Path) -> Path:
    """Where ``--cache disk`` writes the decoded images of `image_folder`: that folder itself, or
    with ``$YOLO_CACHE_DIR`` set a subfolder there named by the folder and a hash of its path
    (the label cache's rule)."""
    folder = Path(image_folder)
    away = _elsewhere(folder)
    return away[0] / f"{folder.name}-{away[1]}.images" if away else folder


def _load_cache(cache_path: Path, key: str) -> ScanResult | None:
    try:
        with np.load(cache_path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != CACHE_VERSION or meta.get("hash") != key:
                return None
            counts = np.cumsum(z["counts"])[:-1]
            labels = np.split(z["labels"].astype(np.float32), counts) if len(z["counts"]) else []
            return ScanResult(
                im_files=[str(f) for f in z["im_files"]], labels=list(labels),
                shapes=z["shapes"].astype(np.int64).reshape(-1, 2), msgs=[str(m) for m in z["msgs"]],
                cache_path=cache_path, from_cache=True,
                **{k: int(meta[k]) for k in ("found", "missing", "empty", "corrupt", "duplicates")},
            )
    except Exception:  # absent, unreadable, or written by another version: scan again
        return None


_READ_ONLY_WARNED: set[Path] = set()  # folders already named in this process (train and val share one)


def _marked_read_only(folder: Path) -> bool:
    """Whether `folder` grants no write permission to anyone. Root may write there regardless, but a
    dataset folder made read-only on purpose (shared, mounted) is left as it is."""
    try:
        return not folder.stat().st_mode & 0o222
    except OSError:
        return False


def may_write_cache(folder: Path, what: str, prefix: str = "") -> bool:
    """Whether a cache of `what` ("labels", "images") may be written into the dataset folder
    `folder`: not when the folder is marked read-only and ``$YOLO_CACHE_DIR`` is unset. Says so
    once per folder and process, naming the folder and the variable to set."""
    if os.getenv(CACHE_DIR_ENV) or not _marked_read_only(folder):
        return True
    if folder not in _READ_ONLY_WARNED:
        _READ_ONLY_WARNED.add(folder)
        LOGGER.warning(f"{prefix}WARNING: {folder} is read-only (mode {stat.filemode(folder.stat().st_mode)}), "
                       f"{what} not cached; set {CACHE_DIR_ENV}=<a writable folder> to cache them there")
    return False


def _save_cache(res: ScanResult, cache_path: Path, key: str) -> None:
    if not may_write_cache(cache_path.parent, "labels"):
        return
    meta = {"version": CACHE_VERSION, "hash": key, "found": res.found, "missing": res.missing,
            "empty": res.empty, "corrupt": res.corrupt, "duplicates": res.duplicates}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "im_files": np.array(res.im_files, dtype=str),
        "shapes": np.asarray(res.shapes, np.int64).reshape(-1, 2),
        "counts": np.array([len(lb) for lb in res.labels], np.int64),
        "labels": np.concatenate(res.labels, 0) if res.labels else np.zeros((0, 5), np.float32),
        "msgs": np.array(res.msgs, dtype=str),
    }
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    try:
        if os.getenv(CACHE_DIR_ENV):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache_path)  # atomic: concurrent readers see the old or the new file
        res.cache_path = cache_path
    except OSError as e:
        LOGGER.warning(f"WARNING: cache folder {cache_path.parent} is not writeable, labels not cached ({e})")
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def scan_dataset(path: str | Path | list, nc: int | None = None, prefix: str = "", cache: bool = True,
                 cache_path: str | Path | None = None, workers: int | None = None) -> ScanResult:
    """List, verify and (with `cache`) cache a dataset's images and labels; logs the summary
    line and every warning. Raises FileNotFoundError when there are no images at all."""
    im_files = list_image_files(path, prefix)
    label_files = img2label_paths(im_files)
    cache_path = Path(cache_path) if cache_path else default_cache_path(path, label_files)
    key = files_hash(im_files, label_files, nc)
    where = Path(label_files[0]).parent
    res = _load_cache(cache_path, key) if cache else None
    if res is None:
        res = _scan(im_files, label_files, nc, workers, prefix, where)
        if cache:
            _save_cache(res, cache_path, key)
    LOGGER.info(prefix + res.summary(cache_path if res.from_cache else where))
    for m in res.msgs:
        LOGGER.warning(prefix + m)
    _warn_shared_label_files(im_files, label_files, prefix)
    return res


def _warn_shared_label_files(im_files: list[str], label_files: list[str], prefix: str = "") -> None:
    """One warning when images of one stem and folder but different formats (``f.jpg``, ``f.png``) read
    the same label file: both get its boxes, which fit at most one of them."""
    by_label: dict[str, list[str]] = {}
    for im, lb in zip(im_files, label_files):
        by_label.setdefault(lb, []).append(im)
    shared = [ims for ims in by_label.values() if len(ims) > 1]
    if shared:
        LOGGER.warning(f"{prefix}WARNING: {sum(map(len, shared))} images share {len(shared)} label file(s), e.g. "
                       f"{' and '.join(Path(i).name for i in shared[0])} both read "
                       f"{Path(img2label_paths(shared[0][:1])[0])}: rename one image of each pair (or keep one "
                       "format) so that each image has labels of its own")


def _scan(im_files, label_files, nc, workers, prefix, where) -> ScanResult:
    workers = workers or min(8, os.cpu_count() or 1)
    res = ScanResult([], [], np.zeros((0, 2), np.int64), found=len(im_files))
    shapes = []
    show = len(im_files) >= 1000 and LOGGER.isEnabledFor(logging.INFO)
    with ThreadPoolExecutor(workers) as pool:
        records = pool.map(verify_image_label, im_files, label_files, [nc] * len(im_files))
        if show:
            from tqdm import tqdm

            records = tqdm(records, total=len(im_files), desc=f"{prefix}Scanning {where}")
        for r in records:
            res.msgs += r.msgs
            if r.corrupt:
                res.corrupt += 1
                continue
            res.missing += r.missing
            res.empty += r.empty
            res.duplicates += r.duplicates
            res.im_files.append(r.im_file)
            res.labels.append(r.labels)
            shapes.append(r.shape)
    res.shapes = np.array(shapes, np.int64).reshape(-1, 2)
    return res
