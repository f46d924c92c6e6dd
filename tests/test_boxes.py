"""NMS and box helpers on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from utils.boxes import non_max_suppression, scale_boxes, xywh2xyxy, xywhn2xyxy, xyxy2xywh, xyxy2xywhn
from utils.data.augment import letterbox


def pred(rows, nc=3):
    """rows of (cx, cy, w, h, obj, class scores...) -> (1, n, 5 + nc)."""
    return torch.tensor([rows], dtype=torch.float32).view(1, len(rows), 5 + nc)


def test_box_conversions_roundtrip():
    b = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert xyxy2xywh(b).tolist() == [[20.0, 40.0, 20.0, 40.0]]
    torch.testing.assert_close(xywh2xyxy(xyxy2xywh(b)), b)
    n = xyxy2xywhn(b, w=100, h=200)
    np.testing.assert_allclose(xywhn2xyxy(np.asarray(n), w=100, h=200), b.numpy(), rtol=1e-6)


def test_scores_are_obj_times_class_and_thresholded():
    p = pred([[50, 50, 20, 20, 0.9, 0.1, 0.8, 0.1],  # score 0.72, class 1
              [150, 150, 20, 20, 0.5, 0.4, 0.1, 0.1]])  # score 0.20 < 0.25
    (det,) = non_max_suppression(p, conf_thres=0.25)
    assert det.shape == (1, 6)
    torch.testing.assert_close(det[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.72, 1.0]))


def test_overlap_suppressed_per_class_unless_agnostic():
    p = pred([[50, 50, 20, 20, 0.9, 0.9, 0.0, 0.0],
              [51, 50, 20, 20, 0.8, 0.9, 0.0, 0.0],  # same class, IoU ~0.9: suppressed
              [52, 50, 20, 20, 0.7, 0.0, 0.9, 0.0]])  # other class: kept unless agnostic
    (det,) = non_max_suppression(p, 0.25, 0.45)
    assert det[:, 5].tolist() == [0.0, 1.0]
    (det,) = non_max_suppression(p, 0.25, 0.45, agnostic=True)
    assert det[:, 5].tolist() == [0.0]


def test_class_filter_max_det_and_multi_label():
    rows = [[20 + 40 * i, 50, 20, 20, 0.9, 0.5, 0.6, 0.0] for i in range(5)]
    p = pred(rows)
    assert len(non_max_suppression(p, 0.25, 0.45, max_det=3)[0]) == 3
    (det,) = non_max_suppression(p, 0.25, 0.45, classes=[0])
    assert len(det) == 0  # the best class of every box is 1
    (det,) = non_max_suppression(p, 0.25, 0.45, multi_label=True)
    assert sorted(det[:, 5].tolist()) == [0.0] * 5 + [1.0] * 5
    (det,) = non_max_suppression(p, 0.25, 0.45, multi_label=True, classes=[0])
    assert det[:, 5].tolist() == [0.0] * 5


def test_empty_and_invalid_thresholds():
    p = torch.zeros(2, 10, 8)
    out = non_max_suppression(p)
    assert len(out) == 2 and all(o.shape == (0, 6) for o in out)
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(p, conf_thres=1.5)


def test_letterbox_and_scale_boxes_invert_each_other():
    im = np.zeros((1080, 810, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, 640, auto=True, stride=32)
    assert out.shape == (640, 480, 3) and ratio == (640 / 1080, 640 / 1080)
    out, ratio, (dw, dh) = letterbox(im, 640, auto=False)
    assert out.shape == (640, 640, 3) and dw == pytest.approx(80.0, abs=0.5)
    box = torch.tensor([[100.0, 200.0, 400.0, 900.0]])
    r = ratio[0]
    boxed = torch.tensor([[100 * r + dw, 200 * r + dh, 400 * r + dw, 900 * r + dh]])
    torch.testing.assert_close(scale_boxes((640, 640), boxed, (1080, 810)), box, atol=1e-3, rtol=0)


def test_nms_work_is_capped_with_one_warning(monkeypatch):
    """A weak model at conf 0.001: every box is a candidate for every class (issue 13)."""
    import logging

    import torchvision

    from utils import boxes
    from utils.logging import LOGGER

    torch.manual_seed(0)
    pred = torch.rand(2, 6000, 5 + 20)
    pred[..., :2] *= 640
    pred[..., 2:4] = pred[..., 2:4] * 60 + 4
    sizes = []
    real_nms = torchvision.ops.nms

    def spy(b, s, t):
        sizes.append(len(b))
        return real_nms(b, s, t)

    monkeypatch.setattr(torchvision.ops, "nms", spy)
    monkeypatch.setattr(boxes, "_CAP_WARNED", False)
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda r: warnings.append(r.getMessage())
    LOGGER.addHandler(handler)
    try:
        out = boxes.non_max_suppression(pred, 0.001, 0.6, multi_label=True, max_det=300, max_nms=2000)
        out2 = boxes.non_max_suppression(pred[:1, :1500], 0.001, 0.6, multi_label=False, max_nms=1000)
    finally:
        LOGGER.removeHandler(handler)
    assert max(sizes) <= 2000  # never more than max_nms candidates enter NMS
    assert len(out) == 2 and all(len(o) == 300 for o in out) and len(out2[0]) <= 300
    capped = [w for w in warnings if "max_nms" in w]
    assert len(capped) == 1 and "2000 highest-scoring" in capped[0]
    # the kept candidates are the highest-scoring ones: the best box overall survives
    scores = (pred[0, :, 5:] * pred[0, :, 4:5]).max()
    assert out[0][:, 4].max() == pytest.approx(float(scores))


def test_nms_batch_and_max_det_cut_match_a_full_per_image_pass():
    """The batched, chunked NMS keeps exactly the best `max_det` of a full pass, image by image, and
    the same boxes as one greedy pass per class written out in plain torch."""
    torch.manual_seed(0)
    p = torch.rand(3, 3000, 12)
    p[..., :2] *= 300
    p[..., 2:4] = p[..., 2:4] * 60 + 5
    p[1, :, 4] = 0  # an image without candidates
    cut = non_max_suppression(p, 0.001, 0.6, multi_label=True, max_det=50)
    full = non_max_suppression(p, 0.001, 0.6, multi_label=True, max_det=100_000)
    assert len(cut[1]) == 0 and len(cut[0]) == len(cut[2]) == 50
    for i in (0, 2):
        torch.testing.assert_close(cut[i], full[i][:50])
        torch.testing.assert_close(non_max_suppression(p[i:i + 1], 0.001, 0.6, multi_label=True, max_det=50)[0], cut[i])
    q = p[:1, :400]
    det = non_max_suppression(q, 0.001, 0.6, multi_label=True, max_det=60)[0]
    for c in range(7):  # greedy NMS by hand, class by class
        s = q[0, :, 4] * q[0, :, 5 + c]
        boxes, scores = xywh2xyxy(q[0, :, :4])[s > 0.001], s[s > 0.001]
        boxes = boxes[scores.argsort(descending=True)]
        keep: list[int] = []
        for j in range(len(boxes)):
            if not keep or torchvision.ops.box_iou(boxes[j:j + 1], boxes[keep]).max() <= 0.6:
                keep.append(j)
        got = det[det[:, 5] == c, :4]
        torch.testing.assert_close(got, boxes[keep][:len(got)])


def test_nms_by_class_groups_equals_one_pass(monkeypatch):
    """Many candidates are cut into groups of whole classes for NMS: the same detections as one pass."""
    from utils import boxes

    torch.manual_seed(1)
    p = torch.rand(2, 4000, 5 + 30)
    p[..., :2] *= 320
    p[..., 2:4] = p[..., 2:4] * 80 + 4
    p[..., 5:] **= 3  # uneven class scores: groups of different sizes
    cls = torch.randint(0, 30, (5000,))
    groups = boxes._class_groups(cls)
    assert len(groups) == 8 and sorted(torch.cat(groups).tolist()) == list(range(5000))
    assert all(len(set(cls[g].tolist()) & set(cls[h].tolist())) == 0 for g in groups for h in groups if g is not h)
    for max_det in (300, 100_000):
        grouped = non_max_suppression(p, 0.001, 0.6, multi_label=True, max_det=max_det)
        monkeypatch.setattr(boxes, "_GROUP_ROWS", 10**9)
        single = non_max_suppression(p, 0.001, 0.6, multi_label=True, max_det=max_det)
        monkeypatch.undo()
        for g, s in zip(grouped, single):
            torch.testing.assert_close(g, s, rtol=0, atol=0)
    assert len(grouped[0]) > 2 * boxes._GROUP_ROWS  # the uncut pass kept enough rows to need groups
