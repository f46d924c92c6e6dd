"""Box conversions, rescaling and non-maximum suppression (on top of `torchvision.ops`).

Formats: ``xyxy`` = corners (x1, y1, x2, y2); ``xywh`` = centre and size; ``n`` suffix =
normalised to [0, 1] by the image width and height.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision

from utils.logging import LOGGER

Array = torch.Tensor | np.ndarray


def _convert(x: Array, in_fmt: str, out_fmt: str) -> Array:
    if isinstance(x, torch.Tensor):
        return torchvision.ops.box_convert(x, in_fmt, out_fmt)
    return torchvision.ops.box_convert(torch.from_numpy(np.asarray(x, dtype=np.float64)), in_fmt, out_fmt).numpy()


def xywh2xyxy(x: Array) -> Array:
    """Centre/size to corners."""
    return _convert(x, "cxcywh", "xyxy")


def xyxy2xywh(x: Array) -> Array:
    """Corners to centre/size."""
    return _convert(x, "xyxy", "cxcywh")


def xywhn2xyxy(x: Array, w: int = 640, h: int = 640, padw: float = 0, padh: float = 0) -> Array:
    """Normalised centre/size to pixel corners, shifted by a padding offset."""
    y = xywh2xyxy(x)
    y = y.clone() if isinstance(y, torch.Tensor) else y.copy()
    y[..., [0, 2]] = y[..., [0, 2]] * w + padw
    y[..., [1, 3]] = y[..., [1, 3]] * h + padh
    return y


def xyxy2xywhn(x: Array, w: int = 640, h: int = 640, clip: bool = False, eps: float = 0.0) -> Array:
    """Pixel corners to normalised centre/size (optionally clipped to the image first)."""
    if clip:
        x = x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)
        clip_boxes(x, (h - eps, w - eps))
    y = xyxy2xywh(x)
    y = y.clone() if isinstance(y, torch.Tensor) else y.copy()
    y[..., [0, 2]] /= w
    y[..., [1, 3]] /= h
    return y


def clip_boxes(boxes: Array, shape: tuple[int, int]) -> Array:
    """Clip xyxy boxes in place to an image of `shape` (height, width)."""
    h, w = shape[:2]
    if isinstance(boxes, torch.Tensor):
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clamp(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clamp(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def scale_boxes(from_shape: tuple[int, int], boxes: Array, to_shape: tuple[int, int],
                ratio_pad: tuple | None = None) -> Array:
    """Map xyxy boxes from a letterboxed image of `from_shape` back to the original `to_shape`.

    `ratio_pad` = ((gain, gain), (pad_w, pad_h)) when known; otherwise it is recomputed the way
    `letterbox` centres the image.
    """
    if ratio_pad is None:
        gain = min(from_shape[0] / to_shape[0], from_shape[1] / to_shape[1])
        pad = (from_shape[1] - to_shape[1] * gain) / 2, (from_shape[0] - to_shape[0] * gain) / 2
    else:
        gain, pad = ratio_pad[0][0], ratio_pad[1]
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    return clip_boxes(boxes, to_shape)


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of two sets of xyxy boxes, (N, M)."""
    return torchvision.ops.box_iou(box1, box2)


_CAP_WARNED = False


def _warn_cap(n: int, max_nms: int) -> None:
    global _CAP_WARNED
    if not _CAP_WARNED:
        _CAP_WARNED = True
        LOGGER.warning(f"WARNING: NMS: {n} candidates in one image, keeping the {max_nms} highest-scoring "
                       "(max_nms); raise --conf-thres to check fewer (this warning is shown once)")


def non_max_suppression(
    prediction: torch.Tensor | tuple,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
    max_wh: int = 7680,
) -> list[torch.Tensor]:
    """Filter raw YOLOv5 predictions to detections, one (n, 6) tensor per image.

    `prediction` is (batch, boxes, 5 + nc) with xywh, objectness, class scores (or the
    ``(decoded, raw)`` tuple the model returns in eval mode). A candidate's score is
    objectness x class score; candidates below `conf_thres` are dropped, at most `max_nms`
    per image (the highest) go to `torchvision.ops.batched_nms`, run per image and class
    (per image only if `agnostic`), and each image keeps at most `max_det`, highest first.
    With `multi_label` a box may be kept once for every class above the threshold.
    The whole batch goes through each phase at once (no Python loop over images).
    Output rows: x1, y1, x2, y2, score, class (float32 on the input's device).
    Raises ValueError for thresholds outside [0, 1]. `max_wh` is unused (kept for callers).
    When the cap drops candidates (a weak model at conf 0.001 can leave tens of thousands; NMS
    cost grows with the square of their number) a warning is logged once per process.
    """
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    img, det = _candidates(prediction, conf_thres, multi_label and nc > 1, classes)
    img, det = _top_per_image(img, det, max_nms)
    per_image = _split_per_image(img, det, bs, max_nms)  # score order within each image
    return [_nms_one(d, iou_thres, agnostic, max_det) for d in per_image]


def _nms_one(det: torch.Tensor, iou_thres: float, agnostic: bool, max_det: int) -> torch.Tensor:
    """Greedy NMS of one image's score-sorted rows, separately per class (unless `agnostic`).

    Exact, with less work than one pass over every row. Boxes of different classes never suppress
    each other, and torchvision's NMS compares every kept box with every later row of its call, so
    many rows (val settings: ~2,000 at conf 0.001) are cut into a few groups of whole classes, each
    run alone, and the kept rows are merged back into score order. Fewer rows go through
    :func:`_greedy_nms`, which stops early once `max_det` boxes are kept.
    """
    if not len(det):
        return det
    box = det[:, :4].double()  # classes moved apart in space; float64 keeps their IoUs exact
    score = det[:, 4].double()
    if agnostic:
        return det[_greedy_nms(box, score, iou_thres, max_det)]
    cls = det[:, 5].long()
    box = box + cls[:, None].double() * (box.max() + 1)
    groups = _class_groups(cls)
    if len(groups) == 1:
        return det[_greedy_nms(box, score, iou_thres, max_det)]
    kept = torch.cat([idx[torchvision.ops.nms(box[idx], score[idx], iou_thres)] for idx in groups])
    return det[kept.sort().values[:max_det]]  # the rows are in score order, so index order is score order


_GROUP_ROWS = 512  # rows per class group in _nms_one: fewer means more NMS calls, more means more comparisons


def _class_groups(cls: torch.Tensor) -> list[torch.Tensor]:
    """Row indices of `cls` (n,) cut into groups of whole classes of about `_GROUP_ROWS` rows (at most
    8 groups; one group, all rows in order, when n < 2 x `_GROUP_ROWS`)."""
    n = len(cls)
    k = min(n // _GROUP_ROWS, 8)
    if k < 2:
        return [torch.arange(n, device=cls.device)]
    order = torch.argsort(cls, stable=True)  # by class, rows of one class in their (score) order
    counts = torch.bincount(cls)
    ends = counts.cumsum(0)[counts > 0].tolist()  # where each present class ends in `order`
    bounds, share = [0], n / k
    for e in ends:
        if e >= share * len(bounds) or e == n:
            bounds.append(e)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _greedy_nms(box: torch.Tensor, score: torch.Tensor, iou_thres: float, max_det: int) -> torch.Tensor:
    """Indices kept by greedy NMS of score-sorted rows (n, 4) / (n,), at most `max_det`, in score order.

    A box is only ever suppressed by a higher-scoring box that was itself kept, so the rows are
    taken in score-ordered chunks, each run together with the boxes kept so far; once `max_det`
    boxes are kept, lower rows cannot change the answer and are never looked at. The first chunk
    is 2 x `max_det` rows; each next one is sized from the share of rows kept so far to reach
    `max_det` (at conf 0.001 about 1 row in 8 survives: ~2 NMS calls where fixed chunks took ~5).
    """
    kept = torch.zeros(0, dtype=torch.long, device=box.device)
    n, start, step = len(box), 0, 2 * max_det
    while start < n:
        end = min(start + step, n)
        idx = torch.cat((kept, torch.arange(start, end, device=box.device)))
        kept = idx[torchvision.ops.nms(box[idx], score[idx], iou_thres)]
        if len(kept) >= max_det:
            break
        kept_per_row = max(len(kept), 1) / end
        step = max(int(1.25 * (max_det - len(kept)) / kept_per_row), 2 * max_det)
        start = end
    return kept[:max_det]


def _candidates(prediction: torch.Tensor, conf_thres: float, multi_label: bool,
                classes: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows above the threshold over the whole batch: image index (m,) and (m, 6) xyxy, score, class."""
    b, a = (prediction[..., 4] > conf_thres).nonzero(as_tuple=True)
    x = prediction[b, a]
    scores = x[:, 5:] * x[:, 4:5]
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        r, c = (scores > conf_thres).nonzero(as_tuple=True)
        img, det = b[r], torch.cat((box[r], scores[r, c, None], c[:, None].to(box.dtype)), 1)
    else:
        conf, c = scores.max(1, keepdim=True)
        ok = conf.view(-1) > conf_thres
        img, det = b[ok], torch.cat((box, conf, c.to(box.dtype)), 1)[ok]
    if classes is not None:
        ok = (det[:, 5:6] == torch.tensor(classes, device=det.device, dtype=det.dtype)).any(1)
        img, det = img[ok], det[ok]
    return img, det.float()


def _top_per_image(img: torch.Tensor, det: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each image's `k` highest-scoring rows (a cap on the NMS input size)."""
    if len(img) <= k or (most := int(torch.bincount(img).max())) <= k:
        return img, det
    _warn_cap(most, k)
    order = det[:, 4].argsort(descending=True)
    order = order[img[order].argsort(stable=True)]  # by image, score-descending within each image
    counts = torch.bincount(img[order])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=img.device) - starts[img[order]]
    order = order[rank < k]
    return img[order], det[order]


def _split_per_image(img: torch.Tensor, det: torch.Tensor, bs: int, max_rows: int) -> list[torch.Tensor]:
    """Rows with image indices -> one tensor per image, highest score first, at most `max_rows` each."""
    # one sort: by image, then by score descending (scores are in [0, 1], so image * 2 - score orders both)
    order = (img.double() * 2 - det[:, 4].double()).argsort()
    counts = torch.bincount(img, minlength=bs).tolist()
    return [d[:max_rows] for d in det[order].split(counts)]
