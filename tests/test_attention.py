"""Attention blocks: shapes, gradients, paper parameter formulas, determinism, reduced precision,
ONNX, identity start, and the behaviour each paper defines (CBAM, CC, DA, GAM, MHSA, ...).

Parameter counts: every block owns one extra scalar, the identity-start ``gate``
(models/attention/_base.py). ``PAPER_PARAMS`` are the papers' formulas for the block itself;
the tests check ``total == formula + 1`` and ``total without gate == formula``.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import models.attention as A
from models.attention import AttentionBlock, identity_start
from models.attention._base import fit_groups, odd_kernel, softmax_attention

BLOCKS = [n for n in A.__all__ if n not in ("AttentionBlock", "AttentionBottleneck", "C3Attention")
          and not n.startswith("C3")]


pytestmark = pytest.mark.usefixtures("one_thread")


def _se(c: int, r: int = 16) -> int:
    h = c // r
    return 2 * c * h + h + c


def _gc(c: int) -> int:
    h = c // 16
    return (c + 1) + (c * h + h) + 2 * h + (h * c + c)


def _sk(c: int) -> int:
    g, d = 32, max(c // 16, 32)  # 32 groups divide 64 and 512
    return 2 * (9 * c * c // g + 2 * c) + (c * d + 2 * d) + 2 * d * c


def _bam(c: int) -> int:
    h = c // 16
    channel = 2 * c * h + h + c + 2 * c
    spatial = c * h + 2 * h + 2 * (9 * h * h + 2 * h) + h + 2
    return channel + spatial


def _ca(c: int) -> int:
    mid = max(8, c // 32)
    return c * mid + 2 * mid + 2 * (mid * c + c)


def _gam(c: int) -> int:
    h = c // 4
    return (c * h + h) + (h * c + c) + (49 * c * h + 2 * h) + (49 * h * c + 2 * c)


def _shuffle(c: int) -> int:
    g = {64: 32, 512: 64}[c]  # 64 groups need C divisible by 128
    return 6 * c // (2 * g)


def _ema(c: int) -> int:
    cg = c // 32
    return (cg * cg + cg) + (9 * cg * cg + cg) + 2 * cg


def _psa(c: int) -> int:
    h = c // 2
    return (c + 1) + (c * h + h) + (h * c + c) + 2 * c + 2 * (c * h + h)


def _lsk(c: int) -> int:
    h = c // 2
    return (25 * c + c) + (49 * c + c) + 2 * (c * h + h) + (2 * 2 * 49 + 2) + (h * c + c)


def _dual(c: int) -> int:
    c8 = c // 8
    return 2 * (c * c8 + c8) + (c * c + c)


def _nonlocal(c: int) -> int:
    h = c // 2
    return 3 * (c * h + h) + h * c + 2 * c


def _double(c: int) -> int:
    m = n = c // 4
    return (c * m + m) + 2 * (c * n + n) + (m * c + c)


def _cot(c: int) -> int:
    g, e, heads = 4, 2 * c // 4, c // 8
    return (9 * c * c // g + 2 * c) + (c * c + 2 * c) + (2 * c * e + 2 * e) + (e * 9 * heads + 9 * heads)


PAPER_PARAMS = {
    "SE": _se,
    "ECA": lambda c: {64: 3, 512: 5}[c],  # the kernel size
    "GC": _gc,
    "SK": _sk,
    "SOCA": _se,  # same gate MLP as SE, r = 16
    "NAM": lambda c: 2 * c,
    "CBAM": lambda c: 2 * c * (c // 16) + 2 * 7 * 7,
    "BAM": _bam,
    "CA": _ca,
    "GAM": _gam,
    "TripletAttention": lambda c: 3 * (2 * 7 * 7 + 2),
    "SimAM": lambda c: 0,
    "ShuffleAttention": _shuffle,
    "EMA": _ema,
    "SGE": lambda c: 2 * 64,
    "PSA": _psa,
    "LSK": _lsk,
    "LSKA": lambda c: c * c + 29 * c,  # k = 23: taps 5, 5, 7, 7
    "S2MLPv2": lambda c: 8 * c * c + 6 * c,
    "DA": lambda c: _dual(c) + 2,  # alpha, beta
    "CC": lambda c: _dual(c) + 1,  # gamma
    "NonLocal": _nonlocal,
    "MHSA": lambda c: 3 * c * c + 2 * 63 * (c // 4),  # offsets -31..31, 4 heads
    "DoubleAttention": _double,
    "CoT": _cot,
}

SIZES = [(2, 64, 8, 8), (2, 64, 7, 5), (1, 64, 1, 1), (1, 64, 1, 6), (1, 64, 5, 1)]


def make(name: str, c: int = 64) -> AttentionBlock:
    torch.manual_seed(0)
    return getattr(A, name)(c)


@torch.no_grad()
def perturb(m: nn.Module, seed: int = 1) -> nn.Module:
    """Move every parameter off its initial value (zero-init scales, unit gates, ...)."""
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.2)
    for b in m.modules():
        if isinstance(b, AttentionBlock):
            b.gate.fill_(0.7)
    return m


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --- registry and exports --------------------------------------------------------------------


def test_every_block_is_registered_exported_and_has_a_formula():
    import models.common as common
    from models.registry import Channels, attention_names, lookup

    assert len(BLOCKS) >= 24
    assert sorted(PAPER_PARAMS) == sorted(BLOCKS)
    names = attention_names()
    for name in BLOCKS:
        spec = lookup(name)
        assert spec.cls is getattr(common, name) and spec.attention and spec.channels is Channels.KEEP
        c3 = lookup(f"C3{name}")
        assert c3.repeats and c3.channels is Channels.IN_OUT and f"C3{name}" in A.__all__
        assert name in names and f"C3{name}" in names
        doc = spec.cls.__doc__
        assert doc and ("arXiv:" in doc or "no arXiv" in doc), name


# --- every block -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", BLOCKS)
def test_shape_is_preserved(name, size):
    m = make(name).eval()
    x = torch.randn(size)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_gradients_reach_every_parameter(name):
    m = perturb(make(name)).train()
    # batch 3: with 2 images a batch norm over pooled vectors (BAM, SK) outputs +-1 whatever its input
    x = torch.randn(3, 64, 7, 5, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("c", [64, 512])
@pytest.mark.parametrize("name", BLOCKS)
def test_parameter_count_is_the_paper_formula(name, c):
    m = getattr(A, name)(c)
    assert m.gate.numel() == 1
    assert n_params(m) - 1 == PAPER_PARAMS[name](c)


@pytest.mark.parametrize("name", BLOCKS)
def test_eval_is_deterministic(name):
    m = perturb(make(name)).eval()
    x = torch.randn(2, 64, 8, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", BLOCKS)
def test_reduced_precision_is_finite(name, dtype):
    m = perturb(make(name)).eval()
    x = torch.randn(2, 64, 8, 6) * 4
    with torch.no_grad():
        with torch.autocast("cpu", dtype=dtype):
            for inp in (x, x.to(dtype)):  # the block as first layer, and behind a reduced-precision conv
                y = m(inp)
                assert y.shape == x.shape and y.dtype == inp.dtype and torch.isfinite(y).all()
        y = m.to(dtype)(x.to(dtype))  # the whole block in reduced precision (model.half())
        assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.filterwarnings("ignore")  # tracer warnings about Python ints taken from shapes
@pytest.mark.parametrize("name", BLOCKS)
def test_onnx_export_matches_onnxruntime(name):
    import onnxruntime as ort
    m = perturb(make(name)).eval()
    x = torch.randn(1, 64, 8, 6)
    f = io.BytesIO()
    torch.onnx.export(m, (x,), f, opset_version=17, dynamo=False, input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    y_onnx = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(y_onnx, m(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BLOCKS)
def test_runs_on_any_device_without_host_tensors(name):
    """On the meta device a single tensor created on the CPU (a mask, an index) would fail."""
    m = make(name).eval().to("meta")
    y = m(torch.empty(2, 64, 7, 5, device="meta"))
    assert y.shape == (2, 64, 7, 5) and y.device.type == "meta"


@pytest.mark.parametrize("c", [16, 24, 40, 96])
@pytest.mark.parametrize("name", BLOCKS)
def test_group_counts_adapt_to_width_scaled_channels(name, c):
    m = getattr(A, name)(c).eval()
    with torch.no_grad():
        assert m(torch.randn(1, c, 5, 4)).shape == (1, c, 5, 4)


# --- identity start ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BLOCKS)
def test_identity_start_makes_the_block_the_identity_and_serialises(name):
    m = perturb(make(name))
    m.identity_start()
    x = torch.randn(2, 64, 7, 5)
    for train in (False, True):
        m.train(train)
        with torch.no_grad():
            torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    # the same module tree rebuilt from its constructor takes the state dict, strictly
    clone = make(name)
    clone.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), x, rtol=0, atol=0)
    # training can leave the identity: some parameter gets a gradient
    m.train()
    m(x).pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_state_dict_without_gate_loads_as_paper_form():
    m = perturb(make("CBAM"))
    sd = {k: v for k, v in m.state_dict().items() if k != "gate"}
    fresh = make("CBAM")
    with torch.no_grad():
        fresh.gate.fill_(0.0)
    fresh.load_state_dict(sd)  # strict
    assert fresh.gate.item() == 1.0


def test_identity_start_on_a_model_counts_blocks():
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5s_C3CBAM.yaml")
    assert identity_start(model) == 7  # C3 repeats 1 + 2 + 3 + 1 in yolov5s
    assert all(m.gate.item() == 0 for m in model.modules() if isinstance(m, AttentionBlock))


def test_identity_start_only_for_blocks_new_to_the_pretrained_weights():
    """Pretrained yolov5s_CBAM weights loaded into yolov5s_C3CBAM-like mixes: only new blocks start as identity."""
    from models.yolo import DetectionModel

    pretrained = DetectionModel("yolov5s.yaml").state_dict()
    model = DetectionModel("yolov5s_C3CBAM.yaml")
    sd = model.state_dict()
    for k, v in sd.items():  # pretend the layer-2 block came with the checkpoint
        if k.startswith("model.2.m.0.attn."):
            pretrained[k] = v
    missing, unexpected = model.load_state_dict(pretrained, strict=False)
    assert not unexpected
    assert identity_start(model, missing) == 6
    assert model.model[2].m[0].attn.gate.item() == 1 and model.model[4].m[1].attn.gate.item() == 0


def test_identity_start_reproduces_the_pretrained_network():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    plain = DetectionModel("yolov5s.yaml").eval()
    model = DetectionModel("yolov5s_C3CC.yaml")
    missing, _ = model.load_state_dict(plain.state_dict(), strict=False)
    identity_start(model, missing)
    model.eval()
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], plain(x)[0], rtol=0, atol=0)


# --- behaviour defined by the papers ---------------------------------------------------------


def test_cbam_equals_the_formula():
    torch.manual_seed(0)
    m = A.CBAM(32, r=8).eval()
    x = torch.randn(2, 32, 9, 7)
    w0, w1 = m.mlp[0].weight.flatten(1), m.mlp[2].weight.flatten(1)  # (h, C), (C, h)
    f7 = m.spatial.weight  # (1, 2, 7, 7)

    def mlp(v):  # v: (B, C)
        return torch.relu(v @ w0.T) @ w1.T

    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(2).values))  # (B, C)
    x1 = x * mc[:, :, None, None]
    desc = torch.stack((x1.mean(1), x1.max(1).values), 1)  # (B, 2, H, W)
    padded = nn.functional.pad(desc, (3, 3, 3, 3))
    ms = torch.zeros(2, 9, 7)
    for i in range(9):
        for j in range(7):
            ms[:, i, j] = (padded[:, :, i:i + 7, j:j + 7] * f7[0]).sum((1, 2, 3))
    ref = x1 * torch.sigmoid(ms)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(m(x), x * x)


def _input_grad(m: nn.Module, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    m(x)[:, :, i, j].sum().backward()
    return x.grad.abs().sum((0, 1))  # (H, W)


def test_cc_one_pass_sees_row_and_column_two_passes_see_everything():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 6, 7)
    for r, everywhere in ((1, False), (2, True)):
        m = A.CC(16, recurrence=r)
        with torch.no_grad():
            m.gamma.fill_(1.0)
        g = _input_grad(m, x, 2, 3)
        cross = torch.zeros(6, 7, dtype=torch.bool)
        cross[2, :] = True
        cross[:, 3] = True
        assert (g[cross] > 0).all()
        if everywhere:
            assert (g > 0).all()
        else:
            assert (g[~cross] == 0).all()


def test_cc_counts_the_centre_once():
    """The position itself is in the row path only: its column energy is -inf, weights sum to 1."""
    torch.manual_seed(0)
    m = A.CC(16, recurrence=1)
    with torch.no_grad():
        m.gamma.fill_(1.0)
        x = torch.randn(1, 16, 5, 4)
        nn.init.zeros_(m.q.weight), nn.init.zeros_(m.k.weight), nn.init.zeros_(m.q.bias), nn.init.zeros_(m.k.bias)
        # uniform attention over H + W - 1 distinct positions: out = x + mean of v over the cross
        v = m.v(x)
        ref = torch.zeros_like(v)
        for i in range(5):
            for j in range(4):
                ref[:, :, i, j] = (v[:, :, :, j].sum(2) + v[:, :, i, :].sum(2) - v[:, :, i, j]) / (5 + 4 - 1)
        torch.testing.assert_close(m.criss_cross(x), x + ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,scales", [("DA", ("alpha", "beta")), ("CC", ("gamma",))])
def test_zero_residual_scales_are_the_identity(name, scales):
    m = perturb(make(name)).train()
    with torch.no_grad():
        for s in scales:
            getattr(m, s).zero_()
        m.gate.fill_(1.0)
        x = torch.randn(2, 64, 6, 5)
        torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    assert all(getattr(make(name), s).item() == 0 for s in scales)  # and that is how they start


def test_nonlocal_starts_as_identity():
    m = make("NonLocal").train()
    x = torch.randn(2, 64, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), x, rtol=0, atol=0)


def test_gam_channel_gate_sees_every_position():
    """No pooling: the channel gate at a position depends on that position's features, so
    the gate map is not constant over positions and each position's gate has its own gradient."""
    m = perturb(make("GAM")).eval()
    x = torch.randn(1, 64, 5, 6, requires_grad=True)
    gate = m.channel_gate(x)
    assert gate.shape == x.shape
    assert gate.std((2, 3)).min() > 0  # varies over positions, for every channel
    gate.sum().backward()
    assert (x.grad.abs().sum(1) > 0).all()
    x2 = x.detach().clone()
    x2[0, :, 4, 5] += 1.0
    with torch.no_grad():
        d = (m.channel_gate(x2) - m.channel_gate(x.detach())).abs().sum(1)[0]
    assert d[4, 5] > 0 and d.sum() == d[4, 5]  # position-wise, nothing shared


def test_eca_kernel_size():
    assert odd_kernel(64) == 3 and odd_kernel(512) == 5 and odd_kernel(256) == 5 and odd_kernel(32) == 3
    assert A.ECA(64).conv.kernel_size == (3,) and A.ECA(512).conv.kernel_size == (5,)


def test_simam_equals_the_energy_formula():
    x = torch.randn(2, 8, 5, 4)
    n = 5 * 4 - 1
    mu = x.mean((2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / n
    e_inv = (x - mu) ** 2 / (4 * (var + 1e-4)) + 0.5
    torch.testing.assert_close(A.SimAM(8)(x), x * torch.sigmoid(e_inv))


def test_soca_square_root_squares_back():
    from models.attention.channel import sqrtm_newton_schulz

    torch.manual_seed(0)
    f = torch.randn(3, 16, 40, dtype=torch.float64)
    f = f - f.mean(2, keepdim=True)
    cov = f @ f.transpose(1, 2) / 40
    root = sqrtm_newton_schulz(cov, iterations=25, eps=0.0)
    torch.testing.assert_close(root @ root, cov, rtol=1e-3, atol=1e-3)
    few = sqrtm_newton_schulz(cov, iterations=5)  # the paper's 5 steps: an approximation
    assert torch.isfinite(few).all()


def test_mhsa_relative_logits_match_a_direct_computation():
    torch.manual_seed(0)
    m = A.MHSA(16, heads=2, max_rel=3).eval()
    x = torch.randn(1, 16, 5, 6)
    q, k, v = m.qkv(x).chunk(3, 1)
    d, h, w = 8, 5, 6
    out = torch.zeros(1, 16, h, w)
    for head in range(2):
        sl = slice(head * d, (head + 1) * d)
        for y in range(h):
            for xx in range(w):
                qv = q[0, sl, y, xx] * d ** -0.5
                logits = torch.zeros(h, w)
                for ky in range(h):
                    for kx in range(w):
                        r = m.rel_h[max(-3, min(3, ky - y)) + 3] + m.rel_w[max(-3, min(3, kx - xx)) + 3]
                        logits[ky, kx] = qv @ (k[0, sl, ky, kx] + r)
                a = logits.flatten().softmax(0)
                out[0, sl, y, xx] = v[0, sl].flatten(1) @ a
    with torch.no_grad():
        torch.testing.assert_close(m(x), out, rtol=1e-4, atol=1e-5)


def test_chunked_attention_equals_one_shot():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 50, 4), torch.randn(2, 3, 40, 4), torch.randn(2, 3, 40, 6)
    bias = torch.randn(2, 3, 50, 40)
    ref = ((q @ k.transpose(-1, -2)) * 0.5 + bias).softmax(-1) @ v
    out = softmax_attention(q, k, v, 0.5, lambda s, e: bias[:, :, s:e], max_elements=2 * 3 * 40 * 7)
    torch.testing.assert_close(out, ref)


def test_attention_runs_in_fp32_under_autocast():
    """Logits that overflow fp16 (|x| ~ 1e3, C x C energies ~ 1e7) still give a finite DA output."""
    m = A.DA(32).eval()
    with torch.no_grad():
        m.alpha.fill_(1.0), m.beta.fill_(1.0)
        x = torch.randn(1, 32, 6, 6) * 300
        with torch.autocast("cpu", dtype=torch.float16):
            y = m(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


def test_fit_groups():
    assert fit_groups(64, 32) == 32 and fit_groups(48, 32) == 24 and fit_groups(40, 64) == 40
    assert fit_groups(64, 64, multiple=2) == 32 and fit_groups(12, 64, multiple=2) == 6
    with pytest.raises(ValueError):
        fit_groups(15, 64, multiple=2)


# --- C3 variants -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CBAM", "CC", "SimAM"])
def test_c3_variant_keeps_c3_names(name):
    from models.common import C3

    torch.manual_seed(0)
    c3 = C3(64, 64, n=2)
    v = getattr(A, f"C3{name}")(64, 64, n=2)
    keys, base = set(v.state_dict()), set(c3.state_dict())
    assert base <= keys
    assert all(".attn." in k for k in keys - base)
    assert isinstance(v.m[1].attn, getattr(A, name))
    missing, unexpected = v.load_state_dict(c3.state_dict(), strict=False)
    assert not unexpected and all(".attn." in k for k in missing)
    # with the block made the identity, the variant computes exactly what C3 computes
    v.m[0].attn.identity_start(), v.m[1].attn.identity_start()
    x = torch.randn(2, 64, 6, 5)
    c3.eval(), v.eval()
    with torch.no_grad():
        torch.testing.assert_close(v(x), c3(x))


# --- FLOP counting -----------------------------------------------------------------------------


def test_flop_counter_convolutions_equal_thop():
    import thop
    from torch.utils.flop_counter import FlopCounterMode

    model = nn.Sequential(nn.Conv2d(3, 16, 6, 2, 2, bias=False), nn.Conv2d(16, 32, 3, 2, 1, bias=False),
                          nn.Conv2d(32, 32, 3, 1, 1, groups=8, bias=False), nn.Conv2d(32, 64, 1, bias=False))
    x = torch.randn(1, 3, 64, 96)
    macs = thop.profile(model, inputs=(x,), verbose=False)[0]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts == {"aten.convolution": 2 * macs}


@pytest.mark.parametrize("name", ["CC", "NonLocal", "DA", "MHSA"])
def test_attention_products_are_counted(name):
    from utils.torch_utils import count_flops, matmul_flops, thop_flops

    m = make(name, 32).eval()
    h, w = 6, 8
    n = h * w
    extra = matmul_flops(m, (h, w), ch=32) * 1e9
    assert count_flops(m, (h, w), ch=32) > thop_flops(m, (h, w), ch=32)
    if name == "CC":  # per pass: energies B*W*H*H*c8 + B*H*W*W*c8, aggregation the same with C
        expected = 2 * 2 * (w * h * h + h * w * w) * (4 + 32)
    elif name == "NonLocal":  # theta^T phi and the weighted sum, inner width C/2
        expected = 2 * 2 * n * n * 16
    elif name == "DA":  # position: c8 and C; channel: two C x C x N products
        expected = 2 * n * n * (4 + 32) + 2 * 2 * 32 * 32 * n
    else:  # MHSA: q k^T and weights @ v per head (d = 8, 4 heads), relative logits
        expected = 2 * 4 * (2 * n * n * 8) + 2 * 4 * n * 8 * (h + w)
    assert extra == pytest.approx(expected, rel=1e-9)


def test_block_under_autocast_keeps_grad_dtype_paths():
    """A training step under bf16 autocast produces fp32 gradients for every parameter."""
    m = perturb(make("CC")).train()
    x = torch.randn(2, 64, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in m.parameters())


def test_gate_is_the_only_extra_parameter():
    for name in BLOCKS:
        names = [n for n, _ in make(name).named_parameters()]
        assert names.count("gate") == 1, name
    assert math.isclose(make("SE").gate.item(), 1.0)


@pytest.mark.parametrize("name", BLOCKS)
def test_runs_under_deterministic_algorithms(name):
    m = perturb(make(name)).train()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        x = torch.randn(3, 64, 6, 5, requires_grad=True)
        m(x).sum().backward()
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.isfinite(x.grad).all()
