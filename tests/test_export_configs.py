"""Every shipped attention config exports to ONNX and OpenVINO and gives PyTorch's numbers.

Each config is built at the n scale (yolov5n_<block>), exported with --dynamic at 64x64 and run
back through models/backends.py at a different size (64x96), so the dynamic axes are exercised too.
"""

from __future__ import annotations

import pytest
import torch

from export import export_model
from models.attention.make_configs import configs
from models.backends import load_backend
from models.yolo import DetectionModel

CONFIGS = sorted(c.replace("yolov5s", "yolov5n", 1) for c in configs())
# decoded outputs: xywh in pixels (at most ~100 here) and sigmoid scores, in fp32
ATOL = 1e-3

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore")]


def test_every_shipped_config_is_covered():
    assert len(CONFIGS) == len(configs()) >= 49


@pytest.mark.parametrize("cfg", CONFIGS)
def test_config_exports_to_onnx_and_openvino(cfg, tmp_path):
    torch.manual_seed(0)
    model = DetectionModel(cfg).eval().fuse()
    model.names = [f"class{i}" for i in range(model.nc)]
    files = export_model(model, tmp_path / "m", ("onnx", "openvino"), imgsz=(64, 64), dynamic=True)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        want = model(x)[0]
    for fmt in ("onnx", "openvino"):
        backend = load_backend(files[fmt])
        assert (backend.stride, backend.imgsz, backend.dynamic) == (32, (64, 64), True)
        assert backend.names == model.names and backend.meta["yaml"]["backbone"] == model.yaml["backbone"]
        got = backend(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL, msg=lambda m, f=fmt: f"{cfg} {f}: {m}")
