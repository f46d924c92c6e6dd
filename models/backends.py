"""One inference interface for every model format, chosen by the file's name.

    backend = load_backend("best.onnx")            # or best.pt, best.torchscript, best_openvino_model/
    pred = backend(images)                          # (batch, boxes, 5 + nc) decoded, like Detect in eval mode
    backend.stride, backend.names, backend.imgsz, backend.dynamic

A small registry maps a file's format key (its suffix, or ``_openvino_model`` for an
OpenVINO folder) to a backend class; :func:`register_backend` adds one.

Loading runs no code from the file:

* ``.pt``: :mod:`models.checkpoint`'s restricted unpickler (the model is rebuilt from its YAML);
* ``.onnx`` and OpenVINO ``.xml``/``.bin``: protobuf / XML graphs and weights, pure data;
* ``.torchscript``: ``torch.jit.load`` reads the archive with TorchScript's own unpickler,
  which resolves no Python globals, and the code inside is TorchScript (interpreted by torch,
  never handed to Python's ``exec``). The file is checked to be a TorchScript archive with
  the export metadata before ``torch.jit.load`` sees it.

Precision: every backend runs at the precision its file holds (FP32 for an FP32 export, set
explicitly, so that a runtime's own default, such as OpenVINO's bf16 on CPUs with AVX512_BF16 or
AMX, does not lower it), unless ``half=True`` asks for reduced precision: FP16 on CUDA, bf16 on a
CPU with native bf16 (:func:`utils.device.half_dtype`). The "Loaded ..." log line names the
precision in use, and a backend that cannot honour ``half`` says in one line that it runs FP32.

Every exported file carries :data:`META_KEY` metadata (stride, names, imgsz, batch, dynamic,
the model YAML) written by ``export.py``; a file without it is refused.
"""

from __future__ import annotations

import contextlib
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import CheckpointError
from utils.device import exact_fp32, half_dtype, lowered_fpmath_env, no_half_reason
from utils.logging import LOGGER

META_KEY = "yolov5_attention"
META_FORMAT = "yolov5-attention-export/1"
TORCHSCRIPT_META = "config.txt"


class ExportFileError(CheckpointError):
    """A model file that is not what its name says, or lacks the export metadata (one line, naming it)."""


def _one_line(e: BaseException) -> str:
    """The exception's type and its first informative line (OpenVINO prefixes the cause with
    'Exception from <source file>:<line>:' location lines, which are skipped)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    told = [ln for ln in lines if not ln.startswith("Exception from ")] or lines
    return f"{type(e).__name__}: {told[0][:200] if told else ''}"


def parse_metadata(text: str | bytes | None, source: str) -> dict:
    """The JSON metadata string stored in an exported file -> dict; ExportFileError if absent or wrong."""
    if not text:
        raise ExportFileError(f"{source}: carries no {META_KEY} metadata; export it with export.py")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportFileError(f"{source}: its {META_KEY} metadata is not valid JSON ({_one_line(e)})") from None
    missing = {"stride", "names", "imgsz", "dynamic", "batch"} - set(meta) if isinstance(meta, dict) else {"all"}
    if missing:
        raise ExportFileError(f"{source}: its {META_KEY} metadata lacks {sorted(missing)}; export it again")
    return meta


class Backend:
    """A loaded model of any format.

    Attributes: ``stride`` (int, largest stride), ``names`` (class names), ``imgsz`` ((h, w) the
    file was exported at, or None for a .pt), ``batch`` (fixed batch size, or None when free),
    ``dynamic`` (any input height/width that is a multiple of the stride works), ``fp16``
    (inputs must be float16), ``channels_last`` (NHWC input memory is faster), ``meta``,
    ``precision`` (the precision the model computes in, in words: 'FP32', 'BF16', 'INT8 + FP32', ...)
    and ``half_refused`` (why ``half=True`` could not apply, or None).
    """

    fmt = "base"
    channels_last = False
    fp16 = False
    precision = "FP32"
    half_refused: str | None = None

    def __init__(self, path: Path, device: torch.device, meta: dict):
        self.path, self.device, self.meta = path, device, meta
        self.stride = int(meta["stride"])
        self.names = [str(n) for n in meta["names"]]
        self.imgsz = tuple(int(s) for s in meta["imgsz"]) if meta.get("imgsz") else None
        self.dynamic = bool(meta.get("dynamic", True))
        self.batch = None if self.dynamic else int(meta.get("batch") or 1)

    @property
    def nc(self) -> int:
        return len(self.names)

    def __call__(self, im: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """Images (b, 3, h, w) float in [0, 1] -> predictions (b, n, 5 + nc) float32 on `im`'s device:
        xywh in input pixels, objectness, class scores. ValueError for an input the file cannot take."""
        if augment:
            raise ValueError(f"{self.path}: test-time augmentation (--augment) needs a .pt model, not {self.fmt}")
        if not self.dynamic:
            return self._fixed(im)
        return self.forward(im).to(im.device)

    def _fixed(self, im: torch.Tensor) -> torch.Tensor:
        """A fixed-shape export: check the size, pad a short batch to the export batch."""
        if tuple(im.shape[2:]) != tuple(self.imgsz):
            raise ValueError(f"{self.path} was exported for {self.imgsz[0]}x{self.imgsz[1]} inputs, got "
                             f"{im.shape[2]}x{im.shape[3]}; letterbox to that size or export with --dynamic")
        outs = []
        for chunk in im.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat((chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))))
            outs.append(self.forward(chunk)[:n])
        return torch.cat(outs).to(im.device)

    def fed_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The input shape one model call runs on for images of `shape` (b, 3, h, w): `shape` itself,
        or for a fixed-shape export its (batch, 3, h, w), a short batch being padded to it."""
        return tuple(shape) if self.dynamic else (self.batch, int(shape[1]), *self.imgsz)

    def forward(self, im: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        shape = "dynamic shape" if self.dynamic else f"fixed {self.batch}x3x{self.imgsz[0]}x{self.imgsz[1]}"
        return f"{self.path} ({self.fmt}, {self.precision}, {shape}, stride {self.stride}, {self.nc} classes)"


class TorchMath:
    """The precision of a model run by torch itself (a .pt or TorchScript file): FP32 at IEEE precision
    on the CPU (see utils.device.exact_fp32), FP16 weights on CUDA, or bf16 autocast on a CPU with
    native bf16 when `half` is asked for."""

    def __init__(self, device: torch.device, half: bool, fp16_ok: bool):
        dtype = half_dtype(device) if half else None
        self.device = device
        self.fp16 = dtype is torch.float16 and fp16_ok
        self.bf16 = dtype is torch.bfloat16
        self.precision = "FP16" if self.fp16 else "BF16 (autocast)" if self.bf16 else "FP32"
        self.refused = None
        if half and not (self.fp16 or self.bf16):
            self.refused = (no_half_reason(device) if dtype is None
                            else "its precision was fixed when exporting (export.py; FP16 on CUDA needs a .pt)")

    def context(self) -> contextlib.AbstractContextManager:
        """Where the model's forward pass runs: bf16 autocast, or IEEE FP32 math on the CPU."""
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return exact_fp32() if self.device.type == "cpu" else contextlib.nullcontext()


class PyTorchBackend(Backend):
    """A `.pt` checkpoint, rebuilt through models.checkpoint (fused, eval mode)."""

    fmt = "pytorch"

    def __init__(self, path: Path, device: torch.device, half: bool = False):
        from models.checkpoint import load_model

        self.model = load_model(path, device, fuse=True)
        super().__init__(path, device, {"stride": int(self.model.stride.max()), "names": list(self.model.names),
                                        "imgsz": None, "dynamic": True, "batch": None, "yaml": self.model.yaml})
        self.math = TorchMath(device, half, fp16_ok=True)
        self.fp16, self.precision, self.half_refused = self.math.fp16, self.math.precision, self.math.refused
        if self.fp16:
            self.model.half()
        self.channels_last = device.type == "cpu"  # NHWC convolutions are faster with torch's CPU kernels
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def __call__(self, im: torch.Tensor, augment: bool = False) -> torch.Tensor:
        if self.channels_last:
            im = im.contiguous(memory_format=torch.channels_last)
        with self.math.context():
            y = self.model(im, augment=augment)
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.float() if self.math.bf16 else y


def is_torchscript_archive(names: list[str]) -> bool:
    """Whether the member `names` of a zip are those of a TorchScript archive (torch.jit.save writes
    code/ and constants.pkl; torch.save writes neither)."""
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names) and \
        any("/code/" in n or n.startswith("code/") for n in names)


class TorchScriptBackend(Backend):
    """A `.torchscript` archive written by export.py (metadata in its extra file config.txt)."""

    fmt = "torchscript"

    def __init__(self, path: Path, device: torch.device, half: bool = False):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ExportFileError(f"{path}: not a TorchScript archive ({_one_line(e)})") from None
        if not is_torchscript_archive(names):
            raise ExportFileError(f"{path}: not a TorchScript archive (a zip without TorchScript code/constants; "
                                  "a torch.save file is not a TorchScript model)")
        extra = {TORCHSCRIPT_META: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                self.model = torch.jit.load(str(path), map_location=device, _extra_files=extra).eval()
        except Exception as e:  # noqa: BLE001 - whatever torch raises, the user gets one line naming the file
            raise ExportFileError(f"{path}: not a loadable TorchScript model ({_one_line(e)})") from None
        super().__init__(path, device, parse_metadata(extra[TORCHSCRIPT_META], str(path)))
        self.math = TorchMath(device, half, fp16_ok=bool(self.meta.get("half")))
        self.fp16, self.precision, self.half_refused = self.math.fp16, self.math.precision, self.math.refused

    def forward(self, im: torch.Tensor) -> torch.Tensor:
        with self.math.context():
            return self.model(im.half() if self.fp16 else im).float()


class OnnxBackend(Backend):
    """An `.onnx` file run with ONNX Runtime (CUDA provider on a GPU device when available)."""

    fmt = "onnx"

    def __init__(self, path: Path, device: torch.device, half: bool = False):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        # no busy-waiting between runs: the NMS and pre-processing that follow need the cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # FP32 stays FP32: the one ONNX Runtime option that lowers float32 GEMMs to bf16 (ARM64) is pinned off
        opts.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001
            raise ExportFileError(f"{path}: not a loadable ONNX model ({_one_line(e)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        super().__init__(path, device, parse_metadata(meta, str(path)))
        self.input_name = self.session.get_inputs()[0].name
        self.fp16 = "float16" in self.session.get_inputs()[0].type
        self.precision = "FP16" if self.fp16 else "FP32"
        if half and not self.fp16:
            self.half_refused = ("ONNX Runtime has no bf16 kernels for the CPU; the OpenVINO export runs bf16 "
                                 "with --half" if device.type == "cpu" else "its precision was fixed when exporting")

    def forward(self, im: torch.Tensor) -> torch.Tensor:
        x = im.detach().cpu().numpy().astype(np.float16 if self.fp16 else np.float32, copy=False)
        y = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        return torch.from_numpy(y).float()


def _openvino_xml(path: Path) -> Path:
    """The .xml of an OpenVINO export: the path itself, or the single .xml inside its folder."""
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ExportFileError(f"{path}: an OpenVINO model folder must hold exactly one .xml (found {len(xmls)})")
        path = xmls[0]
    if not path.with_suffix(".bin").is_file():
        raise ExportFileError(f"{path}: its weights {path.with_suffix('.bin').name} are missing beside it")
    return path


class OpenVINOBackend(Backend):
    """An OpenVINO IR (`*_openvino_model/` folder or its `.xml`), compiled for the CPU.

    The CPU plugin's INFERENCE_PRECISION_HINT is always set: f32, or bf16 when `half` is asked for
    and the CPU has native bf16 (left to itself the plugin picks bf16 on such CPUs, f16 on ARM).
    The weights' storage (FP32, FP16 from export.py --half, INT8) is the export's; the hint sets the
    precision of the float computation, also of an INT8 model's float parts."""

    fmt = "openvino"

    def __init__(self, path: Path, device: torch.device, half: bool = False):
        import openvino as ov

        xml = _openvino_xml(path)
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except Exception as e:  # noqa: BLE001
            raise ExportFileError(f"{xml}: not a readable OpenVINO model ({_one_line(e)})") from None
        meta = str(model.get_rt_info([META_KEY]).astype(str)) if model.has_rt_info([META_KEY]) else None
        super().__init__(path, device, parse_metadata(meta, str(path)))
        if device.type != "cpu":
            LOGGER.warning(f"WARNING: {path}: OpenVINO runs on the CPU here; --device {device} ignored for it")
        bf16 = bool(half) and half_dtype(torch.device("cpu")) is torch.bfloat16  # OpenVINO runs on the CPU
        if half and not bf16:
            self.half_refused = no_half_reason(torch.device("cpu"))
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                  "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # noqa: BLE001
            raise ExportFileError(f"{xml}: OpenVINO could not compile it ({_one_line(e)})") from None
        self.output = self.compiled.output(0)
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self.inference_precision != config["INFERENCE_PRECISION_HINT"]:
            raise ExportFileError(f"{xml}: OpenVINO compiled it for {self.inference_precision}, not the "
                                  f"{config['INFERENCE_PRECISION_HINT']} asked for")
        stored = {"int8": "INT8 + ", "fp16": "FP16 weights, "}.get(str(self.meta.get("precision", "fp32")), "")
        self.precision = stored + self.inference_precision.upper().replace("F32", "FP32")

    def forward(self, im: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(im.detach().cpu().float().numpy())
        return torch.from_numpy(np.asarray(self.compiled(x)[self.output])).float()


OPENVINO_DIR = "_openvino_model"
BACKENDS: dict[str, Callable[..., Backend]] = {
    ".pt": PyTorchBackend,
    ".torchscript": TorchScriptBackend,
    ".onnx": OnnxBackend,
    ".xml": OpenVINOBackend,
    OPENVINO_DIR: OpenVINOBackend,
}


def register_backend(key: str, cls: Callable[..., Backend]) -> None:
    """Make `load_backend` open files whose format key (suffix or folder ending) is `key` with `cls`."""
    BACKENDS[key] = cls


def format_key(path: str | Path) -> str:
    """`best.onnx` -> '.onnx'; `best_openvino_model/` (also `best.v2_openvino_model/`) -> '_openvino_model'."""
    p = Path(path)
    if p.name.endswith(OPENVINO_DIR):
        return OPENVINO_DIR
    return p.suffix.lower()


def openvino_folder_hint(path: str | Path) -> str:
    """For a folder holding an OpenVINO .xml under another name (renamed after export): a hint to
    append to an error message; otherwise ''."""
    p = Path(path)
    if p.is_dir() and not p.name.endswith(OPENVINO_DIR) and any(p.glob("*.xml")):
        return (f" (an OpenVINO model folder? its name must end in {OPENVINO_DIR}, e.g. "
                f"{p.name}{OPENVINO_DIR}/, or pass the .xml inside it)")
    return ""


def load_backend(weights: str | Path, device: torch.device | str = "cpu", half: bool = False) -> Backend:
    """Open a model file of any registered format for inference.

    Raises FileNotFoundError for a missing path, ExportFileError (a CheckpointError) for an unknown
    format or a file that is not what its name says, CheckpointError for a bad `.pt`.
    """
    from models.checkpoint import attempt_download
    from utils.device import select_device

    device = select_device(device, verbose=False) if not isinstance(device, torch.device) else device
    key = format_key(weights)
    if key not in BACKENDS:
        raise ExportFileError(f"{weights}: unknown model format {key or '(no suffix)'!r}; "
                              f"expected one of {', '.join(sorted(BACKENDS))}{openvino_folder_hint(weights)}")
    path = attempt_download(weights) if key == ".pt" else Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"weights {str(weights)!r} not found (looked at {path.resolve()})")
    if key == OPENVINO_DIR and not path.is_dir():
        raise ExportFileError(f"{path}: an OpenVINO export is a folder holding .xml and .bin files")
    if key != OPENVINO_DIR and path.is_dir():
        raise ExportFileError(f"{path}: is a folder, not a {key} file")
    backend = BACKENDS[key](path, device, half=half)
    LOGGER.info(f"Loaded {backend.describe()}")
    if half and backend.half_refused:
        LOGGER.warning(f"WARNING: --half: {path.name} runs in FP32: {backend.half_refused}")
    env = lowered_fpmath_env()
    if env and isinstance(getattr(backend, "math", None), TorchMath) and backend.precision == "FP32":
        LOGGER.warning(f"WARNING: {env} is set: torch computes {path.name}'s FP32 convolutions at lower "
                       "precision; unset it for FP32 results")
    return backend


def metadata_json(meta: dict[str, Any]) -> str:
    """The metadata dict as the JSON string stored in exported files."""
    return json.dumps({"format": META_FORMAT, **meta}, default=str)
