"""heatmap.py: block maps and Grad-CAM overlays for CBAM and CA models on bus.jpg."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import heatmap
from models.transfer import load_pretrained
from models.yolo import DetectionModel
from utils.checkpoint import load_checkpoint, model_record, save_checkpoint


@pytest.fixture(scope="module")
def base_record(weights_n):
    return load_checkpoint(weights_n)["model"]


def _attention_checkpoint(cfg: str, record: dict, path) -> str:
    """yolov5n weights transferred into an attention config, its new block identity-started."""
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    load_pretrained(record, model, source="yolov5n.pt")
    model.names = list(record["names"])
    save_checkpoint({"model": model_record(model)}, path)
    return str(path)


@pytest.mark.parametrize(("cfg", "block", "maps"), [
    ("yolov5n_CBAM.yaml", "CBAM", {"spatial_gate"}),
    ("yolov5n_CA.yaml", "CA", {"hw_gates", "h_gate", "w_gate"}),
])
def test_overlays_for_attention_model(cfg, block, maps, base_record, bus, tmp_path):
    weights = _attention_checkpoint(cfg, base_record, tmp_path / "w.pt")
    written = heatmap.run(weights, bus, imgsz=320, project=tmp_path, name="hm")
    h0, w0 = cv2.imread(str(bus)).shape[:2]
    names = {p.name for p in written}
    expected = {f"bus_L9_{block}_{m}.png" for m in maps | {"gradcam"}}
    assert names == expected
    for path, values in written.items():
        assert path.parent == tmp_path / "hm" and path.is_file()
        png = cv2.imread(str(path))
        assert png.shape == (h0, w0, 3), path.name
        assert values.shape == (h0, w0), path.name
        # an untrained (identity-started) block's gates sit near 0.5, but they are not constant
        assert float(values.max() - values.min()) > 1e-5, f"{path.name}: constant map"
        if "gate" in path.name:
            assert 0 < values.min() and values.max() < 1
    # the 1-D gates of CA vary along one axis only
    if block == "CA":
        hg = written[tmp_path / "hm" / "bus_L9_CA_h_gate.png"]
        wg = written[tmp_path / "hm" / "bus_L9_CA_w_gate.png"]
        assert hg[:, 0].std() > 0 and abs(hg[:, w0 // 4] - hg[:, 3 * w0 // 4]).max() < 1e-5
        assert wg[0].std() > 0 and abs(wg[h0 // 4] - wg[3 * h0 // 4]).max() < 1e-5


def test_gradcam_is_strongest_on_the_explained_detection(base_record, bus, tmp_path, capsys):
    weights = _attention_checkpoint("yolov5n_CBAM.yaml", base_record, tmp_path / "w.pt")
    # at 640 yolov5n's fifth detection on bus.jpg is the bus (the block starts as identity,
    # so the detections are yolov5n's own)
    written = heatmap.run(weights, bus, imgsz=640, det=4, project=tmp_path, name="hm")
    assert "explaining detection 4: bus" in capsys.readouterr().err
    cam = written[tmp_path / "hm" / "bus_L9_CBAM_gradcam.png"]
    inside = np.zeros(cam.shape, bool)
    inside[230:780, 20:805] = True  # the bus, in original-image pixels
    assert cam[inside].mean() > 1.5 * cam[~inside].mean()


def test_model_without_attention_is_a_clear_error(weights_n, bus, tmp_path, capsys):
    code = heatmap.main(["--weights", str(weights_n), "--source", str(bus), "--project", str(tmp_path)])
    assert code == 2
    assert "no attention layers" in capsys.readouterr().err


def test_unreadable_image_is_named(base_record, tmp_path, capsys):
    weights = _attention_checkpoint("yolov5n_CBAM.yaml", base_record, tmp_path / "w.pt")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert heatmap.main(["--weights", weights, "--source", str(bad), "--project", str(tmp_path)]) == 2
    assert "broken.jpg: not a readable image" in capsys.readouterr().err
