"""YOLOv5 training loss: target assignment, CIoU box loss, objectness and class BCE.

Targets arrive as one ``(n, 6)`` tensor of rows ``(image index, class, x, y, w, h)`` with
the box normalised to the input image. For each detection level a target is given to
every anchor whose width and height are both within a factor ``anchor_t`` of the box's,
in the cell holding the box centre and in the two neighbouring cells closest to the
centre (the predicted offset ``2 * sigmoid - 0.5`` spans -0.5 .. 1.5, so those cells can
reach it). Each assignment contributes

* a box term ``1 - CIoU(predicted box, target box)``;
* an objectness target equal to the (detached, non-negative) IoU of its prediction, all
  other cells having target 0; level losses are weighted by ``balance``;
* a class term, BCE against ``cp`` for the true class and ``cn`` for the others
  (label smoothing moves them away from 1 and 0).

The three sums are multiplied by the hyperparameter gains ``box``, ``obj`` and ``cls``
and by the batch size, as YOLOv5 does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from utils.torch_utils import de_parallel

# neighbour-cell offsets, in units of the 0.5 cell threshold: self, left, up, right, down
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)
# objectness weight per level (small strides see many more empty cells)
BALANCE = {3: [4.0, 1.0, 0.4]}
BALANCE_DEFAULT = [4.0, 1.0, 0.25, 0.06, 0.02]


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets for label smoothing `eps`."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def scale_hyp_gains(hyp: dict, nl: int, nc: int, imgsz: int) -> dict:
    """The YAML gains are tuned for 3 levels, 80 classes and 640 px; rescale them for this model."""
    hyp = dict(hyp)
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    return hyp


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired boxes given as ``(..., 4)`` centre-x, centre-y, width, height.

    CIoU = IoU - d^2 / c^2 - alpha * v, with d the centre distance, c the diagonal of the
    smallest enclosing box, v the aspect-ratio discrepancy ``4/pi^2 (atan(w2/h2) -
    atan(w1/h1))^2`` and ``alpha = v / (1 - IoU + v)`` (treated as a constant for the gradient).
    Returns a ``(...,)`` tensor.
    """
    x1, y1, w1, h1 = box1.unbind(-1)
    x2, y2, w2, h2 = box2.unbind(-1)
    # edges
    l1, r1, t1, b1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    l2, r2, t2, b2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(r1, r2) - torch.maximum(l1, l2)).clamp(min=0) * \
            (torch.minimum(b1, b2) - torch.maximum(t1, t2)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    # enclosing box diagonal and centre distance, both squared
    cw = torch.maximum(r1, r2) - torch.minimum(l1, l2)
    ch = torch.maximum(b1, b2) - torch.minimum(t1, t2)
    diag2 = cw.pow(2) + ch.pow(2) + eps
    dist2 = (x2 - x1).pow(2) + (y2 - y1).pow(2)
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (dist2 / diag2 + v * alpha)


class FocalLoss(nn.Module):
    """Focal modulation of a BCE-with-logits loss: ``bce * (1 - p_t)^gamma * alpha_t``,
    with ``p_t = t p + (1 - t)(1 - p)`` (also for soft targets)."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25):
        super().__init__()
        self.bce = bce
        self.gamma, self.alpha = gamma, alpha
        self.reduction = bce.reduction
        self.bce.reduction = "none"

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        loss = self.bce(pred, true)
        p = pred.sigmoid()
        alpha_t = true * self.alpha + (1 - true) * (1 - self.alpha)
        p_t = true * p + (1 - true) * (1 - p)
        loss = loss * alpha_t * (1.0 - p_t).pow(self.gamma)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


class ComputeLoss:
    """Callable ``loss(preds, targets) -> (total * batch_size, [box, obj, cls] detached)``.

    `preds` are the raw per-level maps of `Detect` in train mode, shaped
    ``(bs, na, ny, nx, 5 + nc)``. Hyperparameters come from ``model.hyp`` (a dict with at
    least ``box obj cls cls_pw obj_pw anchor_t``; optional ``label_smoothing fl_gamma``).
    """

    sort_obj_iou = False

    def __init__(self, model: nn.Module, autobalance: bool = False):
        m = de_parallel(model)
        device = next(m.parameters()).device
        h = m.hyp
        self.hyp = h
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(h.get("cls_pw", 1.0))], device=device))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(h.get("obj_pw", 1.0))], device=device))
        self.cp, self.cn = smooth_bce(float(h.get("label_smoothing", 0.0)))
        gamma = float(h.get("fl_gamma", 0.0))
        if gamma > 0:
            bce_cls, bce_obj = FocalLoss(bce_cls, gamma), FocalLoss(bce_obj, gamma)
        self.bce_cls, self.bce_obj = bce_cls, bce_obj

        det = m.model[-1]
        self.nl, self.na, self.nc = det.nl, det.na, det.nc
        self.balance = list(BALANCE.get(self.nl, BALANCE_DEFAULT[: self.nl]))
        self.ssi = list(det.stride.tolist()).index(16) if autobalance else 0  # level normalised to 1
        self.autobalance = autobalance
        self.gr = 1.0  # objectness target: (1 - gr) + gr * IoU
        self.anchor_t = float(h["anchor_t"])
        self.det = det  # anchors are read from it at every call (autoanchor may change them)
        self.device = device

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor):
        device = preds[0].device
        lcls = torch.zeros(1, device=device)
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        tcls, tbox, indices, anchors = self.build_targets(preds, targets.to(device))

        for i, pi in enumerate(preds):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=device)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i])
                lbox += (1.0 - iou).mean()

                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.sort_obj_iou:  # with duplicates, let the best IoU be written last
                    order = iou.argsort()
                    b, a, gj, gi, iou = b[order], a[order], gj[order], gi[order], iou[order]
                if self.gr < 1:
                    iou = (1.0 - self.gr) + self.gr * iou
                tobj[b, a, gj, gi] = iou

                if self.nc > 1:  # a single class needs no class loss
                    t = torch.full_like(pcls, self.cn)
                    t[torch.arange(n, device=device), tcls[i]] = self.cp
                    lcls += self.bce_cls(pcls, t)

            obji = self.bce_obj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()

        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox *= self.hyp["box"]
        lobj *= self.hyp["obj"]
        lcls *= self.hyp["cls"]
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor):
        """Assign targets to (image, anchor, cell) per level.

        Returns per level: class ids, target boxes (x, y offset within the cell, w, h in grid
        units), indices ``(image, anchor, gy, gx)`` and the matching anchors (grid units).
        """
        device = targets.device
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7, device=device)
        # one copy of every target per anchor, with the anchor index as a 7th column
        ai = torch.arange(na, device=device, dtype=targets.dtype).view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = 0.5
        off = _NEIGHBOURS.to(device=device, dtype=targets.dtype) * g

        for i in range(self.nl):
            anchors = self.det.anchors[i].to(device=device, dtype=targets.dtype)  # stride units
            shape = preds[i].shape  # (bs, na, ny, nx, no)
            gain[2:6] = torch.tensor(shape, device=device, dtype=targets.dtype)[[3, 2, 3, 2]]
            t = targets * gain  # boxes in grid units
            if nt:
                ratio = t[..., 4:6] / anchors[:, None]
                keep = torch.max(ratio, 1 / ratio).max(2)[0] < self.anchor_t
                t = t[keep]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy  # distance from the far edges
                left, up = ((gxy % 1 < g) & (gxy > 1)).T
                right, down = ((gxi % 1 < g) & (gxi > 1)).T
                sel = torch.stack((torch.ones_like(left), left, up, right, down))
                t = t.repeat((5, 1, 1))[sel]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
            else:
                t = targets[0]
                offsets = 0

            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a = a.long().view(-1)
            b, c = bc.long().T
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, shape[3] - 1)
            gj = gij[:, 1].clamp(0, shape[2] - 1)
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch
