"""A small synthetic detection dataset that needs no download.

Filled circles, squares and triangles of random colours and sizes on textured backgrounds
(noise, colour gradients, stripes), with exact YOLO labels. The same arguments always give
the same files, so a test or a benchmark can rebuild the dataset anywhere.

    python data/synthetic.py --out ../datasets/synthetic --n-train 200 --n-val 50 --imgsz 320 --seed 0

or from Python: ``make_synthetic(out_dir, n_train, n_val, imgsz, seed)``, which returns the
dataset YAML it writes (``<out_dir>/synthetic.yaml``, with an absolute ``path``).
``data/synthetic.yaml`` points at the default location and generates the set on first use.

Objects are large (12-35% of the image side), never overlap, and differ clearly in colour
from the background under them, so a detector trained from scratch learns them quickly.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["circle", "square", "triangle"]
SIZE_RANGE = (0.12, 0.35)  # object size as a fraction of the image side
OBJECTS = (3, 6)  # objects per image (fewer when they do not fit)
MIN_CONTRAST = 100.0  # minimum RGB distance (0-255 scale) between an object and 95% of the background under it


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: blotchy noise, a gradient or stripes between two nearby colours, plus
    grain. The texture is kept subtle so that it never looks like an object's edge."""
    kind = rng.integers(3)
    c1 = rng.uniform(40, 215, 3)
    c2 = (c1 + rng.uniform(-50, 50, 3)).clip(0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # smooth blotchy noise
        coarse = rng.uniform(0, 1, (8, 8)).astype(np.float32)
        t = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)[..., None]
    elif kind == 1:  # linear gradient in a random direction
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    else:  # soft stripes at a random angle and period
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.05, 0.25)
        t = (0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / period))[..., None]
    img = c1 * (1 - t) + c2 * t
    img += rng.normal(0, 6, img.shape)  # grain
    return img.clip(0, 255).astype(np.uint8)


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour far from (nearly) every background pixel in the object's area."""
    pix = under.reshape(-1, 3).astype(np.float64)
    pix = pix[rng.integers(0, len(pix), min(len(pix), 256))]
    best, best_d = None, -1.0
    for _ in range(50):
        c = rng.integers(0, 256, 3)
        d = float(np.percentile(np.linalg.norm(pix - c, axis=1), 5))
        if d >= MIN_CONTRAST:
            return tuple(int(v) for v in c)
        if d > best_d:
            best, best_d = c, d
    return tuple(int(v) for v in best)


def _draw(img: np.ndarray, cls: int, box: np.ndarray, rng: np.random.Generator, colour) -> np.ndarray:
    """Draw one object filling `box` (x1, y1, x2, y2 integer pixels); returns its tight box."""
    x1, y1, x2, y2 = box
    side = x2 - x1
    if cls == 0:  # circle
        c = ((x1 + x2) // 2, (y1 + y2) // 2)
        r = side // 2
        cv2.circle(img, c, r, colour, thickness=-1, lineType=cv2.LINE_AA)
        return np.array([c[0] - r, c[1] - r, c[0] + r + 1, c[1] + r + 1])
    if cls == 1:  # axis-aligned square
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=-1)
        return np.array([x1, y1, x2, y2])
    # triangle: equilateral, apex up or down (tilted by up to 10 degrees), inscribed in the box's circle
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, side / 2
    a0 = (-math.pi / 2 if rng.random() < 0.5 else math.pi / 2) + rng.uniform(-1, 1) * math.radians(10)
    pts = np.array([[cx + r * math.cos(a0 + k * 2 * math.pi / 3), cy + r * math.sin(a0 + k * 2 * math.pi / 3)]
                    for k in range(3)])
    pts = np.round(pts).astype(np.int32)
    cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1])


def _make_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    img = _background(rng, size)
    placed: list[np.ndarray] = []
    objects = []
    for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))):
        for _attempt in range(30):
            side = int(rng.uniform(*SIZE_RANGE) * size)
            x1, y1 = (int(v) for v in rng.integers(0, size - side, 2))
            box = np.array([x1, y1, x1 + side, y1 + side])
            margin = 2
            if all(box[0] >= b[2] + margin or box[2] + margin <= b[0] or box[1] >= b[3] + margin or
                   box[3] + margin <= b[1] for b in placed):
                break
        else:
            continue  # no room left
        cls = int(rng.integers(len(CLASSES)))
        colour = _object_colour(rng, img[box[1]:box[3], box[0]:box[2]])
        tight = _draw(img, cls, box, rng, colour).clip(0, size)
        placed.append(box)
        objects.append((cls, tight))
    return img, objects


def _write_split(root: Path, split: str, n: int, size: int, seed: int, split_id: int) -> None:
    im_dir, lb_dir = root / "images" / split, root / "labels" / split
    for d in (im_dir, lb_dir):
        if d.exists():
            shutil.rmtree(d)  # a previous run with other arguments must not leave stale files
        d.mkdir(parents=True)
    (root / "labels" / f"{split}.cache.npz").unlink(missing_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, split_id, i])
        img, objects = _make_image(rng, size)
        name = f"{split}_{i:05d}"
        cv2.imwrite(str(im_dir / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines = []
        for cls, (x1, y1, x2, y2) in objects:
            lines.append(f"{cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} "
                         f"{(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}")
        (lb_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")


def make_synthetic(out_dir: str | Path, n_train: int = 200, n_val: int = 50, imgsz: int = 320, seed: int = 0) -> Path:
    """Write the dataset to `out_dir` (images/{train,val}, labels/{train,val}) and its YAML;
    returns the YAML's path. Deterministic in its arguments."""
    if n_train < 1 or n_val < 1:
        raise ValueError(f"need at least one train and one val image, got {n_train} and {n_val}")
    if imgsz < 64:
        raise ValueError(f"imgsz must be at least 64, got {imgsz}")
    root = Path(out_dir).expanduser().resolve()
    _write_split(root, "train", n_train, imgsz, seed, 0)
    _write_split(root, "val", n_val, imgsz, seed, 1)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
    yaml_file = root / "synthetic.yaml"
    yaml_file.write_text(
        f"# generated by data/synthetic.py: n_train={n_train} n_val={n_val} imgsz={imgsz} seed={seed}\n"
        f"path: {root}\ntrain: images/train\nval: images/val\n\nnames:\n{names}\n"
    )
    return yaml_file


def _is_typical(objects: list[tuple[int, np.ndarray]], size: int) -> bool:
    """Every class appears, and every shape's longer box side lies in the middle half of
    :data:`SIZE_RANGE` (none of the smallest or largest quarter)."""
    quarter = (SIZE_RANGE[1] - SIZE_RANGE[0]) / 4
    lo, hi = SIZE_RANGE[0] + quarter, SIZE_RANGE[1] - quarter
    sides = [max(b[2] - b[0], b[3] - b[1]) / size for _, b in objects]
    return {c for c, _ in objects} == set(range(len(CLASSES))) and all(lo <= s <= hi for s in sides)


def example_image(imgsz: int = 320, seed: int = 12345, tries: int = 10_000) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One typical image like the dataset's: (HxWx3 BGR uint8 image, [(class, tight xyxy pixel box), ...]).

    Candidates are drawn with the keys ``[seed, 2, k]`` for k = 0, 1, ... (split id 2: never one
    of the train/val images) and the first one holding every class, each shape of a middle size,
    is kept (1 in 60 to 80 candidates; a showcase picture, not the hardest case). Raises
    RuntimeError when none of `tries` candidates qualifies."""
    for k in range(tries):
        img, objects = _make_image(np.random.default_rng([seed, 2, k]), imgsz)
        if _is_typical(objects, imgsz):
            return img, objects
    raise RuntimeError(f"example_image: no image with every class at a middle size in {tries} "
                       f"candidates (imgsz={imgsz}, seed={seed}); try another seed or a larger imgsz")


def write_example_image(path: str | Path, imgsz: int = 320, seed: int = 12345) -> tuple[Path, int]:
    """:func:`example_image` written as JPEG to `path`; returns the path and the number of objects on it."""
    img, objects = example_image(imgsz, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path, len(objects)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    datasets = os.getenv("YOLO_DATASETS_DIR") or Path(__file__).resolve().parents[2] / "datasets"
    ap.add_argument("--out", default=str(Path(datasets) / "synthetic"),
                    help="output folder (default: synthetic/ in $YOLO_DATASETS_DIR, else in ../datasets beside the repo)")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-val", type=int, default=50)
    ap.add_argument("--imgsz", type=int, default=320, help="image side in pixels (square images)")
    ap.add_argument("--seed", type=int, default=0)
    opt = ap.parse_args(argv)
    yaml_file = make_synthetic(opt.out, opt.n_train, opt.n_val, opt.imgsz, opt.seed)
    print(f"synthetic dataset written: {yaml_file}")
    return yaml_file


if __name__ == "__main__":
    main()
