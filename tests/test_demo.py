"""demo.py, the README's first command, in a reduced form: every step runs and every output it names exists."""

from __future__ import annotations

import cv2
import pytest

import demo
from utils.logging import LOGGER

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_runs_end_to_end_offline(tmp_path, monkeypatch):
    import logging

    lines = []
    h = logging.Handler()
    h.emit = lambda r: lines.append(r.getMessage())
    LOGGER.addHandler(h)
    try:
        res = demo.run(epochs=1, imgsz=64, n_train=4, n_val=2, batch_size=2, workers=0, plots=False,
                       project=tmp_path / "demo")
    finally:
        LOGGER.removeHandler(h)
    assert (res["data"] / "synthetic.yaml").is_file()
    assert res["weights"].is_file() and res["weights"].parent.parent == res["train"]
    assert (res["train"] / "results.csv").is_file()
    assert res["image"].is_file() and cv2.imread(str(res["image"])).shape == (64, 64, 3)
    assert (res["detect"] / res["image"].name).is_file() and res["labels"].is_file()
    assert res["objects"] >= 1
    summary = "\n".join(lines)
    for key in ("data", "train", "weights", "image", "labels"):
        assert str(res[key]) in summary, key  # the closing message says where each output is
    assert f"val mAP50 {res['map50']:.3f} after 1 epochs" in summary  # the mAP50 it reached
    assert len(res["confidences"]) == res["detections"] and f"({res['detections']} found, confidence" in summary
    assert demo.parse_opt([]).epochs == demo.DEMO_EPOCHS and demo.DEMO_CFG == "yolov5n_CBAM.yaml"
