"""AutoAnchor: BPR metric, k-means + evolution, in-place replacement only when better."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.yolo import DetectionModel
from utils.autoanchor import anchor_metrics, anchors_unset, check_anchors, kmean_anchors, label_wh, match_slots


def _labels(rng: np.random.Generator, n_img: int = 40, sizes=((0.05, 0.05), (0.2, 0.1), (0.5, 0.6))):
    out = []
    for _ in range(n_img):
        rows = []
        for w, h in sizes:
            j = rng.uniform(0.9, 1.1, 2)
            rows.append([0, 0.5, 0.5, w * j[0], h * j[1]])
        out.append(np.array(rows))
    return np.array([[640, 480]] * n_img), out


def test_label_wh_scales_long_side():
    shapes = np.array([[640, 320], [100, 200]])
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.5]]), np.array([[1, 0.5, 0.5, 1.0, 0.25], [2, 0.1, 0.1, 0.1, 0.1]])]
    wh = label_wh(shapes, labels, imgsz=320)
    assert np.allclose(wh, [[160, 80], [160, 80], [16, 32]])


def test_anchor_metrics_by_hand():
    anchors = np.array([[10.0, 10.0]])
    wh = np.array([[10.0, 10.0], [39.0, 10.0], [41.0, 10.0], [10.0, 2.0]])
    bpr, aat = anchor_metrics(anchors, wh, thr=4.0)
    assert bpr == pytest.approx(0.5)  # 41 px is > 4x, 2 px is 5x smaller
    assert aat == pytest.approx(0.5)


def test_kmeans_finds_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[10, 12], [60, 40], [200, 260]], dtype=float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centers])
    k = kmean_anchors(wh, n=3, img_size=640, gen=200, rng=rng, verbose=False)
    assert k.shape == (3, 2)
    assert np.all(np.diff(k.prod(1)) > 0)  # sorted by area
    assert np.allclose(k, centers, rtol=0.15)
    assert anchor_metrics(k, wh)[0] == 1.0


def test_check_anchors_keeps_good_anchors():
    m = DetectionModel("yolov5n.yaml", nc=1)
    before = m.model[-1].anchors.clone()
    shapes, labels = _labels(np.random.default_rng(1))
    out = check_anchors(m, shapes, labels, thr=4.0, imgsz=320)
    assert out["bpr"] >= 0.98 and not out["replaced"]
    assert torch.equal(m.model[-1].anchors, before)


def test_check_anchors_replaces_poor_anchors():
    tiny = [[2, 2, 2, 3, 3, 2]] * 3  # pixels; every box is far larger than 4x
    m = DetectionModel({**DetectionModel("yolov5n.yaml").yaml, "anchors": tiny, "nc": 1})
    shapes, labels = _labels(np.random.default_rng(2))
    out = check_anchors(m, shapes, labels, thr=4.0, imgsz=320, gen=300)
    assert out["bpr"] < 0.98 and out["replaced"] and out["new_bpr"] > 0.98
    det = m.model[-1]
    px = (det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2)
    area = px.prod(1).view(3, 3)
    assert torch.all(area[1:].min(1)[0] >= area[:-1].max(1)[0])  # small anchors on small strides
    # in stride units: level-0 anchors divided by 8
    assert anchor_metrics(px.numpy(), label_wh(shapes, labels, 320))[0] == pytest.approx(out["new_bpr"], abs=0.02)


def test_match_slots_keeps_levels_and_pairs_similar_shapes():
    old = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]]], dtype=float)
    new = np.array([[[6, 5], [10, 13], [23, 26]], [[55, 36], [45, 86], [111, 78]]], dtype=float)
    out = match_slots(new, old)
    for lvl in range(2):  # same anchors per level, only reordered
        assert sorted(map(tuple, out[lvl])) == sorted(map(tuple, new[lvl]))
    assert out[1].tolist() == [[45, 86], [55, 36], [111, 78]]  # tall to the tall slot, wide to the wide one
    assert np.array_equal(match_slots(old, old), old)


# --- unset anchors: a model built from an anchor count ---------------------------------------


def test_anchors_unset_spots_zeros_negatives_and_nan():
    assert not anchors_unset(np.array([[10.0, 13.0], [16.0, 30.0]]))
    assert anchors_unset(np.array([[10.0, 0.0]]))
    assert anchors_unset(torch.tensor([[[-1.0, 4.0]]]))
    assert anchors_unset(np.array([[np.nan, 4.0]]))
    assert anchors_unset(np.zeros((0, 2)))


def test_match_slots_refuses_a_zero_anchor_instead_of_dividing_by_it():
    old = np.array([[[10, 13], [16, 30], [33, 23]]], dtype=float)
    new = np.array([[[6, 5], [10, 13], [23, 26]]], dtype=float)
    zero = old.copy()
    zero[0, 1] = 0.0
    with np.errstate(all="raise"):  # a division by zero would raise FloatingPointError instead
        with pytest.raises(ValueError, match=r"old anchor \[0.0, 0.0\] \(level 0, slot 1\) is not a finite positive"):
            match_slots(new, zero)
        with pytest.raises(ValueError, match="new anchor"):
            match_slots(zero, old)
    with pytest.raises(ValueError, match="differ in shape"):
        match_slots(new[:, :2], old)


def _count_model(n: int) -> DetectionModel:
    return DetectionModel("yolov5n.yaml", nc=1, anchors=n)


def test_model_from_an_anchor_count_has_unset_anchors():
    m = _count_model(2)
    assert m.yaml["anchors"] == 2 and m.model[-1].anchors.shape == (3, 2, 2)
    assert torch.all(m.model[-1].anchors == 0) and anchors_unset(m.model[-1].anchors)
    assert m.model[-1].m[0].out_channels == 2 * (5 + 1)
    # the hyperparameter is a float under evolution: rounded; below 0.5 it means the YAML's anchors
    assert DetectionModel("yolov5n.yaml", nc=1, anchors=3.6).model[-1].anchors.shape == (3, 4, 2)
    kept = DetectionModel("yolov5n.yaml", nc=1, anchors=0.3)
    assert isinstance(kept.yaml["anchors"], list) and not anchors_unset(kept.model[-1].anchors)


@pytest.mark.parametrize("anchors, says", [(0, "must be at least 1"), ([[10, 13, 0, 30]] * 3, "positive widths"),
                                           ([[10, 13, 16]] * 3, "even number"), ("three", "anchor count")])
def test_yaml_anchors_without_usable_sizes_are_refused(anchors, says):
    from models.yolo import ModelConfigError

    cfg = {**DetectionModel("yolov5n.yaml").yaml, "anchors": anchors, "yaml_file": "my.yaml"}
    with pytest.raises(ModelConfigError, match=f"my.yaml: anchors.*{says}"):
        DetectionModel(cfg)


def test_check_anchors_computes_unset_anchors_without_dividing_by_zero():
    m = _count_model(2)
    shapes, labels = _labels(np.random.default_rng(3))
    with np.errstate(divide="raise", invalid="raise"):
        out = check_anchors(m, shapes, labels, thr=4.0, imgsz=320, gen=100)
    assert out["unset"] and out["replaced"] and out["new_bpr"] > 0.98
    det = m.model[-1]
    assert det.anchors.shape == (3, 2, 2) and torch.isfinite(det.anchors).all() and (det.anchors > 0).all()
    area = (det.anchors * det.stride.view(-1, 1, 1)).prod(-1)
    assert torch.all(area[1:].min(1)[0] >= area[:-1].max(1)[0])  # small anchors on small strides


def test_check_anchors_unset_without_labels_still_gives_positive_anchors():
    m = _count_model(3)
    out = check_anchors(m, np.array([[640, 480]] * 2), [np.zeros((0, 5))] * 2, imgsz=320, gen=10)
    assert out["replaced"] and not anchors_unset(m.model[-1].anchors)


def test_check_anchors_recompute_replaces_anchors_that_fit():
    m = DetectionModel("yolov5n.yaml", nc=1)
    det = m.model[-1]
    before = (det.anchors * det.stride.view(-1, 1, 1)).clone()
    shapes, labels = _labels(np.random.default_rng(1))
    assert check_anchors(m, shapes, labels, imgsz=320, gen=100)["bpr"] >= 0.98  # the usual check keeps them
    out = check_anchors(m, shapes, labels, imgsz=320, gen=100, recompute="hyp file h.yaml, key anchors")
    assert out["replaced"] and not out["unset"]
    after = det.anchors * det.stride.view(-1, 1, 1)
    assert not torch.allclose(after, before) and not anchors_unset(after)
    ref = match_slots(after.numpy(), before.numpy())  # already in the slots of the most similar old anchors
    np.testing.assert_allclose(ref, after.numpy(), rtol=1e-5)
