"""COCO-format interchange: detection export, ground truth built from YOLO labels, pycocotools.

COCO's official category ids run from 1 to 90 with ten ids unused; YOLO datasets number the
80 used classes 0..79. :data:`COCO80_TO_91` maps the latter to the former.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.logging import LOGGER

# the ten ids of the 1..90 range that COCO 2014/2017 never use
_COCO_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO80_TO_91: list[int] = [i for i in range(1, 91) if i not in _COCO_UNUSED_IDS]

COCO_NAMES: list[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]


def is_coco_classes(names: list[str] | dict | None) -> bool:
    """True when a dataset's class list is COCO's 80 classes in COCO order."""
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return names is not None and list(names) == COCO_NAMES


def category_map(names: list[str] | dict | None) -> list[int]:
    """Class index -> COCO category id: COCO's 80 -> 91 ids for COCO classes, else the index itself."""
    n = len(names) if names is not None else 0
    return list(COCO80_TO_91) if is_coco_classes(names) else list(range(max(n, 1000)))


# a numeric file name keeps its number as id only below 2^53: ids stay exact in every JSON reader
# (doubles) and fresh ids above them stay within 64 bits; a longer number gets a fresh id
MAX_NAME_ID = 2**53


def image_ids(paths: Sequence[str | Path], known: dict[str, int] | None = None) -> dict[str, int]:
    """One int COCO image id per distinct path of a run, the one source of ids for both the
    predictions and the ground-truth JSON.

    With `known` (``{file name: id}`` of an annotation file, :func:`annotation_ids`), a path whose
    file name is there takes that id: the annotation file is the authority. Otherwise a file
    whose stem is a number (COCO's ``000000000009.jpg``) keeps that number, so results on real
    COCO stay comparable with its annotation files; the first path (in the given order) with a
    number claims it. Every other path (text stems such as ``img_71.jpg``, a second
    ``f0.jpg``/``000000000009.jpg`` in another folder, a file the annotation file lacks) gets a
    fresh id above all claimed numbers and all of `known`'s ids, in order. Returns
    ``{str(path): id}``; ids are unique, so same-name files in different folders never merge
    and no image is scored against another's ground truth.
    """
    ids: dict[str, int] = {}
    taken: set[int] = set()
    rest: list[str] = []
    for p in map(str, paths):
        if p in ids or p in rest:
            continue
        stem = Path(p).stem
        if known is not None:
            n = known.get(Path(p).name)
        else:
            n = int(stem) if stem.isdecimal() and int(stem) < MAX_NAME_ID else None
        if n is not None and n not in taken:
            ids[p] = n
            taken.add(n)
        else:
            rest.append(p)
    nxt = max(taken | set((known or {}).values()), default=0) + 1
    for p in rest:
        ids[p] = nxt
        nxt += 1
    return ids


def annotation_ids(anno_json: str | Path) -> dict[str, int]:
    """``{file name: image id}`` of a COCO annotation file's ``images`` list. ValueError naming the
    file when it is not COCO JSON with such a list."""
    try:
        images = json.loads(Path(anno_json).read_text())["images"]
        return {Path(im["file_name"]).name: int(im["id"]) for im in images}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{anno_json}: not a COCO annotation file with an 'images' list ({type(e).__name__}: {e})"
                         ) from None


def detections_to_json(detections, image_id: int, class_map: list[int]) -> list[dict]:
    """COCO result records for one image's detections (n, 6) ``x1 y1 x2 y2 conf cls`` in the
    original image's pixels: bbox becomes ``[x_left, y_top, width, height]``. `image_id` comes
    from :func:`image_ids`."""
    d = detections.detach().cpu().numpy() if hasattr(detections, "detach") else np.asarray(detections)
    out = []
    for x1, y1, x2, y2, conf, cls in d.tolist():
        out.append({"image_id": int(image_id), "category_id": class_map[int(cls)],
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(conf, 5)})
    return out


def build_gt_json(images: list[tuple[str | Path, int, int, np.ndarray]], names: list[str] | dict,
                  class_map: list[int] | None = None, ids: dict[str, int] | None = None) -> dict:
    """A COCO ground-truth dict from YOLO labels.

    `images` holds one ``(path, height, width, labels)`` per image, labels (n, 5) as
    ``cls, cx, cy, w, h`` normalised to the image (the YOLO label file's content). Boxes
    become pixel ``[x_left, y_top, width, height]``; area is the box area; nothing is crowd.
    Image ids are `ids` (from :func:`image_ids`, default: made from these images' paths).
    """
    ids = ids if ids is not None else image_ids([p for p, *_ in images])
    class_map = class_map if class_map is not None else category_map(names)
    name_list = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    gt = {"info": {"description": "ground truth built from YOLO labels"}, "licenses": [],
          "images": [], "annotations": [],
          "categories": [{"id": class_map[i], "name": str(n), "supercategory": ""}
                         for i, n in enumerate(name_list)]}
    ann_id = 1
    for path, h, w, labels in images:
        iid = ids[str(path)]
        gt["images"].append({"id": iid, "file_name": Path(path).name, "height": int(h), "width": int(w)})
        lb = np.asarray(labels, dtype=np.float64).reshape(-1, 5)
        for cls, cx, cy, bw, bh in lb.tolist():
            pw, ph = bw * w, bh * h
            gt["annotations"].append({"id": ann_id, "image_id": iid, "category_id": class_map[int(cls)],
                                      "bbox": [(cx * w) - pw / 2, (cy * h) - ph / 2, pw, ph],
                                      "area": pw * ph, "iscrowd": 0})
            ann_id += 1
    return gt


def write_json(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def coco_eval(anno_json: str | Path, pred_json: str | Path, img_ids: list | None = None,
              verbose: bool = True) -> tuple[float, float]:
    """Score COCO-format detections with pycocotools; returns (mAP50-95, mAP50).

    Raises ImportError when pycocotools is missing. With `img_ids` only those images are
    scored (an annotation file usually covers more images than were validated).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO(str(anno_json))
    preds = json.loads(Path(pred_json).read_text())
    if not preds:
        LOGGER.warning(f"WARNING: {pred_json} holds no detections; COCO mAP is 0")
        return 0.0, 0.0
    with quiet:
        dt = gt.loadRes(preds)
    ev = COCOeval(gt, dt, "bbox")
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        LOGGER.info(buf.getvalue().rstrip())
    return float(ev.stats[0]), float(ev.stats[1])
