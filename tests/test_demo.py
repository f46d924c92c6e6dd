"""demo.py, the README's first command, in a reduced form: every step runs and every output it names exists."""

from __future__ import annotations

import cv2
import pytest

import demo
from data.synthetic import CLASSES, SIZE_RANGE, example_image
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
    assert len(res["confidences"]) == len(res["classes"]) == res["detections"]
    said = ", ".join(f"{k} {c:.2f}" for k, c in zip(res["classes"], res["confidences"])) or "none"
    assert f"({res['detections']} found: {said})" in summary  # each detection's class and confidence
    assert set(res["classes"]) <= set(CLASSES) and res["confidences"] == sorted(res["confidences"], reverse=True)
    assert demo.parse_opt([]).epochs == demo.DEMO_EPOCHS and demo.DEMO_CFG == "yolov5n_CBAM.yaml"
    # the suggested next command repeats the demo's settings (without --img 64 it drew 12 false triangles)
    import shlex

    import detect

    cmd = shlex.split(next(ln for ln in summary.splitlines() if "python detect.py" in ln))
    opt = detect.parse_opt(cmd[2:])
    assert opt.imgsz in (64, [64], [64, 64]) and opt.conf_thres == demo.DEMO_CONF and opt.agnostic_nms



@pytest.mark.parametrize("imgsz", [64, 160, 320])
def test_demo_image_is_typical(imgsz):
    """The demo's test picture shows every class, each shape of a middle size (not in the smallest
    or largest quarter of the dataset's range), and is the same on every run."""
    img, objects = example_image(imgsz)
    img2, objects2 = example_image(imgsz)
    assert img.shape == (imgsz, imgsz, 3) and (img == img2).all() and len(objects) == len(objects2)
    assert 3 <= len(objects) <= 6 and {c for c, _ in objects} == set(range(len(CLASSES)))
    q = (SIZE_RANGE[1] - SIZE_RANGE[0]) / 4
    for _, b in objects:
        assert SIZE_RANGE[0] + q <= max(b[2] - b[0], b[3] - b[1]) / imgsz <= SIZE_RANGE[1] - q


def test_demo_image_none_typical_is_an_error():
    with pytest.raises(RuntimeError, match=r"no image with every class at a middle size in 1 candidates"):
        example_image(160, tries=1)  # candidate 0 at 160 px is not typical
