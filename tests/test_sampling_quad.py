"""--image-weights (utils/data/sampling.py) and --quad (YoloDataset.collate_fn4) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.data import dataset as ds
from utils.data.sampling import (
    WeightedImageSampler,
    image_weights,
    labels_to_class_weights,
    labels_to_image_weights,
)


def _labels(classes):
    return np.array([[c, 0.5, 0.5, 0.1, 0.1] for c in classes], dtype=np.float32).reshape(-1, 5)


def test_class_and_image_weights():
    labels = [_labels([0, 0, 0]), _labels([0, 1]), _labels([]), _labels([0])]
    cw = labels_to_class_weights(labels, nc=3)  # counts 5, 1, 0 (-> 1): inverse 0.2, 1, 1
    np.testing.assert_allclose(cw, np.array([0.2, 1, 1]) / 2.2)
    iw = labels_to_image_weights(labels, 3, cw)
    np.testing.assert_allclose(iw, np.array([0.6, 1.2, 0.0, 0.2]) / 2.2)
    # a class detected perfectly (mAP 1) no longer pulls its images up
    w = image_weights(labels, 3, maps=np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(w, np.array([0, 1, 0, 0]) / 2.2)


def test_sampler_follows_weights():
    s = WeightedImageSampler(4, seed=1)
    s.set_weights(np.array([0.0, 3.0, 1.0, 0.0]))
    draws = []
    for e in range(2000):
        s.set_epoch(e)
        draws += list(s)
    counts = np.bincount(draws, minlength=4) / len(draws)
    assert counts[0] == counts[3] == 0 and abs(counts[1] - 0.75) < 0.02  # 4 standard errors
    s.set_epoch(7)
    assert list(s) == list(s)  # the same epoch draws the same indices
    s.set_weights(np.zeros(4))  # no labelled image at all: uniform
    assert len(set(s)) > 1
    with pytest.raises(ValueError, match="4 finite non-negative"):
        s.set_weights(np.array([1.0, -1, 1, 1]))


def _item(value: int, box):
    im = torch.full((3, 8, 8), value, dtype=torch.uint8)
    lb = torch.tensor([[0.0, value, *box]])
    return im, lb, f"im{value}.jpg", None


BOX = (0.25, 0.25, 0.5, 0.5)


def test_quad_tiles_four(monkeypatch):
    monkeypatch.setattr(ds.random, "random", lambda: 0.9)  # the tiling branch
    batch = [_item(v, BOX) for v in (10, 20, 30, 40)]
    ims, labels, paths, _ = ds.YoloDataset.collate_fn4(batch)
    assert ims.shape == (1, 3, 16, 16) and ims.dtype == torch.uint8 and paths == ("im10.jpg",)
    assert ims[0, 0, 0, 0] == 10 and ims[0, 0, 15, 0] == 20 and ims[0, 0, 0, 15] == 30 and ims[0, 0, 15, 15] == 40
    want = torch.tensor([[0, 10, .125, .125, .25, .25], [0, 20, .125, .625, .25, .25],
                         [0, 30, .625, .125, .25, .25], [0, 40, .625, .625, .25, .25]])
    torch.testing.assert_close(labels, want)
    # each box lies over the pixels of its own image
    for row in labels:
        cx, cy = int(row[2] * 16), int(row[3] * 16)
        assert ims[0, 0, cy, cx] == row[1]


def test_quad_upsamples_one(monkeypatch):
    monkeypatch.setattr(ds.random, "random", lambda: 0.1)  # the 2x upsampling branch
    batch = [_item(v, BOX) for v in (10, 20, 30, 40, 50, 60, 70, 80)]
    ims, labels, paths, _ = ds.YoloDataset.collate_fn4(batch)
    assert ims.shape == (2, 3, 16, 16) and (ims[0] == 10).all() and (ims[1] == 50).all()
    torch.testing.assert_close(labels, torch.tensor([[0, 10, *BOX], [1, 50, *BOX]]))
    assert paths == ("im10.jpg", "im50.jpg")


def test_quad_batch_rules(tmp_path):
    with pytest.raises(ValueError, match="at least 4"):
        ds.YoloDataset.collate_fn4([_item(1, BOX)] * 3)
    with pytest.raises(ValueError, match="multiple of 4"):
        ds.create_dataloader(tmp_path, 64, 6, 32, quad=True)


def test_quad_on_a_dataset_smaller_than_4_says_the_batch_was_cut(tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), np.full((64, 64, 3), 40 * i, np.uint8))
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"holds only 2 image\(s\), so the batch size 4 was cut to 2") as e:
        ds.create_dataloader(tmp_path / "images", 64, 4, 32, quad=True)
    assert "without --quad" in str(e.value)
