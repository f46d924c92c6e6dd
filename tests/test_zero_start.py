"""Zero start (AttentionBlock.zero_start, hyp gate_zero_start): a new block's last layer starts at 0,
so that after calibration it is the identity at every gate value and learns from there."""

from __future__ import annotations

import pytest
import torch

from models.attention import CBAM
from models.attention._base import AttentionBlock
from models.checkpoint import load_checkpoint, model_from_record
from models.gates import gate_hyp
from models.registry import BLOCKS
from models.transfer import calibrate_new_blocks, load_pretrained, zero_start_new_blocks
from models.yolo import DetectionModel

pytestmark = pytest.mark.usefixtures("one_thread")

# blocks with no layer to zero: their own weights cannot make f(x) a multiple of x (SGE's map is
# constant at its paper's init, but only up to a per-group scale); they get the residual form
RESIDUAL_FORM = {"SK", "CoT", "MHSA", "ShuffleAttention", "SimAM", "NAM", "SGE"}
ATTENTION = sorted({s.cls.__name__: s.cls for s in BLOCKS.values()
                    if s.attention and issubclass(s.cls, AttentionBlock)}.items())


def _features(c: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, c, 12, 10, generator=g) * torch.linspace(0.2, 5, c).view(1, -1, 1, 1) + 0.5
    return torch.nn.functional.silu(x)


@pytest.mark.parametrize("name, cls", ATTENTION, ids=[n for n, _ in ATTENTION])
def test_zero_started_block_is_the_identity_at_full_gate(name, cls):
    torch.manual_seed(0)
    block = cls(64).identity_start()
    x = _features()
    assert block.zero_start() is True
    assert (block.residual_scale is not None) is (name in RESIDUAL_FORM), "zero layers or the residual form"
    block.calibrate(x)
    block.eval()
    with torch.no_grad():
        block.gate.fill_(1.0)
        err = float((block(x) - x).abs().max() / x.abs().max())
    assert err < 1e-5, f"{name}: f(x) differs from x by {err:.1e} at gate 1"


@pytest.mark.parametrize("cls_name", ["SK", "ShuffleAttention", "SimAM"])
def test_residual_form_learns_its_scale_then_its_weights(cls_name):
    """x + gate * a * f(x), a = 0: a gets gradient at once; the block's weights once a has moved."""
    from models import attention

    torch.manual_seed(0)
    block = getattr(attention, cls_name)(32).identity_start()
    block.zero_start()
    x = _features(32)
    block.calibrate(x)
    block.gate.data.fill_(0.3)  # part-way through the fade
    target = torch.randn_like(x)
    (block(x) * target).sum().backward()
    assert block.residual_scale.grad.abs().item() > 0
    weights = [p for n, p in block.named_parameters() if n not in ("gate", "residual_scale")]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in weights)  # behind a = 0
    block.zero_grad()
    block.residual_scale.data.fill_(0.1)
    (block(x) * target).sum().backward()
    assert not weights or any(float(p.grad.abs().sum()) > 0 for p in weights if p.grad is not None)
    assert block.opening() == pytest.approx(0.3)  # the gate, as for zeroed layers


def test_residual_form_travels_in_the_state_dict():
    """A zero-started SK loads into a freshly built one (which takes the form); a paper-form state
    dict loaded into a residual-form block gives the paper's block back."""
    from models.attention import SK
    from models.checkpoint import weights_misfit

    torch.manual_seed(0)
    block = SK(32).identity_start()
    block.zero_start()
    block.residual_scale.data.fill_(0.25)
    block.gate.data.fill_(1.0)
    x = _features(32)
    fresh = SK(32)
    assert fresh.residual_scale is None
    fresh.load_state_dict(block.state_dict())
    assert isinstance(fresh.residual_scale, torch.nn.Parameter) and fresh.residual_scale.item() == 0.25
    block.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), block(x))
        assert not torch.allclose(fresh(x), SK(32).eval()(x))
    paper = SK(32).state_dict()
    block.load_state_dict(paper)
    assert block.residual_scale is None
    wrapper = torch.nn.Sequential(SK(32))
    assert weights_misfit(wrapper, {f"0.{k}": v for k, v in fresh.state_dict().items()}) is None


def test_zeroed_layers_learn_once_the_gate_opens():
    torch.manual_seed(0)
    block = CBAM(32).identity_start()
    block.zero_start()
    x = _features(32).requires_grad_()
    block.calibrate(x.detach())
    block.gate.data.fill_(0.3)  # part-way through the fade
    (block(x) * torch.randn_like(x)).sum().backward()
    assert block.mlp[2].weight.grad.abs().sum() > 0 and block.spatial.weight.grad.abs().sum() > 0
    assert float(block.mlp[2].weight.detach().abs().sum()) == 0  # zero at the start, moved by the optimizer


def test_seven_cbams_in_c3_open_without_changing_the_network(weights_n):
    """yolov5n.pt into yolov5n_C3CBAM: zero start + calibration + every gate forced to 1 gives the
    pretrained model's outputs (calibration alone left its coco128 mAP50-95 at 0.223 against 0.290)."""
    record = load_checkpoint(weights_n)["model"]
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    base = model_from_record(record).eval()
    torch.manual_seed(0)
    m = DetectionModel("yolov5n_C3CBAM.yaml")
    res = load_pretrained(record, m, source="yolov5n.pt")
    assert zero_start_new_blocks(m, res.identity) == res.identity and len(res.identity) == 7
    calibrate_new_blocks(m, res.identity, x)
    for b in res.identity:
        m.get_submodule(b).gate.data.fill_(1)
    with torch.no_grad():
        ref, out = base(x)[0], m.eval()(x)[0]
    assert float((out - ref).abs().max()) < 1e-3 * float(ref.abs().max())
    for cfg in ("yolov5n_C3ShuffleAttention.yaml", "yolov5n_SK.yaml"):  # the residual form: exactly
        torch.manual_seed(0)
        r = DetectionModel(cfg)
        blocks = load_pretrained(record, r, source="yolov5n.pt").identity
        assert zero_start_new_blocks(r, blocks) == blocks
        calibrate_new_blocks(r, blocks, x)
        for b in blocks:
            r.get_submodule(b).gate.data.fill_(1)
        with torch.no_grad():
            assert torch.equal(r.eval()(x)[0], ref), cfg
    with pytest.raises(KeyError, match="model.99"):
        zero_start_new_blocks(m, ["model.99"])


def test_zero_start_without_calibration_is_refused(tmp_path):
    """Zeroed layers leave f(x) = c * x (CBAM: 0.25 x): without calibration the "identity at every gate"
    would be false (C3CBAM forced open fell to mAP50-95 0.003). train.py refuses it in one line naming the
    keys and blocks, only where a block would be zeroed: residual-form blocks and runs without new blocks
    train without calibration."""
    import train
    from data.synthetic import make_synthetic
    from models.checkpoint import model_record, save_checkpoint
    from utils.data.dataset import load_hyp

    torch.manual_seed(0)
    block = CBAM(32).identity_start()
    block.zero_start()
    x = _features(32)
    block.gate.data.fill_(1.0)
    with torch.no_grad():
        assert torch.allclose(block.eval()(x), 0.25 * x, atol=1e-6)  # why: the constant only calibration removes
    assert gate_hyp({"gate_calibration_images": 0})["gate_zero_start"] == 1  # the hyp alone is fine
    data = make_synthetic(tmp_path / "d", n_train=4, n_val=2, imgsz=64, seed=0)
    base = tmp_path / "base.pt"
    save_checkpoint({"model": model_record(DetectionModel("yolov5n.yaml", nc=3)), "epoch": -1}, base)
    kw = dict(data=str(data), weights=str(base), imgsz=64, batch_size=2, epochs=1, workers=0, device="cpu",
              noplots=True, noautoanchor=True, noval=True, hyp={**load_hyp(None), "gate_calibration_images": 0})
    with pytest.raises(ValueError, match="gate_zero_start: 1 needs gate_calibration_images >= 1 for model.9: .*0.25 x"):
        train.run(cfg="yolov5n_CBAM.yaml", project=str(tmp_path / "a"), **kw)
    out = train.run(cfg="yolov5n_SimAM.yaml", project=str(tmp_path / "b"), **kw)  # residual form: no scale needed
    assert out["last"].is_file()


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes"])
def test_bad_zero_start_hyp_is_refused(bad):
    assert gate_hyp({})["gate_zero_start"] == 1 and gate_hyp({"gate_zero_start": False})["gate_zero_start"] == 0
    with pytest.raises(ValueError, match="gate_zero_start=.* must be 1"):
        gate_hyp({"gate_zero_start": bad})


def test_residual_form_exports_to_torchscript_and_onnx(weights_n, tmp_path):
    """A fine-tuned residual-form model (yolov5n.pt into C3SimAM: 7 blocks, a != 0) exports with the
    form: the TorchScript and ONNX outputs equal the PyTorch model's, not the paper form's."""
    import onnxruntime

    from export import export_model

    record = load_checkpoint(weights_n)["model"]
    torch.manual_seed(0)
    m = DetectionModel("yolov5n_C3SimAM.yaml")
    blocks = load_pretrained(record, m, source="yolov5n.pt").identity
    zero_start_new_blocks(m, blocks)
    for b in blocks:
        m.get_submodule(b).gate.data.fill_(1.0)
        m.get_submodule(b).residual_scale.data.fill_(0.5)  # as after training
    m.names = list(record["names"])
    m.eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(x)[0]
        paper = DetectionModel("yolov5n_C3SimAM.yaml").eval()
        paper.load_state_dict({k: v for k, v in m.state_dict().items() if not k.endswith("residual_scale")})
        assert float((paper(x)[0] - ref).abs().max()) > 1.0  # the form matters (boxes move by pixels)
    files = export_model(m, tmp_path / "simam", include=("torchscript", "onnx"), imgsz=(64, 64))
    ts = torch.jit.load(str(files["torchscript"]))
    with torch.no_grad():
        assert float((ts(x) - ref).abs().max()) < 1e-3
    sess = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
    assert float((out - ref).abs().max()) < 1e-2
