"""export.py and models/backends.py: the official yolov5n exported with --dynamic gives the PyTorch
model's detections and mAP through detect.py and val.py; bad files get one line naming them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import detect
import export
import val
from models.backends import ExportFileError, load_backend
from tests.logcapture import LogLines

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("pt", "onnx", "openvino", "torchscript")

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, weights_n) -> dict[str, Path]:
    """yolov5n.pt exported with --dynamic to every format, through the CLI."""
    d = tmp_path_factory.mktemp("export")
    pt = d / "yolov5n.pt"
    pt.write_bytes(weights_n.read_bytes())
    rc = export.main(["--weights", str(pt), "--include", "torchscript", "onnx", "openvino", "--dynamic",
                      "--simplify"])
    assert rc == 0
    files = {"pt": pt, "onnx": d / "yolov5n.onnx", "openvino": d / "yolov5n_openvino_model",
             "torchscript": d / "yolov5n.torchscript"}
    assert all(p.exists() for p in files.values())
    assert {p.name for p in files["openvino"].iterdir()} == {"yolov5n.xml", "yolov5n.bin"}
    assert not [p for p in d.iterdir() if p.name.endswith(".yaml")]  # metadata inside the files, nothing beside
    return files


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_metadata_travels_inside_the_file(exported, fmt):
    b = load_backend(exported[fmt])
    ref = load_backend(exported["pt"])
    assert (b.stride, b.imgsz, b.dynamic, b.batch) == (32, (640, 640), True, None)
    assert b.names == ref.names and b.names[:2] == ["person", "bicycle"]
    assert b.meta["yaml"]["backbone"] == ref.meta["yaml"]["backbone"]
    x = torch.rand(2, 3, 192, 320)  # another batch and a rectangle: the axes are dynamic
    torch.testing.assert_close(b(x), ref(x), rtol=0, atol=2e-3)


def _detect(weights: Path, bus: Path, project: Path) -> np.ndarray:
    _, res = detect.run(weights=weights, source=bus, project=project, name=weights.name, nosave=True)
    return next(iter(res.values())).numpy()


def test_detect_gives_the_pytorch_boxes(exported, bus, tmp_path):
    """The acceptance check: the same boxes on bus.jpg (within 1 px) and the same classes."""
    want = _detect(exported["pt"], bus, tmp_path)
    assert len(want) == 5
    for fmt in ("onnx", "openvino", "torchscript"):
        got = _detect(exported[fmt], bus, tmp_path)
        assert got.shape == want.shape, fmt
        np.testing.assert_array_equal(got[:, 5], want[:, 5])
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1, err_msg=fmt)
        np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-3, err_msg=fmt)


@pytest.fixture(scope="module")
def coco_subset(tmp_path_factory, coco128) -> Path:
    """A dataset YAML over the first 16 coco128 images (val at 640 on all 128 is ~1 min per format)."""
    d = tmp_path_factory.mktemp("subset")
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:16]
    (d / "val.txt").write_text("".join(f"{p}\n" for p in images))
    names = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())["names"]
    (d / "subset.yaml").write_text(yaml.safe_dump({"path": str(d), "train": "val.txt", "val": "val.txt", "names": names}))
    return d / "subset.yaml"


def test_val_gives_the_pytorch_map(exported, coco_subset, tmp_path):
    """Rectangular batches through the dynamic exports: the same mAP50 / mAP50-95 as PyTorch."""
    def run(fmt):
        return val.run(coco_subset, weights=exported[fmt], batch_size=8, imgsz=640, project=tmp_path, name=fmt,
                       plots=False, workers=0)[0][:4]

    want = run("pt")
    assert want[3] > 0.2
    for fmt in ("onnx", "openvino"):
        got = run(fmt)
        np.testing.assert_allclose(got[2:4], want[2:4], atol=1e-3, err_msg=fmt)


def test_fixed_shape_export_is_letterboxed_to_its_size(weights_n, bus, tmp_path, capfd):
    model = export.load_model(weights_n, "cpu")
    files = export.export_model(model, tmp_path / "fixed", ("onnx",), imgsz=(320, 320), batch_size=2)
    b = load_backend(files["onnx"])
    assert (b.dynamic, b.imgsz, b.batch) == (False, (320, 320), 2)
    x = torch.rand(3, 3, 320, 320)  # a short last batch is padded to the export batch
    with torch.no_grad():
        torch.testing.assert_close(b(x), model(x)[0], rtol=0, atol=2e-3)
    with pytest.raises(ValueError, match="exported for 320x320"):
        b(torch.rand(1, 3, 256, 320))
    _, res = detect.run(weights=files["onnx"], source=bus, imgsz=640, project=tmp_path, nosave=True)
    log = capfd.readouterr().err
    assert "fixed-shape export: letterboxing to its 320x320" in log and "bus.jpg: 320x320" in log
    assert len(next(iter(res.values()))) >= 3
    from models.hub import load as hub_load  # the Python API says so too, once

    api = hub_load(files["onnx"])
    with LogLines() as lg:
        api(str(bus), size=640)
        api(str(bus), size=640)
    said = [ln for ln in lg.lines if "fixed-shape export: letterboxing to its 320x320, not size=640" in ln]
    assert len(said) == 1


# ------------------------------------------------------------------------------------- bad files
def _one_line_error(path: Path, match: str) -> None:
    with pytest.raises(ExportFileError) as e:
        load_backend(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg


def test_garbage_files_get_one_line_naming_them(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"this is not a protobuf" * 10)
    _one_line_error(tmp_path / "bad.onnx", "not a loadable ONNX model")
    (tmp_path / "bad.torchscript").write_bytes(os.urandom(512))
    _one_line_error(tmp_path / "bad.torchscript", "not a TorchScript archive")
    (tmp_path / "empty_openvino_model").mkdir()
    _one_line_error(tmp_path / "empty_openvino_model", "exactly one .xml")
    (tmp_path / "x_openvino_model").mkdir()
    (tmp_path / "x_openvino_model" / "x.xml").write_text("<net></net>")
    _one_line_error(tmp_path / "x_openvino_model", "weights x.bin are missing")
    (tmp_path / "x_openvino_model" / "x.bin").write_bytes(b"\0" * 8)
    _one_line_error(tmp_path / "x_openvino_model", "not a readable OpenVINO model")
    (tmp_path / "model.tflite").write_bytes(b"\0")
    _one_line_error(tmp_path / "model.tflite", "unknown model format '.tflite'")


def test_runtime_errors_keep_their_cause():
    from models.backends import _one_line

    e = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nException from src/x.cpp:9:\n"
                     "Incorrect weights in bin file!\n")
    assert _one_line(e) == "RuntimeError: Incorrect weights in bin file!"
    assert _one_line(ValueError("bad\nmore")) == "ValueError: bad"


def test_cli_reports_a_garbage_file_in_one_line(tmp_path, bus, capfd):
    bad = tmp_path / "best.onnx"
    bad.write_bytes(b"garbage")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "detect.py", "--weights", str(bad), "--source", str(bus), "--project",
                          str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    errors = [ln for ln in (out.stderr + out.stdout).splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and str(bad) in errors[0]
    capfd.readouterr()
    assert val.main(["--weights", str(bad), "--data", "coco128.yaml", "--project", str(tmp_path)]) == 2
    errors = [ln for ln in capfd.readouterr().err.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and str(bad) in errors[0]


class _Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_runs_no_code_from_the_file(tmp_path):
    """A torch.save pickle posing as .torchscript, and a TorchScript archive holding a payload pickle."""
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.torchscript")
    _one_line_error(tmp_path / "evil.torchscript", "not a TorchScript archive")
    # a genuine TorchScript archive whose constants pickle is swapped for the payload
    ts = tmp_path / "real.torchscript"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(ts))
    evil = tmp_path / "evil2.torchscript"
    with zipfile.ZipFile(ts) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                import pickle

                data = pickle.dumps(_Payload(marker), protocol=2)
            zout.writestr(item, data)
    with pytest.raises(ExportFileError):
        load_backend(evil)
    assert not marker.exists()
    _one_line_error(ts, "carries no yolov5_attention metadata")


def test_export_cli_errors(weights_n, tmp_path):
    pt = tmp_path / "m.pt"
    pt.write_bytes(weights_n.read_bytes())
    assert export.main(["--weights", str(pt), "--include", "tflite"]) == 2
    assert export.main(["--weights", str(pt), "--include", "onnx", "--int8"]) == 2
    assert export.main(["--weights", str(pt), "--include", "openvino", "--int8", "--imgsz", "64"]) == 2  # no --data
    assert not list(tmp_path.glob("m_*openvino_model"))


def test_dotted_checkpoint_names_keep_their_stem(weights_n, tmp_path, capsys):
    """best.v2.pt exports to best.v2.onnx (not best.onnx, which may be another model) and best.v2_openvino_model/,
    which loads; the flags that cannot work are refused by name."""
    pt = tmp_path / "yolov5n.v2.pt"
    pt.write_bytes(weights_n.read_bytes())
    other = tmp_path / "yolov5n.onnx"
    other.write_text("another model")
    assert export.main(["--weights", str(pt), "--include", "torchscript", "onnx", "openvino", "--imgsz", "64"]) == 0
    assert other.read_text() == "another model" and not (tmp_path / "yolov5n.torchscript").exists()
    for name in ("yolov5n.v2.onnx", "yolov5n.v2.torchscript", "yolov5n.v2_openvino_model"):
        assert load_backend(tmp_path / name).names[0] == "person"
    assert {p.name for p in (tmp_path / "yolov5n.v2_openvino_model").iterdir()} == {"yolov5n.v2.xml", "yolov5n.v2.bin"}
    for bad, msg in ((["--imgsz", "320", "256", "128"], "--imgsz takes one size or two"),
                     (["--batch-size", "0"], "--batch-size must be at least 1")):
        with pytest.raises(SystemExit):
            export.parse_opt(["--weights", str(pt), *bad])
        assert msg in capsys.readouterr().err


def test_compare_measures_an_exported_model(tmp_path):
    """compare.py takes a model file where a config goes: the ONNX file is timed, its YAML counted."""
    import compare
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n.yaml").eval().fuse()
    onnx_file = export.export_model(model, tmp_path / "tiny", ("onnx",), imgsz=(64, 64))["onnx"]
    cost = compare.measure_cost(str(onnx_file), 320, threads=1, runs=2)
    assert cost["params"] == sum(p.numel() for p in DetectionModel("yolov5n.yaml").parameters())
    assert cost["cpu_ms"] > 0 and cost["gflops"] > 0
    assert compare.run_key("cost", str(onnx_file), {"imgsz": 64}) == compare.run_key("cost", str(onnx_file), {"imgsz": 64})


def test_compare_times_a_rectangular_fixed_export_at_its_shape(tmp_path):
    """A fixed 96x64 export is timed at 96x64 (it refuses other shapes), the table says so and names the file."""
    import compare
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n.yaml").eval().fuse()
    ts = export.export_model(model, tmp_path / "rect", ("torchscript",), imgsz=(96, 64))["torchscript"]
    cost = compare.measure_cost(str(ts), 64, threads=1, runs=2)
    assert cost["timed_at"] == "96x64" and cost["cpu_ms"] > 0
    base = {**cost, "timed_at": "64x64"}
    rows = compare.summarise(["yolov5n.yaml", str(ts)], {"yolov5n.yaml": base, str(ts): cost}, {}, imgsz=64)
    assert [r["config"] for r in rows] == ["yolov5n", "rect.torchscript"]
    assert [r["timed at"] for r in rows] == ["64x64", "96x64"]
    assert compare.display_name(str(tmp_path / "best_openvino_model")) == "best_openvino_model"


def test_int8_openvino_export(weights_n, coco_subset, tmp_path):
    """--int8 calibrates on the dataset's images: convolutions quantized, outputs near FP32's.
    (The mAP check on all of coco128 at 640 is in benchmarks/export_formats.py.)"""
    import openvino as ov

    model = export.load_model(weights_n, "cpu")
    # a rectangle and batch 2: calibration batches take the export's exact input shape
    files = export.export_model(model, tmp_path / "q", ("openvino",), imgsz=(128, 96), batch_size=2, int8=True,
                                data=coco_subset)
    assert files["openvino"].name == "q_int8_openvino_model"
    b = load_backend(files["openvino"])
    assert b.meta["precision"] == "int8" and (b.imgsz, b.dynamic, b.batch) == ((128, 96), False, 2)
    ops = ov.Core().read_model(str(files["openvino"] / "q.xml")).get_ops()
    n_conv = sum(op.get_type_name() == "Convolution" for op in ops) - 3  # the Detect convolutions stay float
    int8_weights = [op for op in ops if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(int8_weights) >= n_conv >= 50  # every backbone/neck convolution has INT8 weights
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) >= n_conv  # and quantized inputs
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        want = model(x)[0]
    got = b(x)
    assert (got[..., 4] - want[..., 4]).abs().mean() < 0.02  # objectness
    assert (got[..., :4] - want[..., :4]).abs().median() < 2  # box pixels


def test_tools_that_need_a_checkpoint_name_the_export(exported, bus, tmp_path):
    """--visualize (PyTorch layers), export.py and heatmap.py on an exported file: one message saying a .pt is needed,
    no run folder left behind."""
    from models.checkpoint import CheckpointError

    with pytest.raises(ValueError, match=r"--visualize .* needs a .pt checkpoint, and .*yolov5n.onnx is a onnx export"):
        detect.run(weights=exported["onnx"], source=bus, visualize=True, project=tmp_path / "d")
    assert not (tmp_path / "d").exists()
    for f in (exported["onnx"], exported["openvino"], exported["torchscript"]):
        with pytest.raises(CheckpointError, match="an exported model .*needs the .pt checkpoint it was exported from"):
            export.run(weights=f, include=("onnx",))


def test_python_api_runs_exported_models(exported, bus, weights_n, tmp_path):
    """models.hub.load opens every exported format through the common interface and finds the
    PyTorch model's boxes on bus.jpg; a fixed-shape export is letterboxed to its own size."""
    from models.hub import load

    want = load(str(exported["pt"]))(str(bus)).xyxy[0].numpy()
    for fmt in ("onnx", "openvino", "torchscript"):
        got = load(str(exported[fmt]))(str(bus)).xyxy[0].numpy()
        assert got.shape == want.shape, fmt
        np.testing.assert_array_equal(got[:, 5], want[:, 5])
        np.testing.assert_allclose(got[:, :4], want[:, :4], atol=1, err_msg=fmt)
    model = export.load_model(weights_n, "cpu")
    fixed = export.export_model(model, tmp_path / "fixed", ("onnx",), imgsz=(320, 320), batch_size=1)["onnx"]
    res = load(str(fixed))([str(bus), str(bus)], size=640)
    assert tuple(res.shape[2:]) == (320, 320) and len(res.xyxy) == 2 and len(res.xyxy[0]) >= 3


def test_format_benchmark_takes_fine_tuned_checkpoints(tmp_path):
    """benchmarks/export_formats.py --finetuned MODEL=PATH: that checkpoint is benchmarked, described by its run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import export_formats

    from models.checkpoint import model_record, save_checkpoint
    from models.yolo import DetectionModel

    run = tmp_path / "cbam_s0" / "weights"
    run.mkdir(parents=True)
    m = DetectionModel("yolov5n_CBAM.yaml", nc=3)
    save_checkpoint({"model": model_record(m), "opt": {"epochs": 30, "imgsz": 320}}, run / "last.pt")
    out = tmp_path / "out"
    out.mkdir()
    pt, how, meaningful = export_formats.make_checkpoint("yolov5n_CBAM", Path("unused.pt"), out,
                                                         {"yolov5n_CBAM": str(run / "last.pt")})
    assert pt == out / "yolov5n_CBAM.pt" and pt.read_bytes() == (run / "last.pt").read_bytes()
    assert how == "fine-tuned from yolov5n.pt, 30 epochs at 320 px (cbam_s0)" and meaningful
    with pytest.raises(FileNotFoundError, match="--finetuned yolov5n_CA=.*no such checkpoint"):
        export_formats.make_checkpoint("yolov5n_CA", Path("unused.pt"), out, {"yolov5n_CA": str(tmp_path / "x.pt")})


def test_format_benchmark_states_the_cpu_ceiling():
    """export_formats measures the dense fp32 ceiling in the run and states each model's floor from it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import export_formats

    peak = export_formats.gemm_peak_gflops(n=256, repeats=3)
    assert 0.5 < peak < 1e5  # GFLOP/s of a real product on a CPU, not a unit slip (FLOP/s or TFLOP/s)
    rows = [{"model": "yolov5n", "format": "PyTorch", "GFLOPs": 4.5, "inference ms": 54.0},
            {"model": "yolov5n", "format": "ONNX", "GFLOPs": 4.5, "inference ms": 40.0}]
    note = export_formats.ceiling_note(rows, peak=180.0, threads=2)
    assert "reaches 180 GFLOP/s on these 2 threads" in note
    assert "yolov5n 4.50 GFLOPs -> at least 25.0 ms (half its PyTorch time: 27.0 ms)" in note
    assert note.count("at least") == 1  # one floor per model, from its PyTorch row
    assert "bf16" not in note  # no bf16 ceiling measured, none stated
    bf16 = export_formats.gemm_peak_gflops(n=256, repeats=3, dtype=torch.bfloat16)
    assert 0.5 < bf16 < 1e5
    note = export_formats.ceiling_note(rows, peak=180.0, threads=2, peak_bf16=900.0)
    assert "In bf16 the same product reaches 900 GFLOP/s (5.0x fp32)" in note


# ------------------------------------------------------------------------------ second QA pass
def test_opset_and_image_size_are_checked_in_one_line(weights_n, tmp_path, capfd, monkeypatch):
    """--opset outside what torch exports, and sizes below 1 pixel, are refused by name before any work;
    an op the chosen opset lacks is one line naming the file, not the exporter's traceback."""
    from utils.cli import check_img_size

    pt = tmp_path / "m.pt"
    pt.write_bytes(weights_n.read_bytes())
    for opset in ("6", "99"):
        capfd.readouterr()
        assert export.main(["--weights", str(pt), "--include", "onnx", "--opset", opset]) == 2
        errors = [ln for ln in capfd.readouterr().err.splitlines() if "ERROR" in ln]
        assert len(errors) == 1 and f"--opset {opset}: torch" in errors[0] and "exports opsets 9-" in errors[0]
    assert not list(tmp_path.glob("m.onnx"))
    for parse in (export.parse_opt, detect.parse_opt, val.parse_opt):  # every --imgsz flag, at parse time
        for bad in ("0", "-64"):
            with pytest.raises(SystemExit):
                parse([f"--imgsz={bad}"])
            assert f"{bad}: image sizes must be positive numbers of pixels" in capfd.readouterr().err
    with pytest.raises(ValueError, match=r"--img-size \[0, 64\]: image sizes must be positive"):
        check_img_size([0, 64], 32)  # the Python API's callers too

    from models.yolo import DetectionModel

    capfd.readouterr()
    with pytest.raises(export.ExportError, match=r"^ca.onnx: the model cannot be exported at --opset 9 \("):
        export.export_model(DetectionModel("yolov5n_CA.yaml").eval(), tmp_path / "ca", ("onnx",), imgsz=(64, 64),
                            opset=9, dynamic=True)  # CA's dynamic pooling sizes need opset 11
    out = capfd.readouterr()
    assert "Torch IR graph" not in out.out + out.err and len(out.out.splitlines()) < 5  # not torch's graph dump

    def unsupported(*a, **k):
        raise torch.onnx.OnnxExporterError("Unsupported: ONNX export of operator foo. Please feel free to ...\nmore")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(export.ExportError) as e:
        export.export_model(export.load_model(pt, "cpu"), tmp_path / "m", ("onnx",), imgsz=(64, 64), opset=9)
    assert str(e.value) == ("m.onnx: the model cannot be exported at --opset 9 (Unsupported: ONNX export of "
                            "operator foo); the default, 17, exports every shipped config")


def test_dynamic_onnx_output_keeps_its_width(exported):
    """Batch and boxes are free axes of the dynamic export; the last axis is 5 + nc = 85, not a symbol."""
    import onnx

    dims = onnx.load(str(exported["onnx"])).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "boxes", 85]


def test_misnamed_files_and_ignored_flags_are_named(exported, bus, tmp_path, monkeypatch):
    """A renamed OpenVINO folder gets a hint, a .torchscript renamed .pt one line, --half on a CPU
    without native bf16 a warning."""
    import shutil

    import utils.device

    monkeypatch.setattr(utils.device, "cpu_info", lambda: ("AVX2-only CPU", frozenset({"avx2"})))

    from models.checkpoint import CheckpointError, load_checkpoint

    deploy = tmp_path / "deploy"
    shutil.copytree(exported["openvino"], deploy)
    _one_line_error(deploy, "its name must end in _openvino_model, e.g. deploy_openvino_model/, or pass the .xml")
    assert load_backend(deploy / "yolov5n.xml").nc == 80
    from models.hub import load as hub_load
    from models.yolo import ModelConfigError, resolve_cfg

    with pytest.raises(ModelConfigError, match="is a folder, not a model YAML .*e.g. deploy_openvino_model/"):
        resolve_cfg(deploy)  # compare.py --cfg deploy/
    with pytest.raises(ExportFileError, match="e.g. deploy_openvino_model/"):
        hub_load(deploy)
    api = hub_load(exported["onnx"])
    for size in (0, -5, (0, 64)):
        with pytest.raises(ValueError, match=r"image sizes must be positive whole numbers of pixels"):
            api(str(bus), size=size)
    renamed = tmp_path / "best.pt"
    shutil.copy(exported["torchscript"], renamed)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(renamed)
    assert "\n" not in str(e.value) and str(renamed) in str(e.value) and "a TorchScript archive" in str(e.value)
    with LogLines() as lg:
        load_backend(exported["pt"], "cpu", half=True)
        load_backend(exported["onnx"], "cpu", half=True)
        detect.run(weights=exported["onnx"], source=bus, imgsz=64, half=True, nosave=True, project=tmp_path)
    half = [m for m in lg.lines if "--half" in m]
    assert len(half) == 3 and all("runs in FP32: " in m for m in half)
    assert "no native bf16" in half[0] and "ONNX Runtime has no bf16 kernels" in half[1]
    assert "yolov5n.pt" in half[0] and "yolov5n.onnx" in half[1] and "yolov5n.onnx" in half[2]


def test_int8_calibration_fills_a_short_last_batch(coco_subset):
    """3 images for a fixed batch of 4 calibrate (the batch is filled up), not 'no images found'."""
    batches, n = export.calibration_batches(coco_subset, (64, 64), 32, n=3, batch=4)
    assert n == 3 and len(batches) == 1 and batches[0].shape == (4, 3, 64, 64) and batches[0].dtype == np.float32
    np.testing.assert_array_equal(batches[0][3], batches[0][0])
    assert not np.array_equal(batches[0][1], batches[0][0])
    batches, n = export.calibration_batches(coco_subset, (64, 96), 32, n=5, batch=2)
    assert n == 5 and [b.shape for b in batches] == [(2, 3, 64, 96)] * 3
