"""detect.py --save-csv, --visualize and --data on bus.jpg (yolov5n, 320 px)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import yaml

import detect
from utils.feature_maps import TILE_MIN, feature_grid

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = dict(imgsz=320, device="cpu", nosave=True)


@pytest.fixture(scope="module")
def flagged_run(weights_n, bus, tmp_path_factory):
    project = tmp_path_factory.mktemp("detect_flags")
    return detect.run(weights=weights_n, source=bus, project=project, save_csv=True, visualize=True, **RUN)


def test_save_csv(flagged_run):
    save_dir, dets = flagged_run
    det = next(iter(dets.values()))
    with open(save_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Image Name", "Prediction", "Confidence"]
    assert len(rows) == len(det) > 0
    assert {r["Image Name"] for r in rows} == {"bus.jpg"}
    assert [r["Prediction"] for r in rows] == [["person", "bus"][int(c == 5)] for c in det[:, 5].tolist()]
    assert [r["Confidence"] for r in rows] == [f"{c:.2f}" for c in det[:, 4].tolist()]


def test_visualize_every_stage(flagged_run):
    save_dir, _ = flagged_run
    d = save_dir / "bus"
    pngs = sorted(d.glob("stage*_features.png"))
    assert len(pngs) == 24  # yolov5n: layers 0-23; the Detect head (24) is skipped
    assert (d / "stage0_Conv_features.png").is_file() and (d / "stage23_C3_features.png").is_file()
    assert not list(d.glob("stage24_*"))
    f0 = np.load(d / "stage0_Conv_features.npy")
    assert f0.shape == (16, 160, 128) and f0.dtype == np.float32  # 320x256 input, stride 2, 16 channels
    assert np.load(d / "stage9_SPPF_features.npy").shape == (256, 10, 8)
    grid = cv2.imread(str(d / "stage9_SPPF_features.png"))
    k = int(np.ceil(TILE_MIN / 8))  # 10x8 maps upscaled to at least 64 px
    assert grid.shape[:2] == (4 * (10 * k + 2) - 2, 8 * (8 * k + 2) - 2)  # 32 channels, 8 per row


def test_feature_grid_few_channels():
    fmap = np.stack([np.full((4, 4), v, np.float32) for v in (0, 1, 2)])
    fmap[1, 0, 0] = 5  # one bright pixel
    g = feature_grid(fmap)
    assert g.shape == (64, 3 * 64 + 2 * 2, 3)
    assert (g[:, 64:66] == 255).all()  # white gaps between tiles
    assert not np.array_equal(g[0, 66], g[20, 66])  # the bright pixel's tile is not flat


def _data_yaml(path, names):
    path.write_text(yaml.safe_dump({"path": str(path.parent), "train": "images", "val": "images", "names": names}))
    return path


def test_data_names(weights_n, bus, tmp_path):
    names = {i: f"thing{i}" for i in range(80)}
    data = _data_yaml(tmp_path / "renamed.yaml", names)
    save_dir, dets = detect.run(weights=weights_n, source=bus, project=tmp_path, save_csv=True, data=str(data), **RUN)
    with open(save_dir / "predictions.csv", newline="") as f:
        got = {r["Prediction"] for r in csv.DictReader(f)}
    assert got == {"thing0", "thing5"}
    bad = _data_yaml(tmp_path / "three.yaml", ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 class names, but the model has 80"):
        detect.run(weights=weights_n, source=bus, project=tmp_path, data=str(bad), **RUN)
    assert detect.main(["--weights", str(weights_n), "--source", str(bus), "--data", str(tmp_path / "none.yaml"),
                        "--project", str(tmp_path), "--nosave"]) == 2


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_line_thickness_must_be_positive(bad, capsys):
    """-1 drew filled boxes over the objects, 0 silently meant automatic."""
    import detect

    with pytest.raises(SystemExit):
        detect.parse_opt(["--line-thickness", bad])
    assert "--line-thickness" in capsys.readouterr().err
