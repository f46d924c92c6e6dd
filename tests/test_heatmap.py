"""heatmap.py: block maps and Grad-CAM overlays for CBAM and CA models on bus.jpg."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch

import heatmap
from models.checkpoint import load_checkpoint, model_record, save_checkpoint
from models.transfer import load_pretrained
from models.yolo import DetectionModel


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
def test_overlays_for_attention_model(cfg, block, maps, base_record, bus, tmp_path, monkeypatch):
    weights = _attention_checkpoint(cfg, base_record, tmp_path / "w.pt")
    labels = []

    class Spy(heatmap.Annotator):
        def box_label(self, box, label="", *a, **k):
            labels.append(label)
            super().box_label(box, label, *a, **k)

    monkeypatch.setattr(heatmap, "Annotator", Spy)
    written = heatmap.run(weights, bus, imgsz=320, project=tmp_path, name="hm")
    assert labels and all(re.fullmatch(r"\w[\w ]* 0\.\d\d", lb) for lb in labels), labels  # Grad-CAM: class and score
    h0, w0 = cv2.imread(str(bus)).shape[:2]
    names = {p.name for p in written}
    expected = {f"bus_L9_{block}_{m}.png" for m in maps | {"gradcam"}}
    assert names == expected
    for path, values in written.items():
        assert path.parent == tmp_path / "hm" and path.is_file()
        png = cv2.imread(str(path))
        assert png.shape[0] == h0 and png.shape[1] > w0, path.name  # the image, then its colour bar
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


# ------------------------------------------------------------------ issue 13
def test_missing_image_says_not_found(base_record, tmp_path, capsys):
    weights = _attention_checkpoint("yolov5n_CBAM.yaml", base_record, tmp_path / "w.pt")
    assert heatmap.main(["--weights", weights, "--source", str(tmp_path / "missing.jpg"), "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing.jpg" in err and "not a readable image" not in err


def test_overlay_keeps_the_value_scale_and_shows_a_colour_bar():
    from models.heatmaps import overlay, value_range

    img = np.full((120, 160, 3), 128, np.uint8)
    ramp = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (120, 1))
    flat = 0.49 + 0.02 * ramp  # a nearly flat gate
    strong = ramp  # a gate that really selects
    out_flat = overlay(img, flat, value_range("spatial_gate", flat)).astype(int)
    out_strong = overlay(img, strong, value_range("spatial_gate", strong)).astype(int)
    assert out_flat.shape[:2] == (120, 160 + (out_flat.shape[1] - 160)) and out_flat.shape[1] > 160
    # the flat gate stays (nearly) one colour on the fixed 0-1 scale; min-max normalising would stretch it
    spread = lambda o: np.abs(o[:, 150, :] - o[:, 10, :]).max()  # noqa: E731
    assert spread(out_flat[:, :160]) < 15 < spread(out_strong[:, :160])
    assert value_range("effect", np.array([[0.5, 2.0]])) == (0.0, 2.0)
    bar = out_strong[:, 160:]
    col = 8  # inside the colour strip: red (JET high) at the top, blue (JET low) at the bottom
    top, bottom = bar[15, col], bar[-15, col]
    assert top[2] > 100 and top[0] < 100 and bottom[0] > 100 and bottom[2] < 100
    assert (bar == 0).all(-1).any()  # black tick labels / range marks are drawn
