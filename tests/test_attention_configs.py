"""Attention configs: every generated YAML builds, runs, trains one step; head indices stay right.

Regular run: every config at 256x416 (inference) plus one training step at 2x3x128x160, and a
few configs at 640. `pytest -m slow` runs every config at 640.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models.attention import AttentionBlock
from models.attention.make_configs import OUT, block_names, configs
from models.yolo import DetectionModel, main
from utils.loss import ComputeLoss

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(configs())
BASELINE_S = 7_235_389
HYP = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_generated_configs_are_up_to_date():
    from models.attention.make_configs import main as make

    assert make(["--check"]) == 0, "run `python models/attention/make_configs.py` and commit the result"
    assert len(CONFIGS) == 3 * len(block_names())  # before SPPF, in C3, in place of C3
    assert len(block_names()) >= 24


@pytest.mark.parametrize("name", ["CBAM", "CC", "SimAM"])
def test_layer_layout(name):
    """Before SPPF: block at 9, SPPF at 10, head froms shifted, Detect on 18/21/24; C3 form keeps indices."""
    d = yaml.safe_load((OUT / f"yolov5s_{name}.yaml").read_text())
    base = yaml.safe_load((ROOT / "models" / "yolov5s.yaml").read_text())
    assert d["backbone"][9] == [-1, 1, name, []]
    assert d["backbone"][10][2] == "SPPF"
    assert d["head"][-1][0] == [18, 21, 24]
    assert [r[0] for r in d["head"]] == [-1, -1, [-1, 6], -1, -1, -1, [-1, 4], -1, -1, [-1, 15], -1, -1,
                                          [-1, 11], -1, [18, 21, 24]]
    c3 = yaml.safe_load((OUT / f"yolov5s_C3{name}.yaml").read_text())
    assert [r[2] for r in c3["backbone"]] == [f"C3{name}" if r[2] == "C3" else r[2] for r in base["backbone"]]
    assert c3["head"] == base["head"]


def test_before_sppf_adds_exactly_the_block():
    """Only the block is new: parameters = yolov5s + block(512), and the block sees the width of layer 8."""
    from models.attention import CBAM, CC

    for name, cls in (("CBAM", CBAM), ("CC", CC)):
        model = DetectionModel(f"yolov5s_{name}.yaml")
        assert isinstance(model.model[9], cls)
        assert n_params(model) == BASELINE_S + n_params(cls(512))


def test_c3_form_keeps_c3_parameter_names():
    """A yolov5s state dict loads into yolov5s_C3CBAM by name; only `attn` entries are new."""
    base = DetectionModel("yolov5s.yaml").state_dict()
    model = DetectionModel("yolov5s_C3CBAM.yaml")
    missing, unexpected = model.load_state_dict(base, strict=False)
    assert not unexpected
    assert missing and all(".attn." in k for k in missing)
    assert "model.2.m.0.attn.gate" not in missing  # absent gates load as 1 (the paper form)
    torch.testing.assert_close(model.state_dict()["model.2.m.0.cv1.conv.weight"], base["model.2.m.0.cv1.conv.weight"])


def test_replace_form_and_scale_letters():
    model = DetectionModel("yolov5s_CBAM-replace.yaml")
    kinds = [type(model.model[i]).__name__ for i in (2, 4, 6, 8)]
    assert kinds == ["CBAM"] * 4
    n, s = DetectionModel("yolov5n_CBAM.yaml"), DetectionModel("yolov5s_CBAM.yaml")
    assert n.model[9].spatial.in_channels == 2
    assert n.model[9].mlp[0].in_channels == 256 and s.model[9].mlp[0].in_channels == 512


def _train_step(model: DetectionModel) -> tuple[float, dict[str, list[torch.Tensor]]]:
    """Forward + backward on a tiny batch with the project loss; returns the loss and the
    gradients of each attention block's parameters."""
    model.train()
    model.hyp = HYP
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 128, 160)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 5, 0.3, 0.6, 0.2, 0.2], [1, 0, 0.7, 0.3, 0.5, 0.5]])
    loss, _ = ComputeLoss(model)(model(imgs), targets)
    loss.backward()
    grads = {name: [p.grad if p.grad is not None else torch.zeros_like(p) for p in m.parameters()]
             for name, m in model.named_modules() if isinstance(m, AttentionBlock)}
    return loss.item(), grads


@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_builds_runs_and_trains(cfg, log_warnings):
    model = DetectionModel(cfg)
    assert log_warnings == []  # the graph check (models/graph_check.py) finds nothing to say
    assert n_params(model) > BASELINE_S * 0.7
    blocks = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    assert blocks
    model.eval()
    with torch.no_grad():
        y, raw = model(torch.rand(1, 3, 256, 416))
    assert y.shape == (1, 3 * (32 * 52 + 16 * 26 + 8 * 13), 85) and torch.isfinite(y).all()

    loss, grads = _train_step(model)
    assert math.isfinite(loss) and loss > 0
    assert all(torch.isfinite(g).all() for gs in grads.values() for g in gs)
    # every block learns from the first step (which of its parameters does depends on the
    # paper's init: zero-init residual scales first, dead ReLUs in tiny hidden layers never)
    dead = [name for name, gs in grads.items() if not any(g.abs().sum() > 0 for g in gs)]
    assert not dead, f"no gradient reaches {dead}"


# global attention at stride 4 (N = 160*160 positions): seconds to tens of seconds per image at 640
SLOW_640 = {f"yolov5s_{form}.yaml" for b in ("MHSA", "DA", "NonLocal") for form in (f"C3{b}", f"{b}-replace")}


def _runs_at_640(cfg: str) -> None:
    model = DetectionModel(cfg).eval()
    with torch.no_grad():
        y, _ = model(torch.rand(1, 3, 640, 640))
    assert y.shape == (1, 25200, 85) and torch.isfinite(y).all()


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c not in SLOW_640])
def test_config_runs_at_640(cfg):
    _runs_at_640(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", sorted(SLOW_640))
def test_global_attention_configs_run_at_640(cfg):
    _runs_at_640(cfg)


def test_yolo_summary_counts_attention_flops(capsys):
    """The summary of `models/yolo.py` counts CC's attention products, which thop misses."""
    from utils.torch_utils import thop_flops

    main(["--cfg", "yolov5s_CC.yaml", "--imgsz", "256"])
    captured = capsys.readouterr()
    summary = [line for line in (captured.out + captured.err).splitlines() if "summary" in line]
    assert summary and "7,563,711 parameters" in summary[-1] and "GFLOPs" in summary[-1]
    model = DetectionModel("yolov5s_CC.yaml")
    assert model.info(img_size=256)["gflops"] > thop_flops(model, 256)


def test_yolo_script_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "models/yolo.py", "--cfg", "yolov5s_CBAM.yaml"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "CBAM" in text and "yolov5s_CBAM summary" in text and "7,268,256 parameters" in text


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("cfg", ["yolov5s_CBAM.yaml", "yolov5s_C3CC.yaml", "yolov5s_MHSA.yaml", "yolov5s_C3SOCA.yaml"])
def test_whole_model_onnx_export(cfg):
    import io

    import onnxruntime as ort
    model = DetectionModel(cfg).eval().fuse()
    x = torch.rand(1, 3, 160, 224)
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, opset_version=17, dynamo=False, input_names=["images"], output_names=["y"])
    y = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), model(x)[0], rtol=1e-4, atol=1e-3)
