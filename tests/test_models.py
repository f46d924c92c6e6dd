"""Standard YOLOv5 models built from YAML: exact parameter counts, GFLOPs, shapes, clear config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.yolo import Detect, DetectionModel, ModelConfigError, resolve_cfg
from utils.torch_utils import count_flops, thop_flops

MODELS = Path(__file__).resolve().parents[1] / "models"

UPSTREAM_PARAMS = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557, "l": 46_563_709, "x": 86_749_405}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("scale", list(UPSTREAM_PARAMS))
def test_parameter_counts_match_upstream(scale):
    assert n_params(DetectionModel(f"yolov5{scale}.yaml")) == UPSTREAM_PARAMS[scale]


@pytest.mark.parametrize("scale,fused,gflops", [("n", 1_867_405, 4.6), ("s", 7_225_885, 16.6)])
def test_fused_params_and_gflops(scale, fused, gflops):
    model = DetectionModel(f"yolov5{scale}.yaml")
    info = model.info()
    assert round(info["gflops"], 1) == gflops
    assert info["parameters"] == UPSTREAM_PARAMS[scale] == info["gradients"]
    model.eval()
    x = torch.rand(1, 3, 128, 160)
    before = model(x)[0]
    model.fuse()
    assert n_params(model) == fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x)[0], before, rtol=1e-4, atol=1e-3)


def test_gflops_for_plain_convs_equal_thop():
    """No attention products in the baseline: the count is thop's, to the last FLOP."""
    model = DetectionModel("yolov5n.yaml")
    assert count_flops(model, 320) == pytest.approx(thop_flops(model, 320), rel=1e-12)


@pytest.mark.parametrize("cfg", sorted(p.name for p in MODELS.glob("*.yaml")))
def test_every_top_level_yaml_builds_and_runs(cfg, log_warnings):
    model = DetectionModel(cfg).eval()
    assert log_warnings == []  # the graph check (models/graph_check.py) finds nothing to say
    head = model.model[-1]
    assert isinstance(head, Detect)
    assert head.stride.tolist() == [8.0, 16.0, 32.0]
    sizes = [(256, 416), (320, 320)] + [(640, 640)] * cfg.startswith(("yolov5n", "yolov5s"))  # m/l/x: CI time
    with torch.no_grad():
        for h, w in sizes:
            y, raw = model(torch.zeros(1, 3, h, w))
            cells = sum((h // s) * (w // s) for s in (8, 16, 32))
            assert y.shape == (1, 3 * cells, 85)
            assert [r.shape[2:4] for r in raw] == [(h // s, w // s) for s in (8, 16, 32)]


def test_scale_letter_in_name_selects_multiples():
    from models.yolo import load_cfg

    d = load_cfg("yolov5n.yaml")
    assert (d["depth_multiple"], d["width_multiple"]) == (0.33, 0.25)


def test_nc_override_and_anchor_units():
    model = DetectionModel("yolov5s.yaml", nc=3)
    head = model.model[-1]
    assert head.nc == 3 and head.m[0].out_channels == 3 * 8
    # anchors are kept in stride units, as official checkpoints store them
    torch.testing.assert_close(head.anchors[0, 0], torch.tensor([10 / 8, 13 / 8]))
    torch.testing.assert_close(head.anchors[2, 2], torch.tensor([373 / 32, 326 / 32]))


def _write(tmp_path, text: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_module_is_named(tmp_path):
    text = (MODELS / "yolov5n.yaml").read_text().replace("[-1, 3, C3, [128]]", "[-1, 3, C4, [128]]")
    with pytest.raises(ModelConfigError, match=r"bad.yaml: layer 2 \(C4\): unknown module 'C4'.*C3"):
        DetectionModel(_write(tmp_path, text))


def test_bad_from_index_is_named(tmp_path):
    text = (MODELS / "yolov5n.yaml").read_text().replace("[[-1, 6], 1, Concat, [1]]", "[[-1, 16], 1, Concat, [1]]")
    with pytest.raises(ModelConfigError, match=r"bad.yaml: layer 12 \(Concat\): 'from' index 16"):
        DetectionModel(_write(tmp_path, text))


def test_missing_key_is_named(tmp_path):
    text = (MODELS / "yolov5n.yaml").read_text().split("head:")[0]
    with pytest.raises(ModelConfigError, match=r"bad.yaml: missing key 'head'"):
        DetectionModel(_write(tmp_path, text))


def test_wrong_argument_is_named(tmp_path):
    text = (MODELS / "yolov5n.yaml").read_text().replace("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, SPPF, [1024, 5, 7, 9]]")
    with pytest.raises(ModelConfigError, match=r"bad.yaml: layer 9 \(SPPF\): cannot build SPPF"):
        DetectionModel(_write(tmp_path, text))


def test_channel_or_shape_mismatch_is_named(tmp_path):
    # concatenating a stride-16 map with a stride-32 one cannot work: the failing layer is named
    text = (MODELS / "yolov5n.yaml").read_text().replace("[[-1, 6], 1, Concat, [1]]", "[[-1, 8], 1, Concat, [1]]")
    with pytest.raises(ModelConfigError, match=r"bad.yaml: layer 12 \(Concat\) fails on input"):
        DetectionModel(_write(tmp_path, text))


def test_yaml_activation_applies_to_that_model_only(tmp_path):
    from torch import nn

    text = "activation: nn.LeakyReLU(0.1)\n" + (MODELS / "yolov5n.yaml").read_text()
    relu_model = DetectionModel(_write(tmp_path, text))
    acts = {type(m.act) for m in relu_model.modules() if hasattr(m, "act") and hasattr(m, "bn")}
    assert acts == {nn.LeakyReLU}
    plain = DetectionModel(MODELS / "yolov5n.yaml")  # built afterwards: SiLU again
    assert {type(m.act) for m in plain.modules() if hasattr(m, "act") and hasattr(m, "bn")} == {nn.SiLU}


def test_bad_activation_is_named(tmp_path):
    text = "activation: os.system('true')\n" + (MODELS / "yolov5n.yaml").read_text()
    with pytest.raises(ModelConfigError, match=r"bad.yaml: activation"):
        DetectionModel(_write(tmp_path, text))


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="not_a_model.yaml"):
        resolve_cfg("not_a_model.yaml")


@pytest.mark.parametrize("name", ["best.pt", "best.onnx", "best.torchscript", "best.xml", "best_openvino_model",
                                  "yolov5n_NonLocal.onnx", "yolov5n_NonLocal_openvino_model/"])
def test_model_file_is_no_config(name, tmp_path):
    """issue 14 QA: resolve_cfg swapped the suffix for .yaml, so `yolov5n_NonLocal.onnx` built the
    shipped yolov5n_NonLocal.yaml (ignoring the file) and `best.onnx` looked for best.yaml."""
    f = tmp_path / name
    f.mkdir() if name.rstrip("/").endswith("_openvino_model") else f.write_bytes(b"model")
    for cfg in (str(f), name):  # existing or not
        with pytest.raises(ModelConfigError, match=r"is a model file .*not a model YAML.*--cfg.*--weights") as e:
            DetectionModel(cfg)
        assert cfg in str(e.value) and ".yaml" not in str(e.value)


def test_config_of_another_suffix_is_not_swapped_for_a_yaml(tmp_path):
    (tmp_path / "yolov5n.json").write_text("{}")
    (tmp_path / "yolov5n.yaml").write_text((MODELS / "yolov5n.yaml").read_text())
    with pytest.raises(ModelConfigError, match=r"yolov5n.json' is not a YAML file"):
        resolve_cfg(tmp_path / "yolov5n.json")
    assert resolve_cfg(tmp_path / "yolov5n") == tmp_path / "yolov5n.yaml"  # no suffix: .yaml added


def test_model_summary_cli(capsys):
    from models.yolo import main

    main(["--cfg", "yolov5n.yaml"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "1,872,157 parameters" in text and "4.6 GFLOPs" in text
