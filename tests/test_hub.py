"""The Python API (models/hub.py) and torch.hub entry points (hubconf.py) on bus.jpg with yolov5n."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import detect
from models.hub import PANDAS_COLUMNS, Detector, batch_shape, load

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(weights_n) -> Detector:
    return load(weights_n, device="cpu")


@pytest.fixture(scope="module")
def bus_results(model, bus):
    return model(str(bus))


def _close(a: torch.Tensor, b: torch.Tensor, px: float = 1.0) -> bool:
    """Same detections (count, classes) with boxes within `px` pixels."""
    return a.shape == b.shape and bool((a[:, 5] == b[:, 5]).all()) and float((a[:, :4] - b[:, :4]).abs().max()) <= px


def test_same_boxes_as_detect(bus_results, weights_n, bus, tmp_path):
    _, dets = detect.run(weights=weights_n, source=bus, nosave=True, project=tmp_path, device="cpu")
    want = dets[str(bus)]
    got = bus_results.xyxy[0]
    assert len(want) == 5
    order_w, order_g = want[:, 4].argsort(), got[:, 4].argsort()
    assert _close(got[order_g], want[order_w], px=1.0), (got, want)
    assert torch.allclose(got[order_g, 4], want[order_w, 4], atol=1e-3)


def test_formats(bus_results):
    r = bus_results
    h, w = r.ims[0].shape[:2]
    xyxy, xywhn = r.xyxy[0], r.xywhn[0]
    assert xyxy.shape == (5, 6) and xywhn.shape == (5, 6)
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2 / w
    bh = (xyxy[:, 3] - xyxy[:, 1]) / h
    assert torch.allclose(xywhn[:, 0], cx) and torch.allclose(xywhn[:, 3], bh)
    assert torch.allclose(r.xyxyn[0][:, 2], xyxy[:, 2] / w)
    assert torch.equal(xywhn[:, 4:], xyxy[:, 4:])
    assert "4 person, 1 bus" in str(r)


def test_pandas_columns(bus_results):
    p = bus_results.pandas()
    df = p.xyxy[0]
    assert list(df.columns) == ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
    assert list(p.xywhn[0].columns) == PANDAS_COLUMNS["xywhn"][:4] + ["confidence", "class", "name"]
    assert len(p) == 1 and p[0] is df
    assert sorted(df["name"]) == ["bus", "person", "person", "person", "person"]
    np.testing.assert_allclose(df[["xmin", "ymin", "xmax", "ymax"]].to_numpy(), bus_results.xyxy[0][:, :4].numpy(),
                               rtol=1e-6)


@pytest.fixture
def url_server(tmp_path, bus):
    """A local HTTP server with a copy of bus.jpg (the test runs offline)."""
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(bus, served / "bus.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_each_input_type_and_list(model, bus, url_server):
    bgr = cv2.imread(str(bus))
    ref = model(bgr, size=320).xyxy[0]
    assert len(ref)
    assert torch.equal(model(str(bus), size=320).xyxy[0], ref)  # path
    assert torch.equal(model(Path(bus), size=320).xyxy[0], ref)  # Path
    assert torch.equal(model(f"{url_server}/bus.jpg", size=320).xyxy[0], ref)  # URL
    pil = model(Image.open(bus), size=320)  # RGB; PIL's JPEG decoder may differ from OpenCV's by a grey level
    assert _close(pil.xyxy[0], ref, px=2.0)
    # an RGB array taken for BGR gives other scores: the documented channel order matters
    swapped = model(np.ascontiguousarray(bgr[:, :, ::-1]), size=320).xyxy[0]
    assert not (swapped.shape == ref.shape and torch.allclose(swapped[:, 4], ref[:, 4], atol=1e-4))
    both = model([str(bus), bgr], size=320)
    assert len(both) == 2 and both.files == ["bus.jpg", "image1.jpg"]
    for got in both.xyxy:  # batched convolutions may differ from batch 1 in the last float bits
        assert _close(got, ref, px=0.01) and torch.allclose(got[:, 4], ref[:, 4], atol=1e-4)


def test_mixed_sizes_batch_shape(model, bus):
    """Images of different shapes share one letterboxed batch; boxes map back to each original."""
    bgr = cv2.imread(str(bus))
    small = cv2.resize(bgr, (405, 540))
    assert batch_shape([bgr.shape[:2], (300, 700)], 320, 32) == (320, 320)
    r = model([bgr, small], size=320)
    assert r.shape[2:] == (320, 256)
    a, b = (p[p[:, 0].argsort()] for p in r.xyxy)
    assert len(a) and len(a) == len(b)
    iou = torchvision.ops.box_iou(a[:, :4], 2 * b[:, :4]).diagonal()  # half-size image, boxes half as large
    assert float(iou.min()) > 0.85, iou


def test_bad_inputs(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        model(str(tmp_path / "missing.jpg"))
    with pytest.raises(TypeError, match="uint8"):
        model(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="CHW"):
        model(np.zeros((3, 32, 32, 2), np.uint8))
    with pytest.raises(TypeError, match="unsupported input type"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no images"):
        model([])
    with pytest.raises(ValueError, match="unsupported model file type"):
        load(tmp_path / "model.tflite")


def test_save_crop_render(bus_results, tmp_path):
    r = bus_results
    d = r.save(save_dir=tmp_path / "exp")
    out = cv2.imread(str(d / "bus.jpg"))
    assert out is not None and out.shape == r.ims[0].shape
    assert r.save(save_dir=tmp_path / "exp") == tmp_path / "exp2"  # incremented, as detect.py
    crops = r.crop(save_dir=tmp_path / "c", exist_ok=True)
    assert len(crops) == 5
    files = sorted((tmp_path / "c" / "crops").rglob("*.jpg"))
    assert [f.parent.name for f in files].count("person") == 4 and len(files) == 5
    H, W = r.ims[0].shape[:2]
    for c in crops:  # the box enlarged by 2% + 10 px, clipped to the image
        x1, y1, x2, y2 = c["box"]
        cx, bw = (x1 + x2) / 2, (x2 - x1) * 1.02 + 10
        assert abs(c["im"].shape[1] - (min(cx + bw / 2, W) - max(cx - bw / 2, 0))) <= 1.5
    unsaved = r.crop(save=False)
    assert [c["im"].shape for c in unsaved] == [c["im"].shape for c in crops]
    rendered = r.render()[0]
    assert rendered.shape == r.ims[0].shape and not np.array_equal(rendered, r.ims[0])
    assert np.array_equal(r.ims[0], cv2.imread(str(ROOT.parent / "shared" / "images" / "bus.jpg")))  # untouched


class _FakeBackend:
    """A non-Module model: one fixed box of class 1 in the middle of the letterboxed input."""

    stride = [8, 16, 32]
    names = {0: "a", 1: "b"}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        p = torch.zeros(x.shape[0], 1, 7)
        p[..., :4] = torch.tensor([w / 2, h / 2, w / 4, h / 4])
        p[..., 4], p[..., 6] = 0.9, 1.0
        return p


def test_any_callable_model():
    det = Detector(_FakeBackend())
    assert det.stride == 32 and det.names == ["a", "b"]
    r = det(np.zeros((200, 100, 3), np.uint8), size=64)  # letterboxed to 64x32 (scale 0.32)
    assert r.shape == (1, 3, 64, 32)
    assert torch.allclose(r.xyxy[0], torch.tensor([[37.5, 75.0, 62.5, 125.0, 0.9, 1.0]]), atol=1e-4)
    assert r.pandas().xyxy[0]["name"].tolist() == ["b"]


def test_pretrained_attention_config_starts_as_its_base(weights_n, bus, tmp_path, monkeypatch):
    """pretrained=True on yolov5n_CBAM: yolov5n.pt transferred, the new block at identity, so the
    same detections and class names as yolov5n itself."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolov5n.pt").symlink_to(weights_n)  # where an official name is looked for
    cbam, base = load("yolov5n_CBAM", pretrained=True), load("yolov5n")
    assert any(type(m).__name__ == "CBAM" for m in cbam.model.modules())
    got, want = cbam(str(bus), size=320), base(str(bus), size=320)
    assert len(want.xyxy[0]) and torch.allclose(got.xyxy[0], want.xyxy[0], atol=1e-3)
    assert cbam.names == base.names and cbam.names[0] == "person"


def test_torch_hub_local(weights_n, bus, tmp_path, monkeypatch):
    m = torch.hub.load(str(ROOT), "custom", path=str(weights_n), source="local")
    assert isinstance(m, Detector)
    assert m(str(bus), size=320).xyxy[0].shape[1] == 6
    cbam = torch.hub.load(str(ROOT), "yolov5n_CBAM", pretrained=False, source="local", autoshape=False)
    assert any(type(x).__name__ == "CBAM" for x in cbam.modules())
    import hubconf

    assert {"custom", "yolov5n", "yolov5n_CBAM", "yolov5x_C3SE"} <= set(dir(hubconf))
    # an official name offline: one clear line, nothing written outside tmp_path
    import models.checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models.checkpoint, "RELEASE_URL", "http://127.0.0.1:9/{name}")
    with pytest.raises(FileNotFoundError, match=r"yolov5s.pt not found locally and the download .* failed"):
        torch.hub.load(str(ROOT), "yolov5s", source="local")
    with pytest.raises(RuntimeError, match="Cannot find callable"):
        torch.hub.load(str(ROOT), "resnet50", source="local")


# ------------------------------------------------------------------ issue 22: torch.hub inside an app
APP_MAIN = '''
import sys
repo, ckpt, image, out = sys.argv[1:5]
sys.path.insert(0, "")  # the app's own folder first, as `python main.py` has it
import models as app_models  # the app's package, imported BEFORE the hub load
import torch

ours = {"models", "utils", "data", "val", "train", "detect", "export", "hubconf"}
before = {k: v for k, v in sys.modules.items() if k.partition(".")[0] in ours}
path_before = list(sys.path)
m = torch.hub.load(repo, "custom", path=ckpt, source="local")
r = m(image, size=320)
r.pandas()                                  # calls made after the load import more of our modules
r.save(save_dir=out, exist_ok=True)
m2 = torch.hub.load(repo, "yolov5n_CBAM", pretrained=False, source="local", autoshape=False)
after = {k: v for k, v in sys.modules.items() if k.partition(".")[0] in ours}
import models, utils                        # utils: imported AFTER the hub load
print("boxes", len(r.xyxy[0]), "classes", type(m2).__name__)
print("models", models is app_models and models.X == "app models", "utils", utils.X == "app utils")
print("modules", after == before and all(after[k] is v for k, v in before.items()), "path", sys.path == path_before)
'''


def test_torch_hub_inside_app_with_own_packages(weights_n, bus, tmp_path):
    """Issue 22: an app with its own `models` and `utils` packages loads a checkpoint through
    torch.hub; the load works and leaves the app's modules (imported before or after) its own."""
    import subprocess
    import sys

    app = tmp_path / "app"
    for pkg in ("models", "utils"):
        (app / pkg).mkdir(parents=True)
        (app / pkg / "__init__.py").write_text(f'X = "app {pkg}"\n')
    (app / "main.py").write_text(APP_MAIN)
    p = subprocess.run([sys.executable, "main.py", str(ROOT), str(weights_n), str(bus), str(tmp_path / "out")],
                       cwd=app, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = dict(ln.split(" ", 1) for ln in p.stdout.splitlines())
    assert int(lines["boxes"].split()[0]) >= 3 and lines["boxes"].endswith("classes DetectionModel")
    assert lines["models"] == "True utils True"
    assert lines["modules"] == "True path True"
    assert (tmp_path / "out" / "bus.jpg").stat().st_size > 10_000
