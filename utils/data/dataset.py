"""The YOLO detection dataset and its data loader, for training and validation.

Validation (``augment=False``, usually ``rect=True, pad=0.5``): each image is read with OpenCV,
resized so its long side is `img_size` (area interpolation when shrinking), and letterboxed to
its batch's shape without further scaling. Training (``augment=True``): 4-image mosaics cropped
by a random perspective warp, optional mixup, HSV jitter and flips, all driven by the
hyperparameter dict (keys as in ``data/hyps/hyp.scratch-*.yaml``); with ``rect=True`` there is
no mosaic, only letterbox to the batch shape plus the other augmentations.
"""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as nn_functional
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data.augment import (
    augment_hsv,
    copy_paste,
    flip_lr,
    flip_ud,
    letterbox,
    mixup,
    mosaic4,
    random_perspective,
)
from utils.data.images import (
    read_image,  # the shared reader, also imported from here
    read_image_cached,
    write_image_cache,
)
from utils.data.verify import image_cache_folder, img2label_paths, may_write_cache, scan_dataset
from utils.logging import LOGGER

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HYP = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"
CACHE_MODES = (None, "ram", "disk")


def load_hyp(hyp: str | Path | dict | None = None) -> dict:
    """A hyperparameter dict from a YAML file (default: ``hyp.scratch-low.yaml``) or a dict.

    Unquoted numbers in exponent form without a dot (``lr0: 1e-3``) are read as floats, as YAML 1.2
    does; PyYAML's YAML 1.1 rules would make them strings, which the range check then refuses."""
    if isinstance(hyp, dict):
        return dict(hyp)
    import yaml

    return yaml.load(Path(hyp or DEFAULT_HYP).read_text(), Loader=_number_loader())  # noqa: S506 - a SafeLoader


def _number_loader():
    """A SafeLoader that also resolves YAML 1.2 floats (``1e-3``, ``2E5``) PyYAML leaves as strings."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
    return Loader


class YoloDataset(Dataset):
    """Images and YOLO labels for training (``augment=True``) or validation.

    Items are ``(img, labels, path, shapes)``: `img` a (3, H, W) uint8 RGB tensor; `labels` an
    (n, 6) float tensor ``[0, cls, cx, cy, w, h]`` normalised to `img` (column 0 is filled with
    the image's index in its batch by :meth:`collate_fn`); `shapes` is
    ``((h0, w0), ((gain_h, gain_w), (pad_w, pad_h)))`` to map boxes back to the original image
    with ``utils.boxes.scale_boxes(img.shape[1:], boxes, *shapes)`` (None for mosaics).
    """

    def __init__(
        self,
        img_path: str | Path | list,
        img_size: int = 640,
        batch_size: int = 16,
        augment: bool = False,
        hyp: dict | str | Path | None = None,
        rect: bool = False,
        cache_images: str | bool | None = None,
        single_cls: bool = False,
        stride: int = 32,
        pad: float = 0.0,
        prefix: str = "",
        nc: int | None = None,
    ):
        if cache_images is True:
            cache_images = "ram"
        if cache_images not in CACHE_MODES and cache_images is not False:
            raise ValueError(f"cache_images must be None, 'ram' or 'disk', got {cache_images!r}")
        self.img_size = img_size
        self.augment = augment
        self.hyp = load_hyp(hyp) if augment else (load_hyp(hyp) if hyp is not None else None)
        self.rect = rect
        self.mosaic = augment and not rect
        self.mosaic_border = (-img_size // 2, -img_size // 2)
        self.stride = stride
        self.prefix = prefix
        self.path = img_path

        scan = scan_dataset(img_path, nc=nc, prefix=prefix)
        self.scan = scan
        if not scan.im_files:
            raise ValueError(f"{prefix}no usable images in {img_path}: all {scan.found} are corrupt (see warnings)")
        if augment and scan.instances == 0:
            raise ValueError(f"{prefix}no labels found in {img_path}, cannot train")
        self.im_files = list(scan.im_files)
        self.label_files = img2label_paths(self.im_files)
        self.labels = [lb.copy() for lb in scan.labels]
        self.shapes = np.asarray(scan.shapes, dtype=np.int64).reshape(-1, 2)  # (w, h)
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0

        n = len(self.im_files)
        self.batch = np.arange(n) // max(int(batch_size), 1)  # batch index of each image
        self.n = n
        self.indices = range(n)
        self.batch_shapes = None
        if rect:
            self._set_rect_shapes(batch_size, stride, pad)

        self.ims: list[np.ndarray | None] = [None] * n
        self.im_hw0: list[tuple[int, int] | None] = [None] * n
        self.im_hw: list[tuple[int, int] | None] = [None] * n
        self.cache_mode = cache_images or None
        if self.cache_mode:
            self._cache_images(self.cache_mode)

    # ------------------------------------------------------------------ rectangular batches

    def _set_rect_shapes(self, batch_size: int, stride: int, pad: float) -> None:
        """Sort images by aspect ratio and give each batch the smallest stride-multiple
        letterbox shape (h, w) that fits its images with the long side at `img_size`."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        # numpy's default (unstable) sort, as upstream: images of equal aspect ratio that straddle
        # a batch boundary then land in the same batches as in the reference, hence the same mAP
        order = ar.argsort()
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        ar = ar[order]
        nb = int(self.batch[-1]) + 1
        rel = np.ones((nb, 2))  # (h, w) relative to img_size
        for i in range(nb):
            a = ar[self.batch == i]
            lo, hi = a.min(), a.max()
            if hi < 1:  # all landscape: full width, height of the tallest
                rel[i] = [hi, 1]
            elif lo > 1:  # all portrait: full height, width of the widest
                rel[i] = [1, 1 / lo]
        self.batch_shapes = (np.ceil(rel * self.img_size / stride + pad).astype(int) * stride)
        if self.augment:  # training: no side below 2 strides (1x1 last feature maps break batch norm)
            self.batch_shapes = np.maximum(self.batch_shapes, 2 * stride)

    # ------------------------------------------------------------------ images

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image `i` (BGR) with its long side resized to `img_size`; returns it, (h0, w0), (h, w)."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        if self.cache_mode == "disk":  # the .npy only while it matches the image (see npy_cache_path)
            im = read_image_cached(self.im_files[i])
        else:
            im = read_image(self.im_files[i])
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def calibration_batch(self, n: int, size: int) -> torch.Tensor:
        """`n` images spread evenly over the dataset (first, last and between), letterboxed to
        `size` x `size`, as a float (n, 3, size, size) RGB batch in 0..1, without augmentation and
        without drawing random numbers (training's random streams stay as they are). For
        data-dependent initialisation (models.transfer.calibrate_new_blocks). Raises ValueError
        for n < 1 or an empty dataset."""
        if n < 1 or not len(self.im_files):
            raise ValueError(f"calibration_batch needs n >= 1 images from a non-empty dataset (n={n}, "
                             f"{len(self.im_files)} images)")
        idx = np.unique(np.linspace(0, len(self.im_files) - 1, min(n, len(self.im_files))).round().astype(int))
        ims = []
        for i in idx:
            im = letterbox(self.load_image(int(i))[0], size, auto=False, scaleup=True)[0]
            ims.append(torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))))
        return torch.stack(ims).float() / 255

    def _cache_images(self, mode: str) -> None:
        if mode == "ram":
            need = sum(self.img_size**2 * w * h / max(w, h) ** 2 * 3 for w, h in self.shapes)
            avail = _available_memory()
            if avail is not None and need * 1.5 > avail:
                LOGGER.warning(f"{self.prefix}WARNING: caching images needs {need / 1e9:.1f} GB, only "
                               f"{avail / 1e9:.1f} GB available; images not cached")
                self.cache_mode = None
                return
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            if mode == "disk":
                self._cache_disk(pool)
                return
            for i, (im, hw0, hw) in enumerate(pool.map(self.load_image, range(self.n))):
                self.ims[i], self.im_hw0[i], self.im_hw[i] = im, hw0, hw
        LOGGER.info(f"{self.prefix}Cached {self.n} images (ram)")

    def _cache_disk(self, pool: ThreadPoolExecutor) -> None:
        """Write each image's ``.npy`` (see :func:`utils.data.images.npy_cache_path`) where the
        dataset cache rules allow it; images of read-only folders are read from their files."""
        folders = {str(Path(f).parent) for f in self.im_files}
        allowed = {d for d in sorted(folders) if may_write_cache(image_cache_folder(d), "images", self.prefix)}
        todo = [f for f in self.im_files if str(Path(f).parent) in allowed]

        def write(f: str) -> str | None:
            try:
                write_image_cache(f)
            except (OSError, ValueError) as e:
                return f"{f}: {e}"
            return None

        failed = [e for e in pool.map(write, todo) if e]
        if failed:
            LOGGER.warning(f"{self.prefix}WARNING: cannot write .npy image cache ({failed[0]}); "
                           "reading the images instead")
            self.cache_mode = None
            return
        where = sorted({str(image_cache_folder(d)) for d in allowed})
        LOGGER.info(f"{self.prefix}Cached {len(todo)}/{self.n} images (disk)" + (f" in {', '.join(where)}" if where else
                    " (no cache folder could be written; see the warnings above)"))

    # ------------------------------------------------------------------ items

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        hyp = self.hyp
        if self.mosaic and random.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(index)
            shapes = None
            if random.random() < hyp.get("mixup", 0.0):
                img, labels = mixup(img, labels, *self.load_mosaic(random.choice(self.indices)))
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            shape = tuple(int(x) for x in self.batch_shapes[self.batch[index]]) if self.rect else self.img_size
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = (h0, w0), ((h * ratio[1] / h0, w * ratio[0] / w0), (float(pad[0]), float(pad[1])))
            labels = self.labels[index].astype(np.float64)
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
            if self.augment:
                img, labels = random_perspective(img, labels, degrees=hyp["degrees"], translate=hyp["translate"],
                                                 scale=hyp["scale"], shear=hyp["shear"],
                                                 perspective=hyp["perspective"])

        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            if random.random() < hyp["flipud"]:
                img = flip_ud(img, labels)
            if random.random() < hyp["fliplr"]:
                img = flip_lr(img, labels)

        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        img = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(img), labels_out, self.im_files[index], shapes

    def load_mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """A mosaic of image `index` and three random others, warped and cropped to `img_size`;
        labels ``cls x1 y1 x2 y2`` in pixels."""
        hyp = self.hyp
        indices = [index, *random.choices(self.indices, k=3)]
        random.shuffle(indices)
        ims = [self.load_image(i)[0] for i in indices]
        img4, labels4 = mosaic4(ims, [self.labels[i] for i in indices], self.img_size)
        img4, labels4 = copy_paste(img4, labels4, p=hyp.get("copy_paste", 0.0))
        return random_perspective(img4, labels4, degrees=hyp["degrees"], translate=hyp["translate"],
                                  scale=hyp["scale"], shear=hyp["shear"], perspective=hyp["perspective"],
                                  border=self.mosaic_border)

    @staticmethod
    def collate_fn(batch):
        """Stack images (B, 3, H, W) uint8; concatenate labels (N, 6) with column 0 = image index."""
        ims, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(ims, 0), torch.cat(labels, 0), paths, shapes

    @staticmethod
    def collate_fn4(batch):
        """Quad collate (``train.py --quad``): every 4 items become one image of twice the side,
        either (probability 0.5) the first item upscaled 2x (bilinear) or the four tiled 2x2
        (first/second down the left column, third/fourth down the right). Returns (B/4, 3, 2H, 2W)
        uint8, labels (N, 6) with normalised boxes mapped into the new image, and the first
        item's path and shapes of each group. Items past the last full group of 4 are dropped."""
        ims, labels, paths, shapes = zip(*batch)
        n = len(ims) // 4
        if n == 0:
            raise ValueError(f"--quad needs batches of at least 4 images, got {len(ims)}")
        out_ims, out_labels = [], []
        half = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
        down, right = torch.tensor([0.0, 0, 0, 1, 0, 0]), torch.tensor([0.0, 0, 1, 0, 0, 0])
        for i in range(n):
            j = 4 * i
            if random.random() < 0.5:
                im = nn_functional.interpolate(ims[j][None].float(), scale_factor=2.0, mode="bilinear",
                                               align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
                lb = labels[j].clone()
            else:
                im = torch.cat((torch.cat((ims[j], ims[j + 1]), 1), torch.cat((ims[j + 2], ims[j + 3]), 1)), 2)
                lb = torch.cat((labels[j], labels[j + 1] + down, labels[j + 2] + right,
                                labels[j + 3] + down + right), 0) * half
            lb[:, 0] = i
            out_ims.append(im)
            out_labels.append(lb)
        return torch.stack(out_ims, 0), torch.cat(out_labels, 0), paths[::4][:n], shapes[::4][:n]


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def seed_worker(worker_id: int) -> None:
    """Give each loader worker its own reproducible `random` / `np.random` streams (derived from
    the loader's seeded generator) and keep OpenCV single-threaded inside workers."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)


def create_dataloader(
    path: str | Path | list,
    imgsz: int,
    batch_size: int,
    stride: int,
    single_cls: bool = False,
    hyp: dict | str | Path | None = None,
    augment: bool = False,
    cache: str | bool | None = None,
    pad: float = 0.0,
    rect: bool = False,
    rank: int = -1,
    workers: int = 8,
    prefix: str = "",
    shuffle: bool = False,
    seed: int = 0,
    nc: int | None = None,
    image_weights: bool = False,
    quad: bool = False,
) -> tuple[DataLoader, YoloDataset]:
    """A DataLoader over a :class:`YoloDataset` and the dataset itself.

    `rank` is the process's local rank under torchrun (-1 when not distributed): the local main
    process builds the label cache first, and each process gets a DistributedSampler (call
    ``loader.sampler.set_epoch(epoch)`` every epoch). Workers: at most `workers`, the CPUs per
    process and the batch size (none for batch size 1). Workers persist across epochs.
    `image_weights`: the sampler is a :class:`~utils.data.sampling.WeightedImageSampler` (give it
    weights each epoch; not under DDP). `quad`: :meth:`YoloDataset.collate_fn4` (batch size a
    multiple of 4; an incomplete last batch is dropped).
    """
    if quad and batch_size % 4:
        raise ValueError(f"{prefix}--quad needs a batch size (per process) that is a multiple of 4, got {batch_size}")
    if image_weights and rank != -1:
        raise ValueError(f"{prefix}--image-weights is not supported with DDP (one sampler per process)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{prefix}batch size must be a positive integer, got {batch_size!r}")
    if rect and shuffle:
        LOGGER.warning(f"{prefix}WARNING: rect=True is incompatible with shuffle, setting shuffle=False")
        shuffle = False
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and rank != -1:
        from utils.device import main_process_first

        with main_process_first(rank):
            dataset = YoloDataset(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache_images=cache,
                                  single_cls=single_cls, stride=int(stride), pad=pad, prefix=prefix, nc=nc)
    else:
        dataset = YoloDataset(path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache_images=cache,
                              single_cls=single_cls, stride=int(stride), pad=pad, prefix=prefix, nc=nc)
    if quad and len(dataset) < 4:
        raise ValueError(f"{prefix}--quad needs batches of at least 4 images, but {path} holds only {len(dataset)} "
                         f"image(s), so the batch size {batch_size} was cut to {len(dataset)}; add images (at least 4) "
                         "or train without --quad")
    batch_size = min(int(batch_size), len(dataset))
    world = dist.get_world_size() if distributed else max(int(os.getenv("WORLD_SIZE", 1)), 1)
    nw = max(min((os.cpu_count() or 1) // world, batch_size if batch_size > 1 else 0, workers), 0)
    sampler = None
    if image_weights:
        from utils.data.sampling import WeightedImageSampler

        sampler = WeightedImageSampler(len(dataset), seed=seed)
    elif rank != -1:
        global_rank = dist.get_rank() if distributed else int(os.getenv("RANK", rank))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=global_rank, shuffle=shuffle, seed=seed)
    generator = torch.Generator()
    generator.manual_seed(0x5EED_0000 + seed + max(int(os.getenv("RANK", -1)), 0))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=nw,
        pin_memory=torch.cuda.is_available(),
        collate_fn=YoloDataset.collate_fn4 if quad else YoloDataset.collate_fn,
        drop_last=quad,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=nw > 0,
    )
    return loader, dataset
