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
    objectness x class score; candidates below `conf_thres` are dropped, then
    `torchvision.ops.batched_nms` (per class unless `agnostic`) keeps at most `max_det`.
    With `multi_label` a box may be kept once for every class above the threshold.
    Output rows: x1, y1, x2, y2, score, class.

    Work per image is bounded: at most `max_nms` boxes (highest objectness) enter the class
    expansion and at most `max_nms` (box, class) candidates (highest score) enter NMS, whose
    cost grows with the square of that number. When the cap drops candidates (a weak model at
    conf 0.001 can leave tens of thousands) a warning is logged once per process.
    """
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    bs, nc = prediction.shape[0], prediction.shape[2] - 5
    multi_label &= nc > 1
    device = prediction.device
    out = [torch.zeros((0, 6), device=device)] * bs
    candidates = prediction[..., 4] > conf_thres
    class_filter = torch.tensor(classes, device=device) if classes is not None else None

    for i, x in enumerate(prediction):
        x = x[candidates[i]]
        if not x.shape[0]:
            continue
        if x.shape[0] > max_nms:  # before the class expansion: it can multiply the count by nc
            _warn_cap(x.shape[0], max_nms)
            x = x[x[:, 4].topk(max_nms).indices]
        scores = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            r, c = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((box[r], scores[r, c, None], c[:, None].float()), 1)
        else:
            conf, c = scores.max(1, keepdim=True)
            det = torch.cat((box, conf, c.float()), 1)[conf.view(-1) > conf_thres]
        if class_filter is not None:
            det = det[(det[:, 5:6] == class_filter).any(1)]
        if not det.shape[0]:
            continue
        if det.shape[0] > max_nms:
            _warn_cap(det.shape[0], max_nms)
            det = det[det[:, 4].topk(max_nms).indices]
        offsets = det[:, 5:6] * (0 if agnostic else max_wh)  # separate classes in space
        keep = torchvision.ops.nms(det[:, :4] + offsets, det[:, 4], iou_thres)[:max_det]
        out[i] = det[keep]
    return out
