"""Inference precision: an FP32 file runs at FP32 on every CPU (OpenVINO's bf16 default on CPUs with
AVX512_BF16/AMX is overridden), reduced precision only with --half (FP16 on CUDA, bf16 on a CPU with
native bf16, else FP32 said in one line); CPU capability detection in utils/device.py."""

from __future__ import annotations

import pytest
import torch

import utils.device as device_mod
from models.backends import load_backend
from tests.logcapture import LogLines
from utils.device import cpu_summary, exact_fp32, half_dtype, lowered_fpmath_env, parse_cpuinfo

pytestmark = pytest.mark.filterwarnings("ignore")

X86 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2
"""
AVX2_ONLY = "model name\t: AMD EPYC 7R32\nflags\t\t: fpu sse avx2 fma\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16 i8mm\n"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Make utils.device see a CPU with (True) or without (False) native bf16."""
    def force(native: bool):
        flags = frozenset({"avx2", "avx512f", "avx512_bf16"} if native else {"avx2"})
        monkeypatch.setattr(device_mod, "cpu_info", lambda: ("test CPU", flags))
    return force


def test_cpuinfo_is_read_from_the_first_processor():
    name, flags = parse_cpuinfo(X86)
    assert name == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_bf16", "amx_bf16", "amx_int8"} <= flags  # the first processor's line, not the last one's
    assert parse_cpuinfo(AVX2_ONLY) == ("AMD EPYC 7R32", frozenset({"fpu", "sse", "avx2", "fma"}))
    assert parse_cpuinfo(ARM) == ("unknown", frozenset({"fp", "asimd", "bf16", "i8mm"}))
    assert parse_cpuinfo("") == ("unknown", frozenset())


def test_half_means_fp16_on_cuda_and_bf16_only_on_a_native_bf16_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_info", lambda: parse_cpuinfo(X86))
    assert half_dtype(torch.device("cpu")) is torch.bfloat16
    assert cpu_summary() == ("Intel(R) Xeon(R) Platinum 8480+: AVX2 yes, AVX-512 yes, VNNI yes, AVX512_BF16 yes, "
                             "AMX yes")
    monkeypatch.setattr(device_mod, "cpu_info", lambda: parse_cpuinfo(AVX2_ONLY))
    assert half_dtype(torch.device("cpu")) is None
    assert cpu_summary() == "AMD EPYC 7R32: AVX2 yes, AVX-512 no, VNNI no, AVX512_BF16 no, AMX no"
    monkeypatch.setattr(device_mod, "cpu_info", lambda: parse_cpuinfo(ARM))  # ARM bf16 is not used
    assert half_dtype(torch.device("cpu")) is None
    assert half_dtype(torch.device("cuda", 0)) is torch.float16  # only the device type is read


def test_exact_fp32_undoes_a_process_wide_bf16_setting():
    """torch.set_float32_matmul_precision('medium') makes oneDNN multiply float32 in bf16 on such CPUs;
    inside exact_fp32 the product is IEEE fp32's, and the setting is back afterwards."""
    a, b = torch.randn(256, 256, generator=torch.Generator().manual_seed(0)).split(128)
    want = a.double() @ b.double().T
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        lowered = torch.backends.mkldnn.matmul.fp32_precision
        with exact_fp32():
            got = a @ b.T
        assert torch.backends.mkldnn.matmul.fp32_precision == lowered  # restored
    finally:
        torch.set_float32_matmul_precision(before)
    assert (got.double() - want).abs().max() < 1e-3  # bf16 would be off by ~0.1


def test_an_environment_variable_that_lowers_fp32_is_named(monkeypatch, weights_n):
    monkeypatch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "BF16")
    assert lowered_fpmath_env() == "ONEDNN_DEFAULT_FPMATH_MODE=BF16"
    with LogLines() as lg:
        load_backend(weights_n, "cpu")
    assert [m for m in lg.lines if "ONEDNN_DEFAULT_FPMATH_MODE=BF16 is set" in m and "yolov5n.pt" in m]
    monkeypatch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "strict")
    assert lowered_fpmath_env() is None


def test_bf16_outputs_are_decoded_in_float32():
    """Under CPU bf16 autocast the head's conv outputs are bf16 (8 significant bits); decoded there,
    x = 611.2 px would come out as 612. The decode runs in float32 on the bf16 values."""
    from models.yolo import Detect

    head = Detect(nc=1, anchors=[[10, 13, 16, 30, 33, 23]], ch=[4]).eval()
    head.stride.fill_(32.0)
    with torch.no_grad():
        head.m[0].weight.zero_()
        head.m[0].bias.fill_(-0.8473)  # sigmoid 0.3: x = (2 * 0.3 - 0.5 + col) * 32 = 32 col + 3.2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decoded, raw = head([torch.zeros(1, 4, 20, 20)])
    assert raw[0].dtype == torch.bfloat16 and decoded.dtype == torch.float32
    s = raw[0].float().sigmoid()[0, 0, 0, 19, 0]  # the bf16 logit, exactly
    assert decoded[0, 19, 0].item() == pytest.approx(float((2 * s - 0.5 + 19) * 32), abs=1e-3)


@pytest.fixture(scope="module")
def openvino_n(tmp_path_factory, weights_n):
    """yolov5n.pt and its OpenVINO FP32 export (--dynamic) in a tmp folder."""
    import export

    d = tmp_path_factory.mktemp("precision")
    pt = d / "yolov5n.pt"
    pt.write_bytes(weights_n.read_bytes())
    model = export.load_model(pt, "cpu")
    ov = export.export_model(model, d / "yolov5n", ("openvino",), dynamic=True)["openvino"]
    return pt, ov


def _hint(backend) -> str:
    return backend.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def test_fp32_openvino_export_runs_at_f32_and_gives_pytorch_outputs(openvino_n):
    """The acceptance check: the compiled model reports f32 (the CPU plugin's own default is bf16 on
    CPUs with AVX512_BF16/AMX) and the raw outputs match PyTorch's."""
    pt, ov = openvino_n
    with LogLines() as lg:
        b = load_backend(ov, "cpu")
    assert _hint(b) == "f32" and b.precision == "FP32"
    assert [m for m in lg.lines if m.startswith("Loaded") and "(openvino, FP32," in m]
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    want = load_backend(pt, "cpu")(x)
    got = b(x)
    assert (got[..., :4] - want[..., :4]).abs().max() < 0.02  # px (bf16 compute: several px)
    assert (got[..., 4:] - want[..., 4:]).abs().max() < 1e-3  # confidences (bf16 compute: ~0.03)


@pytest.mark.skipif(not device_mod.cpu_has_native_bf16(), reason="needs a CPU with AVX512_BF16 or AMX")
def test_half_runs_openvino_and_pytorch_at_bf16_on_a_bf16_cpu(openvino_n):
    pt, ov = openvino_n
    with LogLines() as lg:
        b = load_backend(ov, "cpu", half=True)
        p = load_backend(pt, "cpu", half=True)
    assert _hint(b) == "bf16" and b.precision == "BF16" and p.precision == "BF16 (autocast)"
    assert [m for m in lg.lines if "(openvino, BF16," in m] and [m for m in lg.lines if "(pytorch, BF16" in m]
    assert not [m for m in lg.lines if "--half" in m]
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    want = load_backend(pt, "cpu")(x)
    for y in (b(x), p(x)):
        assert y.dtype == torch.float32
        diff = (y[..., 4:] - want[..., 4:]).abs().max()
        assert 1e-4 < diff < 0.1  # really bf16 (not FP32), and close


def test_half_on_a_cpu_without_bf16_says_fp32_and_compiles_f32(openvino_n, bf16_cpu, tmp_path):
    pt, ov = openvino_n
    bf16_cpu(False)
    from models.hub import load

    with LogLines() as lg:
        b = load_backend(ov, "cpu", half=True)
        p = load_backend(pt, "cpu", half=True)
        api = load(pt, device="cpu", half=True)
    assert _hint(b) == "f32" and b.precision == "FP32" and p.precision == "FP32" and api.model.precision == "FP32"
    half = [m for m in lg.lines if "--half" in m]
    assert len(half) == 3 and all("runs in FP32: this CPU has no native bf16 (AVX512_BF16 or AMX)" in m for m in half)
    assert "yolov5n_openvino_model" in half[0] and "yolov5n.pt" in half[1]


@pytest.mark.skipif(not device_mod.cpu_has_native_bf16(), reason="needs a CPU with AVX512_BF16 or AMX")
def test_python_api_half(openvino_n, bus):
    """models.hub.load(..., half=True) opens the file through the backends at bf16; a config is refused."""
    from models.hub import load

    pt, ov = openvino_n
    api = load(ov, device="cpu", half=True)
    assert api.model.precision == "BF16" and _hint(api.model) == "bf16"
    assert (api(str(bus)).xyxy[0][:, 5] == 0).sum() >= 3  # still finds the people on bus.jpg
    with pytest.raises(ValueError, match="half=True applies to model files"):
        load("yolov5n", pretrained=False, half=True)


def test_onnx_half_on_the_cpu_names_why_it_stays_fp32(bf16_cpu, tmp_path, weights_n):
    import export

    bf16_cpu(True)
    onnx = export.export_model(export.load_model(weights_n, "cpu"), tmp_path / "n", ("onnx",), dynamic=True)["onnx"]
    with LogLines() as lg:
        b = load_backend(onnx, "cpu", half=True)
    assert b.precision == "FP32"
    assert [m for m in lg.lines if "--half: n.onnx runs in FP32: ONNX Runtime has no bf16 kernels" in m]


def test_compare_times_a_model_file_at_the_precision_asked(openvino_n, bf16_cpu):
    import compare

    pt, _ = openvino_n
    bf16_cpu(True)
    assert compare._runner(str(pt), 64, None, half=True)[0].precision == "BF16 (autocast)"
    bf16_cpu(False)
    assert compare._runner(str(pt), 64, None, half=True)[0].precision == "FP32"
    assert compare._runner(str(pt), 64, None)[0].precision == "FP32"
