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

# blocks with no layer to zero (models/gates.py names them): SGE's map is constant at its paper's
# init already; the others' own weights cannot make f(x) a multiple of x
ALREADY_CONSTANT = {"SGE"}
NO_ZERO_LAYER = {"SK", "CoT", "MHSA", "ShuffleAttention", "SimAM", "NAM"} | ALREADY_CONSTANT
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
    has_layer = block.zero_start()
    assert has_layer is (name not in NO_ZERO_LAYER)
    block.calibrate(x)
    block.eval()
    with torch.no_grad():
        block.gate.fill_(1.0)
        err = float((block(x) - x).abs().max() / x.abs().max())
    if has_layer or name in ALREADY_CONSTANT:
        assert err < 1e-5, f"{name}: f(x) differs from x by {err:.1e} at gate 1"
    else:
        assert err > 1e-3  # the documented exceptions really do change their input


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
    with pytest.raises(KeyError, match="model.99"):
        zero_start_new_blocks(m, ["model.99"])


@pytest.mark.parametrize("bad", [2, -1, 0.5, "yes"])
def test_bad_zero_start_hyp_is_refused(bad):
    assert gate_hyp({})["gate_zero_start"] == 1 and gate_hyp({"gate_zero_start": False})["gate_zero_start"] == 0
    with pytest.raises(ValueError, match="gate_zero_start=.* must be 1"):
        gate_hyp({"gate_zero_start": bad})
