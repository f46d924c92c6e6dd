"""Calibrated insertion of attention blocks (AttentionBlock.calibrate, models.transfer.calibrate_new_blocks):
the output scale that keeps the pretrained network's feature size when a new block's gate opens."""

from __future__ import annotations

import pytest
import torch

from models.attention import CBAM, GAM, SE
from models.checkpoint import load_checkpoint, model_from_record, model_record, weights_misfit
from models.transfer import calibrate_new_blocks, load_pretrained
from models.yolo import DetectionModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(c: int = 32, seed: int = 0) -> torch.Tensor:
    """SiLU features of uneven size per channel, like a pretrained layer's."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, c, 12, 10, generator=g) * torch.linspace(0.2, 5, c).view(1, -1, 1, 1) + 0.5
    return torch.nn.functional.silu(x)


@pytest.mark.parametrize("block", [CBAM, SE, GAM])
def test_calibrated_block_keeps_each_channels_size_and_gate0_is_exact(block):
    torch.manual_seed(0)
    m = block(32).identity_start()
    x = _features()
    raw = m.attend(x).pow(2).mean((0, 2, 3)).sqrt() / x.pow(2).mean((0, 2, 3)).sqrt()
    assert raw.mean() < 0.8 or raw.mean() > 1.25  # the problem: a fresh block changes the feature size
    m.calibrate(x)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), x)  # gate 0: still the identity, bit for bit
        m.gate.fill_(1)
        y = m(x)
    ratio = y.pow(2).mean((0, 2, 3)).sqrt() / x.pow(2).mean((0, 2, 3)).sqrt()
    torch.testing.assert_close(ratio, torch.ones(32), rtol=1e-4, atol=0)
    assert m.training is False and m.gate.item() == 1


def test_calibration_gives_batch_norms_the_batch_statistics():
    """GAM's batch norms: fresh (mean 0, var 1) they are unrelated to the input; after calibration
    the eval-mode block computes what the train-mode block does on that batch."""
    torch.manual_seed(0)
    m = GAM(32).identity_start()
    x = _features()
    m.calibrate(x)
    with torch.no_grad():
        m.eval()
        ev = m.attend(x)
        m.train()
        tr = m.attend(x)
    torch.testing.assert_close(ev, tr, rtol=1e-2, atol=1e-3)  # biased vs unbiased variance: ~1/N apart
    assert all(bn.momentum == 0.03 for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm2d))  # restored


def test_bad_calibration_input_is_refused():
    m = SE(32)
    with pytest.raises(ValueError, match=r"SE.calibrate needs a finite \(B, C, H, W\) input"):
        m.calibrate(torch.full((2, 32, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"calibration images must be a \(B, 3, H, W\) batch"):
        calibrate_new_blocks(DetectionModel("yolov5n_SE.yaml"), ["model.9"], torch.zeros(3, 64, 64))
    with pytest.raises(KeyError, match="model.99"):
        calibrate_new_blocks(DetectionModel("yolov5n_SE.yaml"), ["model.99"], torch.zeros(1, 3, 64, 64))


def test_c3cbam_step0_exact_scale_survives_checkpoint_and_fuse(weights_n):
    """yolov5n.pt into yolov5n_C3CBAM (7 new blocks), calibrated: the gate-0 model is still yolov5n.pt
    exactly; the scales travel through a checkpoint record (and load into a fresh model), a state dict
    without them gives the paper's blocks, and fusing keeps the gate-1 outputs."""
    record = load_checkpoint(weights_n)["model"]
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 128)
    base = model_from_record(record).eval()
    m = DetectionModel("yolov5n_C3CBAM.yaml")
    res = load_pretrained(record, m, source="yolov5n.pt")
    assert len(res.identity) == 7
    scales = calibrate_new_blocks(m, res.identity, images)
    assert set(scales) == set(res.identity) and m.training  # the mode is restored
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(images)[0], base(images)[0])  # step 0: the pretrained network, bit for bit
        for b in res.identity:
            m.get_submodule(b).gate.fill_(1)
        opened = m(images)[0]
    rec = model_record(m)
    assert all(torch.equal(rec["state_dict"][f"{b}.out_scale"], scales[b]) for b in res.identity)
    assert weights_misfit(DetectionModel("yolov5n_C3CBAM.yaml"), rec["state_dict"]) is None
    again = model_from_record(rec).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(images)[0], opened)
        again.fuse()
        torch.testing.assert_close(again(images)[0], opened, rtol=1e-4, atol=1e-3)
    sd = {k: v for k, v in rec["state_dict"].items() if not k.endswith("out_scale")}  # e.g. another fork's file
    plain = model_from_record({**rec, "state_dict": sd})
    assert all(plain.get_submodule(b).out_scale is None for b in res.identity)


@pytest.mark.slow
def test_forced_open_keeps_the_pretrained_map(weights_n, coco128):
    """yolov5n.pt into a config, calibrated on 32 coco128 images, every new gate forced to 1 without
    training: coco128 mAP50-95 at 320 within 0.02 of yolov5n.pt's for CBAM and SE before SPPF (raw:
    CBAM 0.09-0.11 against 0.290). C3CBAM's seven stacked blocks stay further off (0.22, raw 0.000):
    the bound there only holds the gain (benchmarks/forced_open.py has every block)."""
    import val
    from utils.data.dataset import create_dataloader
    from utils.data.dataset_config import check_dataset

    record = load_checkpoint(weights_n)["model"]
    data = check_dataset("coco128.yaml")
    loader, dataset = create_dataloader(data["val"], 320, 32, 32, pad=0.5, rect=True, workers=0, nc=80)
    images = dataset.calibration_batch(32, 320)

    def m_ap(model) -> float:
        model.names = record["names"]
        return val.run(data, model=model.eval(), dataloader=loader, imgsz=320, plots=False)[0][3]

    base = m_ap(model_from_record(record))
    assert base > 0.25
    for cfg, tol in (("yolov5n_CBAM.yaml", 0.02), ("yolov5n_SE.yaml", 0.02), ("yolov5n_C3CBAM.yaml", 0.12)):
        torch.manual_seed(0)
        m = DetectionModel(cfg)
        res = load_pretrained(record, m, source="yolov5n.pt")
        calibrate_new_blocks(m, res.identity, images)
        for b in res.identity:
            m.get_submodule(b).gate.data.fill_(1)
        assert m_ap(m) >= base - tol, cfg


@pytest.mark.filterwarnings("ignore")  # tracer warnings
def test_calibrated_block_exports_to_onnx():
    """The output scale is part of the exported graph: onnxruntime gives the calibrated block's output."""
    import io

    import onnxruntime as ort

    torch.manual_seed(0)
    m = CBAM(32)
    m.calibrate(_features())
    m.eval()
    x = _features(seed=1)[:1]
    f = io.BytesIO()
    torch.onnx.export(m, (x,), f, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"])
    y = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y), m(x), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(m(x), m.attend(x), rtol=1e-2)  # the scale matters here
