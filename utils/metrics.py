"""Detection metrics: matching predictions to ground truth, average precision, confusion matrix.

Conventions used throughout:

* a *detection* row is ``x1, y1, x2, y2, confidence, class`` (what NMS returns);
* a *label* row is ``class, x1, y1, x2, y2`` in the same pixel space as the detections;
* AP is evaluated at the ten IoU thresholds 0.50, 0.55, ..., 0.95 (:data:`IOU_THRESHOLDS`).

The numbers are meant to agree with YOLOv5's own ``val.py`` on the same detections, so the
few places where that tool makes a particular choice (how matches are made unique, the
trapezoidal 101-point AP, the smoothing of the F1 curve) follow it and say so.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from utils.boxes import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_AP_GRID = np.linspace(0.0, 1.0, 101)  # recall values AP is sampled at
EPS = 1e-16


# ----------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------
def _unique_pairs(lab: np.ndarray, det: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce candidate (label, detection) pairs to a one-to-one assignment.

    First every detection keeps only the pair with its highest IoU. Of what is left, every
    label keeps the pair whose detection comes first in the detection order (NMS output is
    sorted by confidence, so that is the most confident one). This two-step reduction is
    how YOLOv5 scores its detections; it is not a globally optimal assignment.
    """
    order = np.lexsort((-iou, det))  # by detection, then by decreasing IoU
    lab, det = lab[order], det[order]
    keep = np.ones(len(det), dtype=bool)
    keep[1:] = det[1:] != det[:-1]
    lab, det = lab[keep], det[keep]  # now sorted by detection index
    order = np.argsort(lab, kind="stable")  # stable: within a label, detections stay in order
    lab, det = lab[order], det[order]
    keep = np.ones(len(det), dtype=bool)
    keep[1:] = lab[1:] != lab[:-1]
    return lab[keep], det[keep]


def match_predictions(detections: torch.Tensor, labels: torch.Tensor,
                      iou_thresholds: np.ndarray | torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """Which detections are true positives, at each IoU threshold.

    `detections` (n, 6) and `labels` (m, 5) belong to one image. A detection can only match
    a label of its own class with IoU >= the threshold, and every label matches at most one
    detection (see :func:`_unique_pairs`). Returns a bool tensor (n, len(iou_thresholds)) on
    the detections' device.
    """
    thresholds = np.asarray(iou_thresholds.cpu() if isinstance(iou_thresholds, torch.Tensor) else iou_thresholds)
    n = detections.shape[0]
    correct = np.zeros((n, len(thresholds)), dtype=bool)
    if n and labels.shape[0]:
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())
        same_class = labels[:, 0:1] == detections[:, 5]
        iou = (iou * same_class).cpu().numpy()  # pairs of different classes get IoU 0
        lab_all, det_all = np.nonzero(iou >= thresholds.min())
        iou_all = iou[lab_all, det_all]
        for k, t in enumerate(thresholds):
            sel = iou_all >= t
            if not sel.any():
                break  # thresholds increase, so no later one can match either
            _, det = _unique_pairs(lab_all[sel], det_all[sel], iou_all[sel])
            correct[det, k] = True
    return torch.from_numpy(correct).to(detections.device)


# ----------------------------------------------------------------------------------------------
# Average precision
# ----------------------------------------------------------------------------------------------
def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Moving average over a window of about ``2 * fraction`` of the curve (odd length),
    the ends extended with their edge values so the output has the input's length."""
    width = round(len(y) * fraction * 2) // 2 + 1
    half = width // 2
    padded = np.pad(np.asarray(y, dtype=np.float64), half, mode="edge")
    return np.convolve(padded, np.full(width, 1.0 / width), mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray,
               credit_full_recall: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one precision/recall curve (points ordered by decreasing confidence).

    The curve is closed with (recall 0, precision 1) and (recall 1, precision 0), replaced by
    its envelope (precision made non-increasing in recall), sampled at 101 recall values
    0, 0.01, ..., 1 (linear interpolation between points) and integrated with the trapezoid
    rule. Returns AP, the envelope's precision and recall points.

    When the detections do reach recall 1, the sample at recall 1 takes the envelope's
    precision there (`credit_full_recall`). YOLOv5 samples the closing point's 0 instead,
    which caps even a perfect detector at AP 0.995; pass False to reproduce those figures
    exactly (the difference is at most 0.005 per class, and only for classes fully recalled).
    """
    ap, mpre, mrec = compute_ap_columns(np.asarray(recall)[:, None], np.asarray(precision)[:, None],
                                        credit_full_recall)
    return float(ap[0]), mpre[:, 0], mrec[:, 0]


def compute_ap_columns(recall: np.ndarray, precision: np.ndarray,
                       credit_full_recall: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`compute_ap` of every column of `recall` and `precision` (n, k), e.g. one column per
    IoU threshold. Returns AP (k,) and the envelopes' precision and recall points (n + 2, k)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    k = recall.shape[1]
    mrec = np.concatenate((np.zeros((1, k)), recall, np.ones((1, k))))
    mpre = np.concatenate((np.ones((1, k)), precision, np.zeros((1, k))))
    mpre = np.maximum.accumulate(mpre[::-1], axis=0)[::-1]
    sampled = np.stack([np.interp(_AP_GRID, mrec[:, j], mpre[:, j]) for j in range(k)])  # (k, 101)
    if credit_full_recall:
        full = recall >= 1.0 - 1e-9
        for j in np.flatnonzero(full.any(0)):
            sampled[j, -1] = mpre[1:-1, j][full[:, j]].max()
    # the trapezoid rule on the uniform grid: (sum - (first + last) / 2) * step
    ap = (sampled.sum(1) - 0.5 * (sampled[:, 0] + sampled[:, -1])) * (_AP_GRID[1] - _AP_GRID[0])
    return ap, mpre, mrec


class Curves(NamedTuple):
    """Per-class curves over confidence (``px``) and the PR curve at IoU 0.5 over recall (``px``)."""

    px: np.ndarray  # (1000,) confidences / recall grid
    precision: np.ndarray  # (nc, 1000) precision vs confidence
    recall: np.ndarray  # (nc, 1000) recall vs confidence
    f1: np.ndarray  # (nc, 1000) F1 vs confidence
    pr: np.ndarray  # (nc, 1000) precision vs recall at IoU 0.5


class APResult(NamedTuple):
    """What :func:`ap_per_class` finds. Arrays are indexed like `classes`."""

    p: np.ndarray  # (nc,) precision at the chosen confidence
    r: np.ndarray  # (nc,) recall at the chosen confidence
    f1: np.ndarray  # (nc,) F1 at the chosen confidence
    ap: np.ndarray  # (nc, n_iou) AP per class and IoU threshold
    classes: np.ndarray  # (nc,) int class ids that have at least one label
    tp: np.ndarray  # (nc,) true positives at the chosen confidence (from r * labels)
    fp: np.ndarray  # (nc,) false positives at the chosen confidence
    conf: float  # the chosen confidence (best smoothed mean F1)
    curves: Curves


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = EPS, f1_smoothing: float = 0.1, credit_full_recall: bool = True) -> APResult:
    """Precision, recall, F1 and AP for every class present in the labels.

    `tp` (n, n_iou) bool: whether each detection is a true positive at each IoU threshold;
    `conf`, `pred_cls` (n,): its confidence and class; `target_cls` (m,): the class of every
    label. Classes that only occur in the detections are left out (they have no AP).

    AP is computed by :func:`compute_ap` (see there for `credit_full_recall`).
    P and R are read at one confidence for all classes: the one where the class-mean F1
    curve, smoothed by a moving average over `f1_smoothing` of its length, peaks.
    """
    tp = np.asarray(tp, dtype=np.float64).reshape(len(conf), -1)
    conf, pred_cls = np.asarray(conf, dtype=np.float64), np.asarray(pred_cls)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    classes, n_labels = np.unique(np.asarray(target_cls), return_counts=True)
    nc, n_iou = len(classes), tp.shape[1]
    px = np.linspace(0.0, 1.0, 1000)
    ap = np.zeros((nc, n_iou))
    p_curve, r_curve, pr_curve = np.zeros((nc, 1000)), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1.0 - tp[mine]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        # np.interp needs increasing x: walk the confidences from high to low as -conf
        r_curve[ci] = np.interp(-px, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        ap[ci], mpre, mrec = compute_ap_columns(recall, precision, credit_full_recall)
        pr_curve[ci] = np.interp(px, mrec[:, 0], mpre[:, 0])

    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    best = int(smooth(f1_curve.mean(0), f1_smoothing).argmax()) if nc else 0
    p, r, f1 = p_curve[:, best], r_curve[:, best], f1_curve[:, best]
    tp_at = (r * n_labels).round()
    fp_at = (tp_at / (p + eps) - tp_at).round()
    return APResult(p, r, f1, ap, classes.astype(int), tp_at, fp_at, float(px[best]),
                    Curves(px, p_curve, r_curve, f1_curve, pr_curve))


class Summary(NamedTuple):
    """Dataset-level results of a validation run."""

    mp: float  # mean precision over classes with labels
    mr: float  # mean recall
    map50: float  # mean AP at IoU 0.5
    map: float  # mean AP over IoU 0.5:0.95
    n_labels: np.ndarray  # (nc,) labels per class
    result: APResult | None  # per-class detail (None when there were no labels/detections)

    def maps(self, nc: int) -> np.ndarray:
        """AP50-95 of every class id 0..nc-1; classes without labels get the overall mAP."""
        out = np.full(nc, self.map)
        if self.result is not None:
            out[self.result.classes] = self.result.ap.mean(1)
        return out


def summarize(stats: list[tuple], nc: int, **ap_kwargs) -> Summary:
    """Combine per-image ``(correct, conf, pred_cls, target_cls)`` tuples into a :class:`Summary`."""
    cols = [np.concatenate([_np(s[k]) for s in stats], 0) if stats else np.zeros(0) for k in range(4)]
    correct, conf, pred_cls, target_cls = cols
    n_labels = np.bincount(target_cls.astype(int), minlength=nc)
    if not len(stats) or not correct.size or not target_cls.size:
        return Summary(0.0, 0.0, 0.0, 0.0, n_labels, None)
    res = ap_per_class(correct, conf, pred_cls, target_cls, **ap_kwargs)
    return Summary(float(res.p.mean()), float(res.r.mean()), float(res.ap[:, 0].mean()),
                   float(res.ap.mean()), n_labels, res)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def fitness(x: np.ndarray | list | tuple) -> np.ndarray:
    """Model fitness for picking the best epoch: 0.1 * mAP50 + 0.9 * mAP50-95.

    `x` holds ``[P, R, mAP50, mAP50-95, ...]`` (one row, or one row per model).
    """
    x = np.asarray(x, dtype=np.float64)
    x2 = x.reshape(-1, x.shape[-1])
    out = 0.1 * x2[:, 2] + 0.9 * x2[:, 3]
    return out if x.ndim > 1 else out[0]


# ----------------------------------------------------------------------------------------------
# Confusion matrix
# ----------------------------------------------------------------------------------------------
class ConfusionMatrix:
    """Counts of (predicted class, true class) for detections above `conf`, matched to labels
    class-agnostically at IoU > `iou_thres`.

    ``matrix[pred, true]`` with an extra index ``nc`` for *background*: a label that no
    detection matched counts in ``matrix[nc, true]`` (missed), a detection that matched no
    label in ``matrix[pred, nc]`` (false alarm).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Add one image: `detections` (n, 6) (None = none) and `labels` (m, 5) class + xyxy."""
        labels = torch.as_tensor(labels).reshape(-1, 5)
        gt = labels[:, 0].long().cpu().numpy()
        if detections is None:
            detections = torch.zeros((0, 6), device=labels.device)
        dets = detections[detections[:, 4] > self.conf]
        pc = dets[:, 5].long().cpu().numpy()
        matched_lab = matched_det = np.zeros(0, dtype=np.int64)
        if len(gt) and len(pc):
            iou = box_iou(labels[:, 1:5].float(), dets[:, :4].float().to(labels.device)).cpu().numpy()
            lab, det = np.nonzero(iou > self.iou_thres)
            # highest-IoU pairs first, each label and each detection used at most once
            used_l, used_d, ml, md = set(), set(), [], []
            for k in np.argsort(-iou[lab, det], kind="stable"):
                a, b = int(lab[k]), int(det[k])
                if a not in used_l and b not in used_d:
                    used_l.add(a)
                    used_d.add(b)
                    ml.append(a)
                    md.append(b)
            matched_lab, matched_det = np.array(ml, dtype=np.int64), np.array(md, dtype=np.int64)
        np.add.at(self.matrix, (pc[matched_det], gt[matched_lab]), 1)
        missed = np.setdiff1d(np.arange(len(gt)), matched_lab)
        np.add.at(self.matrix, (np.full(len(missed), self.nc), gt[missed]), 1)
        extra = np.setdiff1d(np.arange(len(pc)), matched_det)
        np.add.at(self.matrix, (pc[extra], np.full(len(extra), self.nc)), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives per class (background excluded)."""
        tp = np.diag(self.matrix)[:-1]
        fp = self.matrix.sum(1)[:-1] - tp
        return tp, fp

    def normalized(self) -> np.ndarray:
        """Each true-class column divided by its total (columns with no entries stay 0)."""
        m = self.matrix.astype(np.float64)
        return m / np.maximum(m.sum(0, keepdims=True), 1e-9)
