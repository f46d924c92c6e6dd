"""The Python API: load a detector and run it on images, YOLOv5-hub style.

    from models.hub import load
    model = load("yolov5n.pt")                      # a checkpoint (ours or official)
    model = load("yolov5n_CBAM", pretrained=False)  # any model config, random weights
    results = model(["bus.jpg", cv2.imread("zidane.jpg"), Image.open("x.png")], size=640)
    results.xyxy[0]          # (n, 6) tensor: x1, y1, x2, y2 (pixels), confidence, class
    results.pandas().xyxy[0] # DataFrame: xmin ymin xmax ymax confidence class name
    results.save()           # annotated images to runs/detect/exp*

``hubconf.py`` at the repository root exposes the same through ``torch.hub.load(repo, ...)``.

Colour order of inputs: **numpy arrays are taken as BGR** (what ``cv2.imread`` returns),
**PIL images as RGB** (what PIL gives). This differs from upstream YOLOv5, which takes numpy
arrays as RGB; here the OpenCV convention of the rest of the project applies.

The wrapped model may be anything callable on a (B, 3, H, W) float RGB batch in [0, 1]
that returns Detect-style predictions (``(B, N, 5 + nc)`` rows of cx, cy, w, h, objectness,
class scores, in input pixels; or a tuple whose first element is that) and has ``stride``
(int, list or tensor) and ``names`` (list or dict) attributes: a ``DetectionModel`` or an
inference backend for exported files. Loaders per file suffix live in :data:`LOADERS`.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import RELEASE_NAMES, attempt_download, load_checkpoint, load_model
from utils.boxes import non_max_suppression, scale_boxes, xyxy2xywh
from utils.cli import increment_path
from utils.data.augment import letterbox
from utils.data.dataset import read_image
from utils.logging import LOGGER
from utils.plots import Annotator, color, crop_box, save_one_box

ImageLike = Any  # str | Path | PIL.Image.Image | np.ndarray
URL_PREFIXES = ("http://", "https://")
PANDAS_COLUMNS = {
    "xyxy": ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"],
    "xyxyn": ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"],
    "xywh": ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"],
    "xywhn": ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"],
}


# ---------------------------------------------------------------------------------------------
# inputs


def _fetch_url(url: str, timeout: float = 30.0) -> np.ndarray:
    """Download an image URL to a temporary file and read it; one clear error line when offline."""
    suffix = Path(urllib.parse.urlparse(url).path).suffix or ".jpg"
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"image{suffix}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310
                f.write_bytes(r.read())
        except Exception as e:
            raise FileNotFoundError(f"cannot download image {url} ({type(e).__name__}: {e})") from None
        return read_image(str(f))


def _array_to_bgr(a: np.ndarray, name: str) -> np.ndarray:
    """Check an HWC numpy image: uint8, 1, 3 or 4 channels (grey is repeated, alpha dropped)."""
    if a.dtype != np.uint8:
        raise TypeError(f"{name}: numpy images must be uint8 (0-255), got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: numpy images must be HxW or HxWxC with C in 1, 3, 4 (BGR order), "
                         f"got shape {a.shape}; transpose CHW arrays first")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def to_bgr(im: ImageLike, i: int = 0) -> tuple[np.ndarray, str]:
    """One input as an (H, W, 3) BGR uint8 array and a file name for saving.

    `im`: a local path, an http(s) URL, a PIL image (RGB; EXIF orientation applied) or a
    numpy array (HWC, **BGR**). Raises FileNotFoundError for unreadable paths or URLs,
    TypeError for other types or dtypes, ValueError for bad array shapes.
    """
    if isinstance(im, (str, Path)):
        s = str(im)
        if s.lower().startswith(URL_PREFIXES):
            return _fetch_url(s), Path(urllib.parse.urlparse(s).path).name or f"image{i}.jpg"
        if not Path(s).is_file():
            raise FileNotFoundError(f"image {s} not found")
        return read_image(s), Path(s).name
    if isinstance(im, np.ndarray):
        return _array_to_bgr(im, f"image {i}"), f"image{i}.jpg"
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - pillow is a requirement
        Image = None
    if Image is not None and isinstance(im, Image.Image):
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        name = Path(getattr(im, "filename", "") or f"image{i}.jpg").name
        return np.ascontiguousarray(rgb[:, :, ::-1]), name
    raise TypeError(f"image {i}: unsupported input type {type(im).__name__}; give a path, URL, PIL image or "
                    "HWC BGR numpy array")


def batch_shape(shapes: Sequence[tuple[int, int]], size: int | tuple[int, int], stride: int) -> tuple[int, int]:
    """The (h, w) every image of a batch is letterboxed to: each original (h, w) scaled to fit
    `size` (int = long side, or (h, w)), the largest of them, rounded up to a multiple of `stride`."""
    sh, sw = (size, size) if isinstance(size, int) else size
    scaled = np.array([(h * min(sh / h, sw / w), w * min(sh / h, sw / w)) for h, w in shapes]).max(0)
    return tuple(int(math.ceil(x / stride) * stride) for x in scaled)


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class PandasResults:
    """``results.pandas()``: per-format lists with one DataFrame per image; indexing gives ``xyxy``."""

    xyxy: list
    xyxyn: list
    xywh: list
    xywhn: list

    def __getitem__(self, i: int):
        return self.xyxy[i]

    def __len__(self) -> int:
        return len(self.xyxy)


class Results:
    """Detections of one call of :class:`Detector`.

    ``pred[i]`` / ``xyxy[i]``: (n, 6) float CPU tensor per image, rows x1, y1, x2, y2 in pixels of
    the original image, confidence, class id; ``xyxyn`` the same normalised by width/height;
    ``xywh`` / ``xywhn`` centre x, centre y, width, height (pixels / normalised), confidence,
    class. ``ims`` are the original images (BGR uint8), ``files`` their names, ``times`` the
    milliseconds per image spent in pre-processing, inference and NMS.
    """

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str], names: list[str],
                 times: tuple[float, float, float] = (0.0, 0.0, 0.0), shape: tuple = ()):
        self.ims, self.pred, self.files, self.names = ims, pred, files, names
        self.times, self.shape, self.n = times, shape, len(pred)
        gn = [torch.tensor([im.shape[1], im.shape[0], im.shape[1], im.shape[0], 1.0, 1.0]) for im in ims]
        self.xyxy = pred
        self.xywh = [torch.cat((xyxy2xywh(p[:, :4]), p[:, 4:]), 1) for p in pred]
        self.xyxyn = [p / g for p, g in zip(self.xyxy, gn)]
        self.xywhn = [p / g for p, g in zip(self.xywh, gn)]

    def __len__(self) -> int:
        return self.n

    def __str__(self) -> str:
        lines = []
        for i, (p, im, f) in enumerate(zip(self.pred, self.ims, self.files)):
            counts = {self.names[int(c)]: int((p[:, 5] == c).sum()) for c in p[:, 5].unique()}
            found = ", ".join(f"{n} {k}" for k, n in counts.items()) or "(no detections)"
            lines.append(f"image {i + 1}/{self.n} {f}: {im.shape[0]}x{im.shape[1]} {found}")
        pre, inf, nms = self.times
        lines.append(f"Speed: {pre:.1f}ms pre-process, {inf:.1f}ms inference, {nms:.1f}ms NMS per image "
                     f"at shape {tuple(self.shape)}")
        return "\n".join(lines)

    def print(self) -> None:
        LOGGER.info(str(self))

    def pandas(self) -> PandasResults:
        """DataFrames (upstream's columns, e.g. xmin ymin xmax ymax confidence class name for
        ``xyxy``), one per image, for each box format."""
        import pandas as pd

        def frames(fmt: str) -> list:
            out = []
            for p in getattr(self, fmt):
                rows = [[*r[:5], int(r[5]), self.names[int(r[5])]] for r in p.tolist()]
                out.append(pd.DataFrame(rows, columns=PANDAS_COLUMNS[fmt]))
            return out

        return PandasResults(*(frames(k) for k in ("xyxy", "xyxyn", "xywh", "xywhn")))

    def render(self, labels: bool = True, line_width: int | None = None) -> list[np.ndarray]:
        """Annotated copies of the images (BGR uint8, original sizes); the originals are untouched."""
        out = []
        for im, p in zip(self.ims, self.pred):
            ann = Annotator(im.copy(), line_width=line_width)
            for *box, conf, c in reversed(p.tolist()):
                label = f"{self.names[int(c)]} {conf:.2f}" if labels else ""
                ann.box_label(box, label, color=color(int(c), bgr=True))
            out.append(ann.result())
        return out

    def save(self, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False, labels: bool = True) -> Path:
        """Write the rendered images as JPEG/PNG into `save_dir` (incremented: exp2, exp3 ... unless
        `exist_ok`), named after the inputs; returns the folder."""
        import cv2

        d = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for f, im in zip(self.files, self.render(labels)):
            name = f if Path(f).suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else f"{Path(f).stem}.jpg"
            cv2.imwrite(str(d / name), im)
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {d}")
        return d

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """Every detection cut out of its original image (box enlarged by 2% + 10 px, as detect.py's
        ``--save-crop``). Returns dicts ``box`` (4 pixel floats), ``conf``, ``cls``, ``label``, ``im``
        (BGR crop); with `save`, crops go to ``<save_dir>/crops/<class name>/<image stem>.jpg``."""
        d = increment_path(save_dir, exist_ok=exist_ok, mkdir=True) if save else None
        crops = []
        for im, f, p in zip(self.ims, self.files, self.pred):
            for *box, conf, c in reversed(p.tolist()):
                name = self.names[int(c)]
                file = d / "crops" / name / f"{Path(f).stem}.jpg" if save else None
                crop = save_one_box(box, im, file) if save else crop_box(box, im)
                crops.append({"box": box, "conf": conf, "cls": int(c), "label": f"{name} {conf:.2f}", "im": crop})
        if save:
            LOGGER.info(f"Saved {len(crops)} crops to {d / 'crops'}")
        return crops


# ---------------------------------------------------------------------------------------------
# the wrapper


def _stride_of(model: Any) -> int:
    s = getattr(model, "stride", None)
    if s is None:
        raise TypeError(f"{type(model).__name__} has no 'stride' attribute; the Detector needs the model's max stride")
    return int(torch.as_tensor(s, dtype=torch.float32).max())


def _names_of(model: Any) -> list[str]:
    names = getattr(model, "names", None)
    if names is None:
        raise TypeError(f"{type(model).__name__} has no 'names' attribute (class names)")
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


class Detector(nn.Module):
    """Any-input detector around a model (see the module docstring for what a model must offer).

    Settings as attributes, as upstream's ``AutoShape``: ``conf`` (0.25), ``iou`` (0.45),
    ``classes`` (None = all), ``agnostic`` (False), ``multi_label`` (False), ``max_det`` (1000).
    """

    def __init__(self, model: Callable, device: torch.device | str | None = None):
        super().__init__()
        self.model = model
        self.stride = _stride_of(model)
        self.names = _names_of(model)
        self.conf, self.iou, self.classes = 0.25, 0.45, None
        self.agnostic, self.multi_label, self.max_det = False, False, 1000
        self._device = torch.device(device) if device is not None else None

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device
        p = next(self.model.parameters(), None) if isinstance(self.model, nn.Module) else None
        return p.device if p is not None else torch.device("cpu")

    def preprocess(self, ims: list[np.ndarray], size: int | tuple[int, int]) -> torch.Tensor:
        """BGR HWC uint8 images -> one (B, 3, H, W) float RGB batch in [0, 1], each letterboxed
        (centred, grey padding) to the common :func:`batch_shape`."""
        fixed = getattr(self.model, "dynamic", True) is False  # an export fixed at one input size
        shape = tuple(self.model.imgsz) if fixed else batch_shape([im.shape[:2] for im in ims], size, self.stride)
        asked = max(size) if isinstance(size, tuple) else size
        if fixed and max(shape) != asked and not getattr(self, "_said_fixed", False):
            self._said_fixed = True  # once per model, as detect.py says it once per run
            name = getattr(self.model, "path", "the model")
            LOGGER.info(f"{name} is a fixed-shape export: letterboxing to its {shape[0]}x{shape[1]}, "
                        f"not size={size} (export with --dynamic for free sizes)")
        x = np.stack([letterbox(im, shape, auto=False, stride=self.stride)[0] for im in ims])
        x = np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))
        x = torch.from_numpy(x).to(self.device).float() / 255
        return x.half() if getattr(self.model, "fp16", False) else x  # a backend that takes FP16 inputs

    @torch.inference_mode()
    def forward(self, ims: ImageLike | list[ImageLike], size: int | tuple[int, int] = 640,
                augment: bool = False) -> Results:
        """Detect objects in one input or a list of inputs (paths, URLs, PIL RGB images, numpy
        HWC BGR arrays). `size`: inference size in pixels (the long side, or (h, w)). Boxes
        come back in each original image's pixels. Raises as :func:`to_bgr` for bad inputs."""
        sizes = size if isinstance(size, (tuple, list)) else (size,)
        if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in sizes):
            raise ValueError(f"size={size}: image sizes must be positive whole numbers of pixels, e.g. size=640")
        t0 = time.perf_counter()
        items = ims if isinstance(ims, (list, tuple)) else [ims]
        if not items:
            raise ValueError("no images given")
        loaded = [to_bgr(im, i) for i, im in enumerate(items)]
        originals, files = [a for a, _ in loaded], [f for _, f in loaded]
        x = self.preprocess(originals, size)
        t1 = time.perf_counter()
        pred = self.model(x, augment=True) if augment else self.model(x)
        t2 = time.perf_counter()
        dets = non_max_suppression(pred, self.conf, self.iou, self.classes, self.agnostic, self.multi_label,
                                   max_det=self.max_det)
        for d, im in zip(dets, originals):
            d[:, :4] = scale_boxes(x.shape[2:], d[:, :4], im.shape[:2])
        t3 = time.perf_counter()
        times = tuple((b - a) * 1e3 / len(items) for a, b in ((t0, t1), (t1, t2), (t2, t3)))
        return Results(originals, [d.float().cpu() for d in dets], files, self.names, times, tuple(x.shape))


# ---------------------------------------------------------------------------------------------
# loading

OFFICIAL = re.compile(r"^yolov5[nsmlx]6?$")


def _load_pt(path: str | Path, device: torch.device) -> nn.Module:
    return load_model(path, device)


# file suffix -> loader(path, device) returning a model (see the module docstring); backends for
# exported formats register here
LOADERS: dict[str, Callable[[str | Path, torch.device], Any]] = {".pt": _load_pt}


def _from_config(name: str, pretrained: bool, channels: int, classes: int | None) -> nn.Module:
    """A model built from a config name; with `pretrained`, the official checkpoint of its base
    (``yolov5n_CBAM`` -> ``yolov5n.pt``) transferred into it, new attention blocks at identity."""
    from models.transfer import load_pretrained
    from models.yolo import DetectionModel

    stem = Path(name).stem
    if pretrained and OFFICIAL.match(stem) and classes in (None, 80) and channels == 3:
        return load_model(f"{stem}.pt", fuse=False)
    model = DetectionModel(name, ch=channels, nc=classes)
    if pretrained:
        base = re.match(r"^yolov5[nsmlx]6?", stem)
        if base is None or f"{base.group(0)}.pt" not in RELEASE_NAMES:
            raise ValueError(f"{name}: no official checkpoint to start from; use pretrained=False or load('your.pt')")
        ckpt = load_checkpoint(attempt_download(f"{base.group(0)}.pt"))
        record = ckpt.get("ema") or ckpt["model"]
        load_pretrained(record, model, source=f"{base.group(0)}.pt")
        if record.get("names") and len(record["names"]) == model.nc:  # same classes: keep their names
            model.names = list(record["names"])
    return model


def load(name: str | Path, pretrained: bool = True, channels: int = 3, classes: int | None = None,
         autoshape: bool = True, device: str | torch.device | None = None, half: bool = False
         ) -> Detector | nn.Module:
    """Load a detector for Python use.

    `name`: a checkpoint file (``best.pt``; official names such as ``yolov5s.pt`` are downloaded
    when missing and online, else FileNotFoundError with one line), another file type with a
    loader in :data:`LOADERS`, an exported model (``best.onnx``, ``best.torchscript``,
    ``best_openvino_model/``: opened through :func:`models.backends.load_backend`; a fixed-shape
    export letterboxes every batch to its own size), or a model config name or YAML (``yolov5n``, ``yolov5n_CBAM``,
    ``path/to/cfg.yaml``): built with `channels` input channels and `classes` classes, random
    weights unless `pretrained` (then the official base checkpoint, see :func:`_from_config`).
    `half`: reduced precision for a model file, as ``--half`` in detect.py: FP16 on CUDA, bf16 on a
    CPU with native bf16 (AVX512_BF16 or AMX), else FP32 with one line saying so; the file is then
    opened through :func:`models.backends.load_backend` (a ``.pt`` too, fused), whose "Loaded ..."
    line names the precision.
    Returns a :class:`Detector` (eval mode) or, with ``autoshape=False``, the bare model.
    Raises FileNotFoundError (missing file or config), CheckpointError (unreadable checkpoint),
    ValueError (unsupported file type; `half` with a model config).
    """
    from models.backends import BACKENDS, format_key, load_backend
    from utils.device import select_device

    dev = select_device("" if device is None else device, verbose=False)
    s = str(name)
    suffix = Path(s).suffix.lower()
    if half and (format_key(s) in BACKENDS or Path(s).is_dir()):  # reduced precision is the backends' concern
        model = load_backend(s, dev, half=True)
    elif suffix in LOADERS:
        model = LOADERS[suffix](s, dev)
    elif format_key(s) in BACKENDS or Path(s).is_dir():  # an export (.onnx, .torchscript, *_openvino_model/)
        model = load_backend(s, dev)  # a folder of another name: one line, with a hint when it holds an .xml
    elif half and suffix in ("", ".yaml", ".yml"):
        raise ValueError(f"{s}: half=True applies to model files (.pt or an export), not to a model built from "
                         "a config; load the trained .pt with half=True")
    elif suffix in ("", ".yaml", ".yml"):
        model = _from_config(s, pretrained, channels, classes).to(dev).eval()
    else:
        raise ValueError(f"{s}: unsupported model file type {suffix!r}; supported: {sorted(LOADERS)} and model YAMLs")
    if isinstance(model, nn.Module):
        model.eval()
    return Detector(model, device=dev) if autoshape else model
