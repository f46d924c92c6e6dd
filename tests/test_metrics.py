"""Metric unit tests on hand-built cases whose answers are known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from utils.coco import (
    COCO80_TO_91,
    COCO_NAMES,
    build_gt_json,
    category_map,
    coco_eval,
    detections_to_json,
    image_ids,
    is_coco_classes,
    write_json,
)
from utils.metrics import IOU_THRESHOLDS, ConfusionMatrix, ap_per_class, compute_ap, fitness, match_predictions, smooth, summarize

A = [0.0, 0.0, 100.0, 100.0]
B = [200.0, 200.0, 300.0, 260.0]
C = [50.0, 300.0, 90.0, 400.0]
D = [400.0, 0.0, 480.0, 80.0]


def dets(*rows) -> torch.Tensor:
    """rows of (box, conf, cls) -> (n, 6)"""
    return torch.tensor([[*box, conf, cls] for box, conf, cls in rows], dtype=torch.float32).reshape(-1, 6)


def labels(*rows) -> torch.Tensor:
    """rows of (cls, box) -> (m, 5)"""
    return torch.tensor([[cls, *box] for cls, box in rows], dtype=torch.float32).reshape(-1, 5)


def image_stats(d: torch.Tensor, lb: torch.Tensor) -> tuple:
    return match_predictions(d, lb), d[:, 4], d[:, 5], lb[:, 0]


# ---------------------------------------------------------------------------------------------
def test_iou_thresholds():
    assert len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS[0] == pytest.approx(0.5) and IOU_THRESHOLDS[-1] == pytest.approx(0.95)


def test_perfect_predictions_score_one():
    img1 = image_stats(dets((A, 0.9, 0), (B, 0.8, 1)), labels((0, A), (1, B)))
    img2 = image_stats(dets((C, 0.7, 0)), labels((0, C)))
    assert img1[0].all() and img2[0].all()
    s = summarize([img1, img2], nc=2)
    assert s.mp == 1.0 and s.mr == 1.0
    assert s.map50 == pytest.approx(1.0) and s.map == pytest.approx(1.0)
    assert s.result.ap == pytest.approx(np.ones((2, 10)))
    assert s.n_labels.tolist() == [2, 1]
    assert fitness([s.mp, s.mr, s.map50, s.map]) == pytest.approx(1.0)


def test_yolov5_compatible_ap_caps_perfect_at_0995():
    st = [image_stats(dets((A, 0.9, 0)), labels((0, A)))]
    assert summarize(st, 1, credit_full_recall=False).map50 == pytest.approx(0.995)


def test_wrong_class_is_a_false_positive():
    st = [image_stats(dets((A, 0.9, 1)), labels((0, A)))]
    assert not st[0][0].any()
    s = summarize(st, nc=2)
    assert s.result.classes.tolist() == [0]  # class 1 has no labels: not reported
    assert s.map50 == 0.0 and s.map == 0.0 and s.mp == 0.0 and s.mr == 0.0


def test_right_and_wrong_class_on_one_box():
    st = [image_stats(dets((A, 0.9, 0), (A, 0.8, 1)), labels((0, A)))]
    assert st[0][0][0].all() and not st[0][0][1].any()
    s = summarize(st, nc=2)
    assert s.result.classes.tolist() == [0] and s.map == pytest.approx(1.0)


def test_duplicate_detections_only_one_counts():
    correct = match_predictions(dets((A, 0.9, 0), (A, 0.8, 0)), labels((0, A)))
    assert correct[0].all() and not correct[1].any()
    s = summarize([image_stats(dets((A, 0.9, 0), (A, 0.8, 0)), labels((0, A)))], nc=1)
    # recall 1 at precision 1 first, then a duplicate at precision 0.5: the envelope stays 1
    assert s.map50 == pytest.approx(1.0)


def test_duplicate_with_better_iou_but_lower_confidence():
    # IoU with A: 0.62 for the confident one, 0.97 for the other
    d = dets(([0, 0, 100, 62], 0.9, 0), ([0, 0, 100, 97], 0.8, 0))
    correct = match_predictions(d, labels((0, A)))
    # up to IoU 0.60 both qualify and the more confident detection takes the label
    assert correct[0].tolist() == [True] * 3 + [False] * 7
    assert correct[1].tolist() == [False] * 3 + [True] * 7


def test_iou_threshold_boundaries():
    correct = match_predictions(dets(([0, 0, 100, 62], 0.9, 0)), labels((0, A)))
    assert correct.sum().item() == 3  # 0.62 passes 0.50, 0.55, 0.60
    correct = match_predictions(dets(([0, 0, 100, 96], 0.9, 0)), labels((0, A)))
    assert correct.sum().item() == 10


def test_one_detection_two_labels_goes_to_the_best_iou():
    lb = labels((0, [0, 0, 100, 100]), (0, [0, 0, 100, 90]))
    correct = match_predictions(dets(([0, 0, 100, 92], 0.9, 0)), lb)
    assert correct.all()  # IoU 0.978 with the second label
    # two detections, two labels: both matched at IoU 0.5
    correct = match_predictions(dets(([0, 0, 100, 92], 0.9, 0), ([0, 0, 100, 100], 0.8, 0)), lb)
    assert correct[:, 0].all()


def test_image_without_labels():
    d = dets((A, 0.9, 0), (B, 0.5, 1))
    correct = match_predictions(d, labels())
    assert correct.shape == (2, 10) and not correct.any()
    # a false positive less confident than every true positive leaves AP at 1
    st = [image_stats(dets((A, 0.9, 0), (C, 0.8, 0)), labels((0, A), (0, C))),
          image_stats(dets((B, 0.5, 0)), labels())]
    assert summarize(st, nc=1).map == pytest.approx(1.0)
    # more confident than the true positive: precision 0.5 at every recall -> AP 0.5
    st = [image_stats(dets((A, 0.6, 0)), labels((0, A))), image_stats(dets((B, 0.9, 0)), labels())]
    s = summarize(st, nc=1)
    assert s.map50 == pytest.approx(0.5) and s.map == pytest.approx(0.5)


def test_images_with_nothing():
    st = [image_stats(dets(), labels()), image_stats(dets(), labels((0, A)))]
    s = summarize(st, nc=1)
    assert s.map == 0.0 and s.n_labels.tolist() == [1]
    s = summarize([], nc=3)
    assert s.map == 0.0 and s.result is None and s.maps(3).tolist() == [0.0, 0.0, 0.0]


def test_class_without_predictions():
    st = [image_stats(dets((A, 0.9, 0)), labels((0, A), (1, B)))]
    s = summarize(st, nc=3)
    assert s.result.classes.tolist() == [0, 1]
    assert s.result.ap[0] == pytest.approx(np.ones(10))
    assert s.result.ap[1] == pytest.approx(np.zeros(10))
    assert s.result.p.tolist() == [1.0, 0.0] and s.result.r.tolist() == [1.0, 0.0]
    assert s.map50 == pytest.approx(0.5) and s.map == pytest.approx(0.5)
    # per-class maps: class 2 has no labels and gets the overall mAP
    assert s.maps(3) == pytest.approx([1.0, 0.0, 0.5])


def test_half_recall():
    # two labels, one found: AP 0.75 (the closing point (1, 0) makes the tail a ramp, as in YOLOv5)
    st = [image_stats(dets((A, 0.9, 0)), labels((0, A), (0, B)))]
    s = summarize(st, nc=1)
    assert s.map50 == pytest.approx(0.75)
    assert s.mr == pytest.approx(0.5) and s.mp == pytest.approx(1.0)


def test_compute_ap_known_curves():
    assert compute_ap(np.array([0.5]), np.array([1.0]))[0] == pytest.approx(0.75)
    assert compute_ap(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(1.0)
    assert compute_ap(np.array([1.0]), np.array([1.0]), credit_full_recall=False)[0] == pytest.approx(0.995)
    assert compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))[0] == pytest.approx(
        np.trapezoid(np.interp(np.linspace(0, 1, 101), [0, 0.5, 1.0], [1, 1, 0.5]), np.linspace(0, 1, 101)))


def test_ap_per_class_ordering_is_by_confidence():
    # same detections given in a shuffled order give the same result
    tp = np.array([[1], [0], [1], [0]], dtype=bool)
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    cls = np.zeros(4)
    r1 = ap_per_class(tp, conf, cls, np.zeros(3))
    perm = [2, 0, 3, 1]
    r2 = ap_per_class(tp[perm], conf[perm], cls[perm], np.zeros(3))
    assert r1.ap == pytest.approx(r2.ap) and r1.p == pytest.approx(r2.p)
    assert r1.curves.pr.shape == (1, 1000) and r1.curves.f1.shape == (1, 1000)


def test_smooth():
    y = np.full(1000, 0.3)
    assert smooth(y, 0.1) == pytest.approx(y)
    assert len(smooth(np.arange(1000.0), 0.1)) == 1000
    step = np.r_[np.zeros(500), np.ones(500)]
    out = smooth(step, 0.1)  # a 101-wide moving average
    assert out[499] == pytest.approx(50 / 101) and out[0] == 0 and out[-1] == 1


def test_fitness_weights():
    assert fitness([0.5, 0.5, 0.6, 0.4]) == pytest.approx(0.42)
    f = fitness(np.array([[0, 0, 1.0, 0.0, 9], [0, 0, 0.0, 1.0, 9]]))
    assert f == pytest.approx([0.1, 0.9])


def test_confusion_matrix():
    cm = ConfusionMatrix(nc=3)
    lb = labels((0, A), (1, B), (2, C))
    d = dets((A, 0.9, 0), (B, 0.8, 2), (D, 0.7, 1), (C, 0.1, 2))  # the last is below conf 0.25
    cm.process_batch(d, lb)
    m = cm.matrix
    assert m[0, 0] == 1  # right
    assert m[2, 1] == 1  # a 1 seen as a 2
    assert m[1, 3] == 1  # a 1 where there is nothing
    assert m[3, 2] == 1  # the 2 was missed
    assert m.sum() == 4
    cm.process_batch(dets((A, 0.9, 2)), labels())  # image without labels
    cm.process_batch(None, labels((1, A)))  # image without detections
    assert cm.matrix[2, 3] == 1 and cm.matrix[3, 1] == 1 and cm.matrix.sum() == 6
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0, 0] and fp.tolist() == [0, 1, 2]
    assert cm.normalized()[:, 1].sum() == pytest.approx(1.0)


def test_confusion_matrix_uses_each_label_once():
    cm = ConfusionMatrix(nc=1)
    cm.process_batch(dets((A, 0.9, 0), (A, 0.8, 0)), labels((0, A)))
    assert cm.matrix.tolist() == [[1, 1], [0, 0]]


# ---------------------------------------------------------------------------------------------
def test_coco_category_map():
    assert len(COCO80_TO_91) == 80 and COCO80_TO_91[0] == 1 and COCO80_TO_91[-1] == 90
    assert COCO80_TO_91[11] == 13 and 12 not in COCO80_TO_91  # "stop sign" follows the unused 12
    assert is_coco_classes(COCO_NAMES) and is_coco_classes(dict(enumerate(COCO_NAMES)))
    assert not is_coco_classes(["a", "b"])
    assert category_map(COCO_NAMES) == COCO80_TO_91
    assert category_map(["a", "b"])[:2] == [0, 1]


def test_image_ids_unique_ints_coco_numbers_kept():
    """Issue 22: numeric COCO stems keep their number; text stems and same-name files in other
    folders get fresh ints above every kept number, so no two images share an id."""
    paths = ["a/000000000009.jpg", "a/img_71.jpg", "a/000000000042.png", "b/000000000009.jpg",
             "camA/f0.jpg", "camB/f0.jpg", "a/img_71.jpg"]
    ids = image_ids(paths)
    assert ids["a/000000000009.jpg"] == 9 and ids["a/000000000042.png"] == 42
    assert all(isinstance(v, int) for v in ids.values())
    assert len(ids) == 6 and len(set(ids.values())) == 6  # one id per distinct path
    assert sorted(v for k, v in ids.items() if k not in ("a/000000000009.jpg", "a/000000000042.png")) == [43, 44, 45, 46]
    assert image_ids(list(reversed(paths)))["b/000000000009.jpg"] == 9  # the first of a number claims it
    assert image_ids(["x/1.jpg", "y/01.jpg"]) == {"x/1.jpg": 1, "y/01.jpg": 2}


def test_detections_json_format():
    out = detections_to_json(dets(([10.0, 20.0, 110.0, 70.0], 0.123456, 1)), 42, COCO80_TO_91)
    assert out == [{"image_id": 42, "category_id": 2, "bbox": [10.0, 20.0, 100.0, 50.0], "score": 0.12346}]


def test_pycocotools_agrees_on_perfect_and_half(tmp_path):
    names = ["cat", "dog"]
    # image 1: 200x100 (h, w), one cat centred; image 2: 100x100, one dog and one cat
    imgs = [("a/1.jpg", 200, 100, np.array([[0, 0.5, 0.5, 0.5, 0.25]])),
            ("a/2.jpg", 100, 100, np.array([[1, 0.25, 0.25, 0.5, 0.5], [0, 0.75, 0.75, 0.5, 0.5]]))]
    gt = build_gt_json(imgs, names)
    assert gt["annotations"][0]["bbox"] == pytest.approx([25.0, 75.0, 50.0, 50.0])
    assert [c["id"] for c in gt["categories"]] == [0, 1]
    anno = write_json(gt, tmp_path / "gt.json")
    perfect = [{"image_id": 1, "category_id": 0, "bbox": [25, 75, 50, 50], "score": 0.9},
               {"image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "score": 0.9},
               {"image_id": 2, "category_id": 0, "bbox": [50, 50, 50, 50], "score": 0.8}]
    pred = write_json(perfect, tmp_path / "pred.json")
    assert coco_eval(anno, pred, verbose=False) == pytest.approx((1.0, 1.0))
    pred = write_json(perfect[:2], tmp_path / "pred2.json")  # one cat missed: cat AP 0.5, dog 1
    m, m50 = coco_eval(anno, pred, verbose=False)
    assert m50 == pytest.approx((1.0 + 51 / 101) / 2)
    assert json.loads(anno.read_text())["images"][0] == {"id": 1, "file_name": "1.jpg", "height": 200, "width": 100}


def test_metric_plots(tmp_path):
    from utils.metric_plots import plot_all

    st = [image_stats(dets((A, 0.9, 0), (B, 0.4, 1)), labels((0, A), (1, C)))]
    s = summarize(st, nc=2)
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(st and dets((A, 0.9, 0), (B, 0.4, 1)), labels((0, A), (1, C)))
    files = plot_all(s.result, cm, tmp_path, ["cat", "dog"])
    assert sorted(f.name for f in files) == ["F1_curve.png", "PR_curve.png", "P_curve.png", "R_curve.png",
                                            "confusion_matrix.png"]
    assert all(f.stat().st_size > 1000 for f in files)


def test_confusion_matrix_of_many_classes_keeps_tick_labels(tmp_path):
    """80 classes: every 3rd class and "background" labelled on both axes (issue 13)."""
    from utils.metric_plots import confusion_figure, plot_confusion_matrix

    cm = ConfusionMatrix(nc=80)
    names = [f"class{i}" for i in range(80)]
    fig = confusion_figure(cm, names)
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        texts = [t.get_text() for t in labels]
        assert texts[-1] == "background"
        assert texts[:3] == ["class0", "class3", "class6"] and len(texts) == 28
    small = confusion_figure(ConfusionMatrix(nc=5), names[:5]).axes[0]
    assert [t.get_text() for t in small.get_xticklabels()] == [*names[:5], "background"]
    assert plot_confusion_matrix(cm, tmp_path / "cm.png", names).is_file()


def test_image_ids_from_an_annotation_file_take_precedence():
    known = {"000000000009.jpg": 9, "frame_a.jpg": 4, "000000000031.jpg": 31}
    ids = image_ids(["x/frame_a.jpg", "x/000000000009.jpg", "x/img_x.jpg", "y/frame_a.jpg", "x/000000000030.jpg"],
                    known)
    assert ids == {"x/frame_a.jpg": 4, "x/000000000009.jpg": 9, "x/img_x.jpg": 32, "y/frame_a.jpg": 33,
                   "x/000000000030.jpg": 34}  # a number the file does not list is not trusted either


def test_image_ids_from_long_numbers_stay_within_json_safe_integers():
    big = "1" * 22  # a 22-digit stem: kept, it pushed every fresh id above 2^63
    ids = image_ids([f"a/{big}.jpg", "a/img.jpg", "a/000000000009.jpg"])
    assert ids[f"a/{big}.jpg"] < 2**53 and ids["a/img.jpg"] < 2**53 and ids["a/000000000009.jpg"] == 9
    assert len(set(ids.values())) == 3
