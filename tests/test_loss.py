"""YOLOv5 loss: CIoU, target assignment, the loss terms, gains."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_convert, complete_box_iou

from models.yolo import DetectionModel
from utils.loss import ComputeLoss, bbox_ciou, scale_hyp_gains, smooth_bce

HYP = dict(box=0.05, cls=0.5, cls_pw=1.0, obj=1.0, obj_pw=1.0, anchor_t=4.0, fl_gamma=0.0, label_smoothing=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model3():
    m = DetectionModel("yolov5n.yaml", nc=3)
    m.hyp = dict(HYP)
    return m


def _preds(nc: int, bs: int = 2, seed: int = 0, sizes: tuple[int, ...] = (8, 4, 2)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, 3, s, s, nc + 5, generator=g) for s in sizes]


TARGETS = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [0, 1, 0.2, 0.7, 0.05, 0.08],
                        [1, 2, 0.9, 0.1, 0.9, 0.2], [1, 0, 0.33, 0.6, 0.12, 0.5]])


def test_ciou_identical_and_against_torchvision():
    b = torch.tensor([[10.0, 20.0, 8.0, 6.0]])
    assert bbox_ciou(b, b).item() == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(1)
    b1 = torch.cat((torch.rand(50, 2, generator=g) * 20, torch.rand(50, 2, generator=g) * 10 + 0.5), 1)
    b2 = torch.cat((torch.rand(50, 2, generator=g) * 20, torch.rand(50, 2, generator=g) * 10 + 0.5), 1)
    ours = bbox_ciou(b1, b2)
    ref = complete_box_iou(box_convert(b1, "cxcywh", "xyxy"), box_convert(b2, "cxcywh", "xyxy")).diagonal()
    assert torch.allclose(ours, ref, atol=1e-4)
    # far apart boxes: IoU 0, CIoU negative
    far = bbox_ciou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[10.0, 10.0, 1.0, 1.0]]))
    assert far.item() < 0


def test_ciou_alpha_has_no_gradient():
    b1 = torch.tensor([[5.0, 5.0, 4.0, 2.0]], requires_grad=True)
    b2 = torch.tensor([[6.0, 5.0, 2.0, 4.0]])
    bbox_ciou(b1, b2).sum().backward()
    assert torch.isfinite(b1.grad).all() and b1.grad.abs().sum() > 0


def test_smooth_bce_and_gains():
    assert smooth_bce(0.0) == (1.0, 0.0)
    assert smooth_bce(0.1) == pytest.approx((0.95, 0.05))
    h = scale_hyp_gains(dict(HYP), nl=3, nc=80, imgsz=640)
    assert (h["box"], h["cls"], h["obj"]) == pytest.approx((0.05, 0.5, 1.0))
    h = scale_hyp_gains(dict(HYP), nl=3, nc=1, imgsz=320)
    assert (h["box"], h["cls"], h["obj"]) == pytest.approx((0.05, 0.5 / 80, 0.25))
    h = scale_hyp_gains(dict(HYP), nl=4, nc=80, imgsz=640)
    assert h["box"] == pytest.approx(0.05 * 3 / 4)


def test_build_targets_cells_and_neighbours(model3):
    loss = ComputeLoss(model3)
    preds = _preds(3, bs=1)
    # level 0 is 8x8; a 0.1 x 0.1 box (0.8 cells) centred at cell (x=2.3, y=5.8) in grid units
    t = torch.tensor([[0, 1, 2.3 / 8, 5.8 / 8, 0.1, 0.1]])
    tcls, tbox, indices, anch = loss.build_targets(preds, t)
    b, a, gj, gi = indices[0]
    # anchors of level 0 (stride 8 on 64 px -> 10x13, 16x30, 33x23 px = 1.25x1.6 ... cells); box 6.4 px
    cells = set(zip(gi.tolist(), gj.tolist()))
    # own cell (2, 5), left neighbour (x frac 0.3 < 0.5 -> x-1), down neighbour (y frac 0.8 > 0.5 -> y+1)
    assert cells == {(2, 5), (1, 5), (2, 6)}
    assert set(tcls[0].tolist()) == {1}
    # target offsets are relative to the assigned cell: in (-0.5, 1.5)
    assert (tbox[0][:, :2] > -0.5).all() and (tbox[0][:, :2] < 1.5).all()
    # every selected anchor has w/h ratio within anchor_t
    r = tbox[0][:, 2:] / anch[0]
    assert (torch.max(r, 1 / r).max(1)[0] < HYP["anchor_t"]).all()


def test_build_targets_anchor_ratio_filter(model3):
    loss = ComputeLoss(model3)
    preds = _preds(3, bs=1, sizes=(64, 32, 16))
    # a box of the whole image (63 cells at level 0) is > 4x every level-0 anchor (<= 4.1 cells)
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.99, 0.99]])
    _, _, indices, _ = loss.build_targets(preds, t)
    assert indices[0][0].numel() == 0
    assert indices[2][0].numel() > 0


def test_loss_values_pinned(model3):
    """Values computed with the YOLOv5 v7.0 loss on the same inputs."""
    out, items = ComputeLoss(model3)(_preds(3), TARGETS)
    assert items.tolist() == pytest.approx([0.0877357, 4.4128976, 0.7970210], rel=1e-5)
    assert out.item() == pytest.approx(10.5953083, rel=1e-5)
    model3.hyp["label_smoothing"] = 0.1
    try:
        _, items = ComputeLoss(model3)(_preds(3), TARGETS)
    finally:
        model3.hyp["label_smoothing"] = 0.0
    assert items[2].item() == pytest.approx(0.7970129, rel=1e-5)


def test_loss_empty_targets_and_single_class(model3):
    out, items = ComputeLoss(model3)(_preds(3), torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    assert math.isfinite(out.item())
    m1 = DetectionModel("yolov5n.yaml", nc=1)
    m1.hyp = dict(HYP)
    t = TARGETS.clone()
    t[:, 1] = 0
    _, items = ComputeLoss(m1)(_preds(1), t)
    assert items[2] == 0 and items[0] > 0


def test_loss_scales_with_batch_and_backprops(model3):
    model3.train()
    x = torch.rand(2, 3, 64, 64)
    preds = model3(x)
    out, items = ComputeLoss(model3)(preds, TARGETS)
    assert out.item() == pytest.approx(2 * items.sum().item(), rel=1e-5)
    out.backward()
    grads = [p.grad for p in model3.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model3.zero_grad(set_to_none=True)


def test_focal_loss_option(model3):
    model3.hyp["fl_gamma"] = 1.5
    try:
        _, items = ComputeLoss(model3)(_preds(3), TARGETS)
    finally:
        model3.hyp["fl_gamma"] = 0.0
    _, plain = ComputeLoss(model3)(_preds(3), TARGETS)
    assert items[0] == pytest.approx(plain[0].item())  # box term unaffected
    assert items[1] < plain[1] and items[2] < plain[2]  # focal down-weights easy examples
