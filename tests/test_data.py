"""Data pipeline: dataset YAMLs, image/label verification with bad data, label cache, the
dataset's letterbox / rect shapes, the data loader and the synthetic dataset generator."""

from __future__ import annotations

import hashlib
import io
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from utils.boxes import scale_boxes, xywh2xyxy
from utils.data.augment import letterbox
from utils.data.dataset import YoloDataset, create_dataloader, read_image
from utils.data.dataset_config import DatasetNotFoundError, check_dataset, datasets_dir, find_data_yaml
from utils.data.verify import (
    img2label_paths,
    list_image_files,
    parse_label_file,
    scan_dataset,
    verify_image_label,
)
from utils.logging import LOGGER

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture
def log_lines():
    """Every message the project logger emits during the test."""
    lines: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    h = Grab(level=logging.DEBUG)
    old = LOGGER.level
    LOGGER.addHandler(h)
    LOGGER.setLevel(logging.INFO)
    yield lines
    LOGGER.removeHandler(h)
    LOGGER.setLevel(old)


def _jpeg_bytes(w=64, h=48, seed=0, **save_kw) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", **save_kw)
    return buf.getvalue()


def _make_set(root: Path, items: dict[str, tuple[bytes, str | None]]) -> Path:
    """images/train/<name> and labels/train/<stem>.txt (None = no label file)."""
    im_dir, lb_dir = root / "images" / "train", root / "labels" / "train"
    im_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    for name, (data, label) in items.items():
        (im_dir / name).write_bytes(data)
        if label is not None:
            (lb_dir / (Path(name).stem + ".txt")).write_text(label)
    return im_dir


def _exif_rotated_jpeg() -> bytes:
    """Stored 60 wide x 30 high, left half red; EXIF orientation 6 (display rotated 90 deg CW)."""
    a = np.zeros((30, 60, 3), np.uint8)
    a[:, :30] = (255, 0, 0)
    ex = Image.Exif()
    ex[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", exif=ex.tobytes(), quality=95)
    return buf.getvalue()


def _png_rgba() -> bytes:
    a = np.zeros((40, 50, 4), np.uint8)
    a[..., 1] = 200
    a[..., 3] = 128
    buf = io.BytesIO()
    Image.fromarray(a, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def _gray_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50), 90, np.uint8), "L").save(buf, "JPEG")
    return buf.getvalue()


GOOD = "0 0.5 0.5 0.4 0.4\n"
BAD_SET = {
    # used
    "good.jpg": (_jpeg_bytes(seed=1), GOOD),
    "empty.jpg": (_jpeg_bytes(seed=2), ""),  # background
    "missing.jpg": (_jpeg_bytes(seed=3), None),  # background, missing label
    "gray.jpg": (_gray_jpeg(), GOOD),
    "alpha.png": (_png_rgba(), GOOD),
    "exif.jpg": (_exif_rotated_jpeg(), "1 0.5 0.25 1.0 0.5\n"),  # the red half, as displayed
    "dups.jpg": (_jpeg_bytes(seed=4), GOOD + GOOD + "2 0.2 0.2 0.1 0.1\n" + GOOD),
    "slightly_out.jpg": (_jpeg_bytes(seed=5), "0 0.5 0.5 1.004 0.3\n"),  # clipped to 1
    "trailing.jpg": (_jpeg_bytes(seed=6) + b"\x00" * 16, GOOD),  # bytes after the end marker
    # skipped as corrupt
    "truncated.jpg": (_jpeg_bytes(seed=7)[:400], GOOD),
    "not_an_image.jpg": (b"hello, I am a text file\n" * 10, GOOD),
    "cols4.jpg": (_jpeg_bytes(seed=8), "0 0.5 0.5 0.4\n"),
    "cols6.jpg": (_jpeg_bytes(seed=9), GOOD + "0 0.5 0.5 0.4 0.4 0.9\n"),
    "coord_big.jpg": (_jpeg_bytes(seed=10), "0 1.3 0.5 0.2 0.2\n"),
    "coord_neg.jpg": (_jpeg_bytes(seed=11), "0 0.5 -0.2 0.2 0.2\n"),
    "class80.jpg": (_jpeg_bytes(seed=12), GOOD + "80 0.5 0.5 0.1 0.1\n"),
    "tiny.jpg": (_jpeg_bytes(8, 8, seed=13), GOOD),
}
USED = {"good", "empty", "missing", "gray", "alpha", "exif", "dups", "slightly_out", "trailing"}
CORRUPT = {"truncated", "not_an_image", "cols4", "cols6", "coord_big", "coord_neg", "class80", "tiny"}


# ----------------------------------------------------------------------------------- bad data


def test_bad_data_reported_and_skipped(tmp_path, log_lines):
    im_dir = _make_set(tmp_path / "bad", BAD_SET)
    res = scan_dataset(im_dir, nc=80)
    assert {Path(f).stem for f in res.im_files} == USED
    assert (res.found, res.corrupt, res.missing, res.empty, res.backgrounds) == (17, 8, 1, 1, 2)
    assert res.duplicates == 2
    # every problem is reported, naming its file
    for stem in CORRUPT | {"dups", "trailing"}:
        assert any(f"{stem}." in m for m in res.msgs), stem
    assert not any(f"{s}." in m for m in res.msgs for s in ("good", "empty", "missing", "gray", "alpha", "exif"))
    summary = [m for m in log_lines if m.startswith("Scanning")]
    assert summary and "9 images, 2 backgrounds, 1 missing labels, 8 corrupt" in summary[0]
    reasons = "\n".join(res.msgs)
    for needle in ("4 columns", "6 columns", "outside [0, 1]", "class id 80 >= nc=80", "not an image",
                   "below 10 pixels", "truncated", "duplicate", "end-of-image"):
        assert needle in reasons, needle

    by_stem = {Path(f).stem: lb for f, lb in zip(res.im_files, res.labels)}
    np.testing.assert_allclose(by_stem["dups"], [[0, 0.5, 0.5, 0.4, 0.4], [2, 0.2, 0.2, 0.1, 0.1]])
    assert by_stem["slightly_out"][0, 3] == 1.0
    shapes = {Path(f).stem: tuple(s) for f, s in zip(res.im_files, res.shapes)}
    assert shapes["exif"] == (30, 60)  # (w, h) as displayed
    assert shapes["alpha"] == (50, 40) and shapes["gray"] == (50, 40)

    # the dataset built on top uses exactly these images and loads every one of them
    ds = YoloDataset(im_dir, img_size=64, batch_size=4, nc=80)
    assert len(ds) == len(USED)
    loader, _ = create_dataloader(im_dir, 64, 4, 32, workers=0, nc=80)
    n = sum(len(imgs) for imgs, *_ in loader)
    assert n == len(USED)
    for i in range(len(ds)):
        img, labels, path, shapes = ds[i]
        assert img.shape[0] == 3 and img.dtype == torch.uint8
        assert labels.shape[1] == 6


def test_exif_rotation_consistent_between_verify_and_load(tmp_path):
    im_dir = _make_set(tmp_path / "ex", {"exif.jpg": (_exif_rotated_jpeg(), "1 0.5 0.25 1.0 0.5\n")})
    f = str(im_dir / "exif.jpg")
    rec = verify_image_label(f, img2label_paths([f])[0])
    assert rec.shape == (30, 60) and not rec.corrupt
    im = read_image(f)
    assert im.shape == (60, 30, 3)  # rotated
    ref = np.asarray(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))[:, :, ::-1]
    assert np.abs(im.astype(int) - ref).max() <= 2
    # the labelled (top) half is the red one after rotation
    assert im[:25, :, 2].mean() > 200 and im[35:, :, 2].mean() < 50
    ds = YoloDataset(im_dir, img_size=64, batch_size=1)
    img, labels, _, shapes = ds[0]
    assert shapes[0] == (60, 30)
    x = img.permute(1, 2, 0).numpy()  # RGB
    cls, cx, cy, w, h = labels[0, 1:].tolist()
    H, W = x.shape[:2]
    x1, y1, x2, y2 = (cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H
    inside = x[int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2]
    assert inside[..., 0].mean() > 200 and inside[..., 1].mean() < 50


def test_grayscale_and_alpha_load_as_bgr(tmp_path):
    im_dir = _make_set(tmp_path / "g", {"gray.jpg": (_gray_jpeg(), GOOD), "alpha.png": (_png_rgba(), GOOD)})
    gray, alpha = read_image(str(im_dir / "gray.jpg")), read_image(str(im_dir / "alpha.png"))
    assert gray.shape == (40, 50, 3) and alpha.shape == (40, 50, 3)
    assert abs(int(gray[20, 25, 0]) - 90) <= 2 and alpha[20, 25, 1] == 200


def test_parse_label_file_rules(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("\n  \n3 0.1 0.2 0.3 0.4\n")
    lb, ndup = parse_label_file(str(f), nc=4)
    assert lb.dtype == np.float32 and lb.shape == (1, 5) and ndup == 0
    f.write_text("1 0.1 0.1 0.3 0.1 0.3 0.4\n")  # polygon -> box
    np.testing.assert_allclose(parse_label_file(str(f))[0], [[1, 0.2, 0.25, 0.2, 0.3]], atol=1e-6)
    for bad in ("1.5 0.5 0.5 0.1 0.1", "-1 0.5 0.5 0.1 0.1", "0 nan 0.5 0.1 0.1", "0 a 0.5 0.1 0.1",
                "0 0.5 0.5 0.1 0.1 0.1 0.2 0.3"):
        f.write_text(bad + "\n")
        with pytest.raises(ValueError):
            parse_label_file(str(f), nc=4)


# ----------------------------------------------------------------------------------- coco128 + cache


def test_coco128_scan_counts(datasets_dir):
    res = scan_dataset(datasets_dir / "coco128" / "images" / "train2017", nc=80)
    assert len(res.im_files) == 128
    assert res.instances == 929
    assert (res.backgrounds, res.missing, res.corrupt, res.duplicates) == (2, 2, 0, 0)
    assert sum(int((lb[:, 0] == 0).sum()) for lb in res.labels) == 254  # persons


@pytest.fixture
def cache_beside_labels(monkeypatch):
    """The default cache place (conftest sends caches to a temporary folder)."""
    monkeypatch.delenv("YOLO_CACHE_DIR", raising=False)


def test_cache_dir_env_keeps_the_dataset_untouched(tmp_path, monkeypatch):
    im_dir = _make_set(tmp_path / "ds", {"a.jpg": (_jpeg_bytes(), GOOD)})
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "caches"))
    r1 = scan_dataset(im_dir)
    assert r1.cache_path.parent == tmp_path / "caches" and r1.cache_path.name.startswith("train-")
    assert not list((tmp_path / "ds").rglob("*.npz"))
    assert scan_dataset(im_dir).from_cache


@pytest.mark.usefixtures("cache_beside_labels")
def test_cache_created_reused_invalidated(tmp_path):
    im_dir = _make_set(tmp_path / "c", {f"{i}.jpg": (_jpeg_bytes(seed=i), GOOD) for i in range(3)})
    cache = tmp_path / "c" / "labels" / "train.cache.npz"
    r1 = scan_dataset(im_dir, nc=2)
    assert cache.is_file() and not r1.from_cache and r1.instances == 3
    with np.load(cache, allow_pickle=False) as z:  # no pickled objects inside
        assert set(z.files) >= {"meta", "im_files", "labels", "shapes"}
    r2 = scan_dataset(im_dir, nc=2)
    assert r2.from_cache and r2.im_files == r1.im_files
    assert all((a == b).all() for a, b in zip(r1.labels, r2.labels))
    np.testing.assert_array_equal(r1.shapes, r2.shapes)
    # a label file changes -> rescanned
    (tmp_path / "c" / "labels" / "train" / "1.txt").write_text(GOOD + "1 0.3 0.3 0.1 0.1\n")
    r3 = scan_dataset(im_dir, nc=2)
    assert not r3.from_cache and r3.instances == 4
    assert scan_dataset(im_dir, nc=2).from_cache
    # an image is added -> rescanned
    (im_dir / "9.jpg").write_bytes(_jpeg_bytes(seed=9))
    r4 = scan_dataset(im_dir, nc=2)
    assert not r4.from_cache and len(r4.im_files) == 4 and r4.missing == 1
    # another nc changes the verdicts -> rescanned
    assert not scan_dataset(im_dir, nc=3).from_cache


@pytest.mark.usefixtures("cache_beside_labels")
def test_cache_folder_not_writeable(tmp_path, monkeypatch, log_lines):
    im_dir = _make_set(tmp_path / "ro", {"a.jpg": (_jpeg_bytes(), GOOD)})

    def deny(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr("utils.data.verify.os.replace", deny)
    res = scan_dataset(im_dir)
    assert len(res.im_files) == 1 and res.cache_path is None
    assert any("not writeable" in m for m in log_lines)
    assert not list((tmp_path / "ro" / "labels").glob("*.npz")) and not list((tmp_path / "ro").rglob("*.tmp"))


@pytest.mark.usefixtures("cache_beside_labels")
def test_read_only_dataset_folder_is_left_untouched(tmp_path, log_lines):
    """A labels folder marked read-only (e.g. a shared dataset) gets no cache file, even for root, who could write."""
    im_dir = _make_set(tmp_path / "shared", {"a.jpg": (_jpeg_bytes(), GOOD)})
    labels = tmp_path / "shared" / "labels"
    labels.chmod(0o555)
    try:
        res = scan_dataset(im_dir)
        scan_dataset(im_dir)  # train's and val's scans of one folder: said once
    finally:
        labels.chmod(0o755)
    assert len(res.im_files) == 1 and res.cache_path is None
    assert not list(labels.glob("*.npz")) and not list(labels.glob(".*.tmp"))
    said = [m for m in log_lines if "is read-only (mode dr-xr-xr-x), labels not cached" in m]
    assert len(said) == 1 and str(labels) in said[0] and "YOLO_CACHE_DIR" in said[0]


@pytest.mark.usefixtures("cache_beside_labels")
def test_corrupt_cache_is_rescanned(tmp_path):
    im_dir = _make_set(tmp_path / "cc", {"a.jpg": (_jpeg_bytes(), GOOD)})
    (tmp_path / "cc" / "labels" / "train.cache.npz").write_bytes(b"garbage")
    res = scan_dataset(im_dir)
    assert not res.from_cache and len(res.im_files) == 1


# ----------------------------------------------------------------------------------- listing


@pytest.mark.usefixtures("cache_beside_labels")
def test_list_image_files_sources(tmp_path):
    im_dir = _make_set(tmp_path / "d" / "set", {"a.jpg": (_jpeg_bytes(), GOOD), "b.png": (_png_rgba(), None)})
    (im_dir / "notes.txt").write_text("not an image")
    by_dir = list_image_files(im_dir)
    assert [Path(f).name for f in by_dir] == ["a.jpg", "b.png"]
    assert list_image_files(str(im_dir / "*.jpg")) == by_dir[:1]
    lst = tmp_path / "d" / "set" / "train.txt"
    lst.write_text("./images/train/b.png\nimages/train/a.jpg\n\n")
    assert list_image_files(lst) == by_dir  # relative to the list's folder, sorted
    assert list_image_files([im_dir / "a.jpg", im_dir / "b.png"]) == by_dir
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_files(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_image_files(tmp_path / "d" / "set" / "labels")
    # the label path uses the last /images/ of the path
    assert img2label_paths(["/x/images/y/images/train/a.b.jpg"]) == ["/x/images/y/labels/train/a.b.txt"]
    # a .txt list gets its cache beside it
    res = scan_dataset(lst)
    assert res.cache_path == lst.with_suffix(".cache.npz") and res.missing == 1


# ----------------------------------------------------------------------------------- dataset YAMLs


def test_check_dataset_coco128(datasets_dir):
    d = check_dataset("coco128.yaml")
    assert d["nc"] == 80 and len(d["names"]) == 80 and d["names"][0] == "person" and d["names"][79] == "toothbrush"
    assert d["train"] == d["val"] == str(datasets_dir / "coco128" / "images" / "train2017")
    assert d["test"] is None and Path(d["yaml_file"]) == ROOT / "data" / "coco128.yaml"
    assert check_dataset("coco128")["path"] == d["path"]  # name without extension
    assert check_dataset(d)["val"] == d["val"]  # an already-checked dict passes through


def test_check_dataset_missing_names_the_folder(tmp_datasets):
    with pytest.raises(DatasetNotFoundError) as e:
        check_dataset("coco128.yaml", autodownload=False)
    msg = str(e.value)
    assert str(tmp_datasets) in msg and "YOLO_DATASETS_DIR" in msg and "\n" not in msg
    # a download that fails (nothing listens on port 9) -> same message with the URL
    y = tmp_datasets / "mine.yaml"
    y.write_text("path: mine\ntrain: images/train\nval: images/val\nnames: [a, b]\n"
                 "download: http://127.0.0.1:9/mine.zip\n")
    with pytest.raises(DatasetNotFoundError, match=r"download from http://127\.0\.0\.1:9/mine\.zip failed") as e:
        check_dataset(y)
    assert str(tmp_datasets / "mine") in str(e.value)
    assert not list(tmp_datasets.glob("*.part"))


def test_check_dataset_yaml_forms(tmp_path, tmp_datasets):
    im_dir = _make_set(tmp_datasets / "toy", {"a.jpg": (_jpeg_bytes(), GOOD)})
    y = tmp_path / "toy.yaml"
    y.write_text("path: toy\ntrain: [images/train, images/train]\nval: images/train\nnames: {0: cat, 1: dog}\n")
    d = check_dataset(y)
    assert d["names"] == ["cat", "dog"] and d["nc"] == 2
    assert d["train"] == [str(im_dir)] * 2 and d["val"] == str(im_dir)
    # no `path`: relative to the YAML's own folder; nc alone gives default names
    y2 = tmp_datasets / "toy" / "local.yaml"
    y2.write_text("train: images/train\nval: images/train\nnc: 3\n")
    d2 = check_dataset(y2)
    assert d2["val"] == str(im_dir) and d2["names"] == ["class0", "class1", "class2"]
    y3 = tmp_path / "bad.yaml"
    y3.write_text("path: toy\ntrain: images/train\nval: images/train\nnames: {0: a, 2: b}\n")
    with pytest.raises(ValueError, match="without gaps"):
        check_dataset(y3)
    y3.write_text("path: toy\ntrain: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match="missing 'val'"):
        check_dataset(y3)
    with pytest.raises(FileNotFoundError, match="not found"):
        find_data_yaml("no_such_dataset.yaml")
    assert datasets_dir() == tmp_datasets


def test_synthetic_yaml_generates_on_first_use(tmp_datasets):
    d = check_dataset("synthetic.yaml")
    assert d["names"] == ["circle", "square", "triangle"]
    assert len(list(Path(d["train"]).glob("*.jpg"))) == 200 and len(list(Path(d["val"]).glob("*.jpg"))) == 50
    res = scan_dataset(d["val"], nc=3)
    assert res.corrupt == 0 and res.backgrounds == 0 and len(res.im_files) == 50


# ----------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape,new,auto,scaleup,out", [
    ((480, 640), 640, False, True, (640, 640)),
    ((480, 640), 640, True, True, (480, 640)),
    ((427, 640), 640, True, True, (448, 640)),
    ((100, 200), 640, False, False, (640, 640)),
    ((100, 200), (320, 480), False, True, (320, 480)),
])
def test_letterbox_shapes(shape, new, auto, scaleup, out):
    im = np.zeros((*shape, 3), np.uint8)
    y, ratio, (dw, dh) = letterbox(im, new, auto=auto, scaleup=scaleup)
    assert y.shape[:2] == out
    r = ratio[0]
    if not scaleup:
        assert r == 1.0
    assert abs(shape[1] * r + 2 * dw - out[1]) <= 1 and abs(shape[0] * r + 2 * dh - out[0]) <= 1


def test_rect_batch_shapes_coco128(datasets_dir):
    path = datasets_dir / "coco128" / "images" / "train2017"
    ds = YoloDataset(path, img_size=640, batch_size=32, rect=True, pad=0.5, stride=32, nc=80)
    assert ds.batch_shapes.tolist() == [[448, 672], [512, 672], [672, 672], [672, 608]]
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all()  # sorted by aspect ratio
    for b in range(4):  # independent check of the rule
        a = ar[b * 32:(b + 1) * 32]
        rel = (a.max(), 1.0) if a.max() < 1 else (1.0, 1 / a.min()) if a.min() > 1 else (1.0, 1.0)
        assert ds.batch_shapes[b].tolist() == [math.ceil(x * 640 / 32 + 0.5) * 32 for x in rel]
    # every image of a batch comes out at the batch's shape, unscaled by letterbox
    for i in (0, 40, 70, 127):
        img, labels, path_i, shapes = ds[i]
        assert list(img.shape[1:]) == ds.batch_shapes[ds.batch[i]].tolist()
        (h0, w0), ((gh, gw), _) = shapes
        assert max(round(h0 * gh), round(w0 * gw)) == 640


def test_val_items_map_back_to_original_labels(datasets_dir):
    """Labels out of the dataset, scaled back with `scale_boxes`, land on the label files' boxes."""
    path = datasets_dir / "coco128" / "images" / "train2017"
    for rect in (True, False):
        ds = YoloDataset(path, img_size=320, batch_size=8, rect=rect, pad=0.5, nc=80)
        for i in range(0, len(ds), 13):
            img, labels, _, shapes = ds[i]
            if not len(labels):
                continue
            H, W = img.shape[1:]
            boxes = xywh2xyxy(labels[:, 2:].double() * torch.tensor([W, H, W, H]))
            back = scale_boxes((H, W), boxes, shapes[0], shapes[1])
            h0, w0 = shapes[0]
            ref = xywh2xyxy(torch.from_numpy(ds.labels[i][:, 1:]).double() * torch.tensor([w0, h0, w0, h0]))
            # within a pixel: the resized side is rounded up, and scale_boxes uses one gain (as upstream)
            assert torch.allclose(back, ref.clamp(min=0), atol=0.005 * max(h0, w0))


# ----------------------------------------------------------------------------------- loader


def test_collate_and_loader(datasets_dir):
    path = datasets_dir / "coco128" / "images" / "train2017"
    loader, ds = create_dataloader(path, 256, 5, 32, rect=True, pad=0.5, workers=0, nc=80)
    imgs, targets, paths, shapes = next(iter(loader))
    assert imgs.dtype == torch.uint8 and imgs.shape[:2] == (5, 3) and len(paths) == len(shapes) == 5
    assert targets.shape[1] == 6 and set(targets[:, 0].long().tolist()) <= set(range(5))
    n_expected = sum(len(ds.labels[i]) for i in range(5))
    assert len(targets) == n_expected
    for bad in (0, -4):
        with pytest.raises(ValueError, match="batch size"):
            create_dataloader(path, 256, bad, 32)


def test_loader_distributed_sampler_and_workers(tmp_path, monkeypatch):
    im_dir = _make_set(tmp_path / "w", {f"{i}.jpg": (_jpeg_bytes(seed=i), GOOD) for i in range(6)})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    loader, ds = create_dataloader(im_dir, 64, 2, 32, rank=1, workers=8, shuffle=True, augment=True)
    assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
    assert loader.sampler.num_replicas == 2 and loader.sampler.rank == 1 and len(loader.sampler) == 3
    assert loader.num_workers == min(__import__("os").cpu_count() // 2, 2, 8)
    monkeypatch.setenv("WORLD_SIZE", "1")
    loader1, _ = create_dataloader(im_dir, 64, 1, 32, workers=8)
    assert loader1.num_workers == 0  # batch size 1 -> no workers


@pytest.mark.usefixtures("cache_beside_labels")
def test_cache_images_ram_and_disk(tmp_path):
    im_dir = _make_set(tmp_path / "ci", {f"{i}.jpg": (_jpeg_bytes(80, 60, seed=i), GOOD) for i in range(3)})
    plain = YoloDataset(im_dir, img_size=64)
    ram = YoloDataset(im_dir, img_size=64, cache_images="ram")
    disk = YoloDataset(im_dir, img_size=64, cache_images="disk")
    assert all(im is not None for im in ram.ims) and len(list(im_dir.glob("*.jpg.*.npy"))) == 3
    for i in range(3):
        assert torch.equal(plain[i][0], ram[i][0]) and torch.equal(plain[i][0], disk[i][0])
    with pytest.raises(ValueError, match="cache_images"):
        YoloDataset(im_dir, cache_images="gpu")


def _solid_jpeg(w: int, h: int, bgr: tuple[int, int, int]) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), bgr, np.uint8))[1].tobytes()


@pytest.mark.usefixtures("cache_beside_labels")
def test_cache_disk_follows_the_image(tmp_path):
    """Issue 22: after an image is replaced (another size and colour) the dataset returns the
    new picture, not the old .npy; the new cache replaces the old one; f.jpg and f.png of one
    folder keep caches of their own."""
    im_dir = _make_set(tmp_path / "d", {"f.jpg": (_solid_jpeg(80, 60, (0, 0, 255)), GOOD),
                                        "f.png": (cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1].tobytes(),
                                                  GOOD)})
    ds = YoloDataset(im_dir, img_size=640, cache_images="disk")
    first = {Path(f).name: ds.load_image(i)[1] for i, f in enumerate(ds.im_files)}
    assert first["f.jpg"] == (60, 80) and first["f.png"] == (50, 50)
    assert len(list(im_dir.glob("f.jpg.*.npy"))) == 1 and len(list(im_dir.glob("f.png.*.npy"))) == 1
    (im_dir / "f.jpg").write_bytes(_solid_jpeg(40, 90, (255, 0, 0)))  # replaced: 90x40, blue
    ds2 = YoloDataset(im_dir, img_size=640, cache_images="disk")
    i = [Path(f).name for f in ds2.im_files].index("f.jpg")
    im, hw0, _ = ds2.load_image(i)
    centre = im[im.shape[0] // 2, im.shape[1] // 2]
    assert hw0 == (90, 40) and int(centre[0]) > 245 and int(centre[2]) < 10  # blue, not the old red
    assert len(list(im_dir.glob("f.jpg.*.npy"))) == 1  # the stale cache is gone
    (im_dir / "f.jpg").write_bytes(_solid_jpeg(30, 20, (0, 255, 0)))  # replaced during the run: not cached yet
    assert ds2.load_image(i)[1] == (20, 30)


def test_cache_disk_follows_the_cache_rules(tmp_path, monkeypatch, log_lines):
    """Issue 22: .npy files go under $YOLO_CACHE_DIR when set (the dataset stays untouched); a
    read-only image folder gets none, said once per folder, and its images still load."""
    im_dir = _make_set(tmp_path / "d", {f"{i}.jpg": (_jpeg_bytes(seed=i), GOOD) for i in range(2)})
    monkeypatch.setenv("YOLO_CACHE_DIR", str(tmp_path / "caches"))
    ds = YoloDataset(im_dir, img_size=64, cache_images="disk")
    assert not list(im_dir.glob("*.npy")) and len(list((tmp_path / "caches").rglob("*.jpg.*.npy"))) == 2
    assert ds[0][0].shape[0] == 3
    monkeypatch.delenv("YOLO_CACHE_DIR")
    im_dir.chmod(0o555)
    try:
        ds = YoloDataset(im_dir, img_size=64, cache_images="disk")
        YoloDataset(im_dir, img_size=64, cache_images="disk")  # train and val of one folder: said once
        assert ds.load_image(1)[1] == (48, 64)
    finally:
        im_dir.chmod(0o755)
    assert not list(im_dir.glob("*.npy"))
    said = [m for m in log_lines if "is read-only (mode dr-xr-xr-x), images not cached" in m]
    assert len(said) == 1 and str(im_dir) in said[0] and "YOLO_CACHE_DIR" in said[0]


# ----------------------------------------------------------------------------------- synthetic


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".jpg", ".txt"):
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_synthetic_generator_deterministic(tmp_path):
    from data.synthetic import CLASSES, make_synthetic

    y1 = make_synthetic(tmp_path / "s1", n_train=6, n_val=3, imgsz=128, seed=3)
    make_synthetic(tmp_path / "s2", n_train=6, n_val=3, imgsz=128, seed=3)
    assert _tree_digest(tmp_path / "s1") == _tree_digest(tmp_path / "s2")
    make_synthetic(tmp_path / "s2", n_train=6, n_val=3, imgsz=128, seed=4)
    assert _tree_digest(tmp_path / "s1") != _tree_digest(tmp_path / "s2")
    d = check_dataset(y1)
    assert Path(d["path"]).is_absolute() and d["names"] == CLASSES
    res = scan_dataset(d["train"], nc=len(CLASSES))
    assert len(res.im_files) == 6 and res.corrupt == 0 and res.backgrounds == 0
    # boxes are tight around the drawn shapes: the object's colour fills the box's centre
    for f, lb in zip(res.im_files, res.labels):
        im = cv2.imread(f)
        assert im.shape == (128, 128, 3)
        for _cls, cx, cy, w, h in lb:
            assert 0.07 <= w <= 0.37 and 0.07 <= h <= 0.37  # triangles are shorter than their side
            x, y = int(cx * 128), int(cy * 128)
            centre = im[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(int)
            assert np.ptp(centre, axis=0).max() < 30  # uniform colour (not background texture)


def test_generated_dataset_message_shows_the_real_path(tmp_datasets, log_lines):
    """The 'download' command is shown with {path} filled in (issue 13)."""
    y = tmp_datasets / "gen.yaml"
    y.write_text("path: gen\ntrain: images/train\nval: images/val\nnames: {0: circle, 1: square, 2: triangle}\n"
                 "download: python data/synthetic.py --out {path} --n-train 2 --n-val 1 --imgsz 64 --seed 0\n")
    d = check_dataset(str(y))
    assert len(list(Path(d["val"]).glob("*.jpg"))) == 1
    msg = next(m for m in log_lines if "Dataset not found" in m)
    assert "{path}" not in msg
    assert f"generating it (python data/synthetic.py --out {tmp_datasets / 'gen'} --n-train 2" in msg


def test_images_sharing_a_label_file_are_warned(tmp_path):
    """f.jpg and f.png in one folder both read labels/f.txt: said once, with the names."""
    from tests.logcapture import LogLines

    im_dir = _make_set(tmp_path / "d", {"f.jpg": (_jpeg_bytes(), GOOD), "f.png": (_jpeg_bytes(), GOOD),
                                        "g.jpg": (_jpeg_bytes(), GOOD)})
    with LogLines() as log:
        scan_dataset(im_dir)
    warned = [ln for ln in log.lines if "share" in ln]
    assert len(warned) == 1 and "2 images share 1 label file(s), e.g. f.jpg and f.png both read" in warned[0]
    assert "f.txt" in warned[0]
    with LogLines() as log:
        scan_dataset(_make_set(tmp_path / "e", {"a.jpg": (_jpeg_bytes(), GOOD)}))
    assert not [ln for ln in log.lines if "share" in ln]
