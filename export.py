"""Export a trained detector to TorchScript, ONNX and OpenVINO (FP32, FP16 or INT8).

    python export.py --weights best.pt --include onnx openvino             # fixed 1x3x640x640
    python export.py --weights best.pt --include onnx --dynamic --simplify # any batch and size
    python export.py --weights best.pt --include openvino --int8 --data coco128.yaml

Writes beside the weights: best.torchscript, best.onnx, best_openvino_model/ (best.xml + best.bin;
best_int8_openvino_model/ with --int8). Each file holds its own metadata (stride, class names,
image size, batch, dynamic, the model YAML): ONNX metadata_props, OpenVINO rt_info, TorchScript
extra file ``config.txt``. detect.py, val.py and compare.py open them through models/backends.py.
The exported graph returns the decoded predictions ``(batch, boxes, 5 + nc)``; NMS stays outside.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.backends import META_KEY, TORCHSCRIPT_META, metadata_json  # noqa: E402
from models.checkpoint import CheckpointError, load_model  # noqa: E402
from models.yolo import DecodedOutput  # noqa: E402
from utils.cli import check_img_size, image_size, parse_imgsz, print_args  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

FORMATS = ("torchscript", "onnx", "openvino")
DEFAULT_OPSET = 17
MIN_OPSET = 9  # Upsample with scales, used by every YOLOv5 neck, needs opset 9


class ExportError(RuntimeError):
    """An export that cannot be done; the message names the model and what to change."""


def export_metadata(model: nn.Module, imgsz: tuple[int, int], batch: int, dynamic: bool, **extra) -> dict:
    """What an exported file must carry so nothing else travels with it."""
    return {"stride": int(model.stride.max()), "names": list(model.names), "imgsz": list(imgsz), "batch": batch,
            "dynamic": dynamic, "yaml": dict(model.yaml), **extra}


def _fresh(model: nn.Module) -> nn.Module:
    """fp32, and Detect's cached grids dropped so a trace computes them from the input's shape."""
    return model.float()


def export_torchscript(model: nn.Module, im: torch.Tensor, file: Path, meta: dict) -> Path:
    """Trace `model` on `im` and save it with the metadata as the extra file config.txt."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice: kept as upstream's format
        ts = torch.jit.trace(DecodedOutput(_fresh(model)).eval(), im, strict=False, check_trace=False)
        ts.save(str(file), _extra_files={TORCHSCRIPT_META: metadata_json(meta)})
    return file


@contextlib.contextmanager
def _native_stdout_silenced():
    """Discard what native code writes to the process's stdout meanwhile: torch's TorchScript
    exporter prints its whole IR graph there (hundreds of lines) when an op fails to export, before
    raising the error that we report in one line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                ctypes.CDLL(None).fflush(None)  # C stdio's buffer goes to /dev/null too, not to the restored fd
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def export_onnx(model: nn.Module, im: torch.Tensor, file: Path, meta: dict, opset: int = DEFAULT_OPSET,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """ONNX through torch's TorchScript-based exporter; input `images`, output `output0`.

    With `dynamic`, batch, height and width are free axes. `simplify` runs onnxslim.
    """
    import onnx

    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "boxes"}} if dynamic else None
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _native_stdout_silenced():
                torch.onnx.export(DecodedOutput(_fresh(model)).eval(), (im,), buf, opset_version=opset,
                                  dynamo=False, input_names=["images"], output_names=["output0"],
                                  dynamic_axes=axes, do_constant_folding=True)
        except (torch.onnx.OnnxExporterError, RuntimeError) as e:  # an op this opset lacks
            cause = str(e).split(". ")[0].splitlines()[0]
            raise ExportError(f"{file.name}: the model cannot be exported at --opset {opset} ({cause}); "
                              f"the default, {DEFAULT_OPSET}, exports every shipped config") from e
    proto = onnx.load_from_string(buf.getvalue())
    _name_output_width(proto, 5 + len(model.names))
    onnx.checker.check_model(proto)
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, metadata_json(meta)
    onnx.save(proto, str(file))
    return file


def _name_output_width(proto, width: int) -> None:
    """Give the output's last axis its size, 5 + nc: a dynamic trace leaves it symbolic
    ('Concatoutput0_dim_2'), which runtimes and tools reading the graph's signature cannot use."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 3 and not dims[2].HasField("dim_value"):
        dims[2].dim_value = width


def calibration_batches(data: str | Path, imgsz: int | tuple[int, int], stride: int, n: int = 300,
                        batch: int = 1) -> tuple[list[np.ndarray], int]:
    """Up to `n` validation images of dataset `data` letterboxed to exactly `imgsz` ((h, w), or an
    int for a square), as float32 arrays of shape (batch, 3, h, w) with values in [0, 1]: the input
    shape of the model being quantized. A short last batch is filled up with the first images again
    (a fixed-batch export takes full batches only). Returns (batches, number of distinct images)."""
    from utils.data.augment import letterbox
    from utils.data.dataset import create_dataloader
    from utils.data.dataset_config import check_dataset

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    d = check_dataset(data)
    loader = create_dataloader(d["val"], max(h, w), 1, stride, rect=False, pad=0.0, workers=0, augment=False,
                               shuffle=False, prefix="calibration: ", nc=int(d["nc"]))[0]
    images = []
    for i, (im, *_) in enumerate(loader):
        if i >= n:
            break
        hwc = np.ascontiguousarray(im[0].numpy().transpose(1, 2, 0))
        if hwc.shape[:2] != (h, w):
            hwc = letterbox(hwc, (h, w), auto=False, stride=stride)[0]
        images.append(hwc.transpose(2, 0, 1).astype(np.float32) / 255)
    batches = [np.stack([images[(k + j) % len(images)] for j in range(batch)]) for k in range(0, len(images), batch)]
    return batches, len(images)


def export_openvino(onnx_file: Path, out_dir: Path, meta: dict, half: bool = False, int8: bool = False,
                    data: str | Path | None = None, head_index: int | None = None) -> Path:
    """ONNX -> OpenVINO IR in `out_dir` (FP32, FP16 weights with `half`, or INT8 by NNCF post-training
    quantization on the images of dataset `data`). The metadata goes into the model's rt_info."""
    import openvino as ov

    ov_model = ov.Core().read_model(str(onnx_file))  # the ONNX frontend; convert_model adds seconds of overhead
    if int8:
        ov_model = _quantize(ov_model, meta, data, head_index)
    ov_model.set_rt_info(metadata_json(meta), [META_KEY])
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / (out_dir.name.split("_int8_openvino_model")[0].split("_openvino_model")[0] + ".xml")
    ov.save_model(ov_model, str(xml), compress_to_fp16=half and not int8)
    return out_dir


def _quantize(ov_model, meta: dict, data: str | Path | None, head_index: int | None):
    """NNCF post-training quantization (mixed preset: symmetric weights, asymmetric activations)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on import
    import nncf

    size, batch = tuple(meta["imgsz"]), 1 if meta.get("dynamic") else int(meta.get("batch") or 1)
    images, n_img = calibration_batches(data, size, meta["stride"], batch=batch)
    if not images:
        raise ExportError(f"--data {data}: no validation images found for INT8 calibration")
    filled = len(images) * batch - n_img
    LOGGER.info(f"INT8: calibrating on {n_img} validation images of {data} at {size[0]}x{size[1]}, in "
                f"{len(images)} batch(es) of {batch}"
                + (f" (the last filled up with {filled} image(s) repeated)" if filled > 0 else ""))
    # Convolutions (weights and inputs) become INT8. Kept in floating point: the Detect layer, whose
    # decoding (sigmoid, grid offsets, anchor sizes in pixels) spans 0 to the image size, and the
    # elementwise products (SiLU = x * sigmoid(x), attention gates), whose quantized inputs cost mAP.
    head = rf".*/model\.{head_index}/.*"
    ignored = nncf.IgnoredScope(patterns=[head], types=["Multiply", "Sigmoid"], validate=False)
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # one INFO line per unquantized input otherwise (~170 for yolov5n)
    try:
        return nncf.quantize(ov_model, nncf.Dataset(images), preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(images), fast_bias_correction=False, ignored_scope=ignored)
    finally:
        nncf_log.setLevel(level)


def _max_opset() -> int:
    """The newest opset this torch's ONNX exporter writes (a private constant; 23 for torch 2.14)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
    except ImportError:  # moved in another torch: the exporter's own error is still reported in one line
        return 99
    return int(ONNX_MAX_OPSET)


def check_options(include: tuple[str, ...], half: bool, int8: bool, data: str | Path | None,
                  opset: int = DEFAULT_OPSET) -> None:
    """ExportError for options that cannot work together, before any model is loaded."""
    unknown = set(include) - set(FORMATS)
    if unknown:
        raise ExportError(f"--include {sorted(unknown)}: unknown format; choose from {', '.join(FORMATS)}")
    top = _max_opset()
    if ("onnx" in include or "openvino" in include) and not MIN_OPSET <= opset <= top:
        raise ExportError(f"--opset {opset}: torch {torch.__version__.split('+')[0]} exports opsets "
                          f"{MIN_OPSET}-{top} of these models (default {DEFAULT_OPSET})")
    if (half or int8) and "openvino" not in include:
        raise ExportError("--half and --int8 apply to the OpenVINO export; add openvino to --include")
    if int8 and not data:
        raise ExportError("--int8 needs --data: a dataset YAML whose validation images calibrate the quantizer")
    if half and int8:
        LOGGER.warning("WARNING: --half is ignored with --int8: the quantized model keeps INT8 weights and FP32 "
                       "for the layers NNCF leaves unquantized")


def export_model(model: nn.Module, stem: Path, include: tuple[str, ...] = ("onnx",), imgsz=(640, 640),
                 batch_size: int = 1, dynamic: bool = False, simplify: bool = False, opset: int = DEFAULT_OPSET,
                 half: bool = False, int8: bool = False, data: str | Path | None = None,
                 device: torch.device | str = "cpu") -> dict[str, Path]:
    """Export an in-memory DetectionModel (eval mode, fused) next to `stem` (a path without suffix;
    ``best.v2`` writes ``best.v2.onnx``: the suffix is appended, never substituted).

    Returns {format: written path}. Raises ExportError for an unknown format or bad options.
    """
    check_options(include, half, int8, data, opset)
    stride = int(model.stride.max())
    imgsz = tuple(check_img_size(list(imgsz), s=stride))
    device = select_device(device, verbose=False)
    model = model.to(device).eval()
    im = torch.zeros(batch_size, 3, *imgsz, device=device)
    meta = export_metadata(model, imgsz, batch_size, dynamic)
    out: dict[str, Path] = {}
    stem = Path(stem)
    if "torchscript" in include:
        out["torchscript"] = export_torchscript(model, im, stem.parent / f"{stem.name}.torchscript", meta)
    if "onnx" in include:
        out["onnx"] = export_onnx(model, im, stem.parent / f"{stem.name}.onnx", meta, opset, dynamic, simplify)
    if "openvino" in include:
        ov_dir = stem.parent / f"{stem.name}{'_int8' if int8 else ''}_openvino_model"
        ov_meta = {**meta, "precision": "int8" if int8 else "fp16" if half else "fp32"}
        quant = {"head_index": len(model.model) - 1} if int8 else {}
        with tempfile.TemporaryDirectory() as tmp:
            onnx_file = out.get("onnx") or export_onnx(model, im, Path(tmp) / f"{stem.name}.onnx", meta, opset,
                                                       dynamic, simplify)
            out["openvino"] = export_openvino(onnx_file, ov_dir, ov_meta, half, int8, data, **quant)
    for fmt, path in out.items():
        LOGGER.info(f"{fmt}: saved {path} ({_size_mb(path):.1f} MB)")
    return out


def _size_mb(path: Path) -> float:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def run(weights: str | Path = ROOT / "yolov5s.pt", include: tuple[str, ...] = ("torchscript", "onnx"),
        imgsz: tuple[int, int] | int = (640, 640), batch_size: int = 1, dynamic: bool = False,
        simplify: bool = False, opset: int = DEFAULT_OPSET, half: bool = False, int8: bool = False,
        data: str | Path | None = None, device: str = "cpu") -> dict[str, Path]:
    """Load a `.pt` checkpoint and export it (see :func:`export_model`); files go beside the weights."""
    check_options(tuple(include), half, int8, data, opset)
    dev = select_device(device)
    model = load_model(weights, dev, fuse=True)
    imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    return export_model(model, Path(weights).with_suffix(""), tuple(include), imgsz, batch_size, dynamic, simplify,
                        opset, half, int8, data, dev)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a YOLOv5 (attention) model to TorchScript, ONNX, OpenVINO.")
    p.add_argument("--weights", type=str, default=str(ROOT / "yolov5s.pt"), help="model checkpoint (.pt)")
    p.add_argument("--include", nargs="+", default=["torchscript", "onnx"], help=f"formats: {', '.join(FORMATS)}")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=image_size, default=[640], help="image size h,w")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--dynamic", action="store_true", help="free batch, height and width (ONNX, OpenVINO)")
    p.add_argument("--simplify", action="store_true", help="simplify the ONNX graph with onnxslim")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    p.add_argument("--half", action="store_true", help="OpenVINO FP16 weights")
    p.add_argument("--int8", action="store_true", help="OpenVINO INT8 post-training quantization (NNCF); needs --data")
    p.add_argument("--data", type=str, default=None, help="dataset YAML for --int8 calibration")
    p.add_argument("--device", default="cpu", help="cuda device (0) or cpu")
    opt = p.parse_args(argv)
    try:
        opt.imgsz = parse_imgsz(opt.imgsz)
    except ValueError as e:
        p.error(str(e))
    if opt.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {opt.batch_size}")
    opt.include = [f.lower() for f in opt.include]
    return opt


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    print_args("export", opt)
    try:
        run(**vars(opt))
    except (ExportError, CheckpointError, FileNotFoundError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
