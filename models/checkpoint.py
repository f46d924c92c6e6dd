"""The only place that reads or writes `.pt` files.

Reading never executes code from the file. Official YOLOv5 checkpoints are pickled
`nn.Module` objects; `torch.load(weights_only=True)` refuses them and a plain `torch.load`
would run whatever the pickle asks for. Here they are opened with torch's restricted
(weights-only) unpickler, in which the few class names such a checkpoint mentions
(`models.yolo.Model`, `models.common.C3`, `torch.nn.modules.conv.Conv2d`, ...) are mapped to
an inert record type, :class:`_PickledObject`. Nothing of the pickled objects is ever
called: their parameters and buffers are collected, the model is rebuilt from the YAML
stored inside, and the weights are loaded into it. Any other global in the pickle
(`os.system`, `builtins.eval`, ...) makes loading fail before it could be called.

The project's own checkpoints hold only plain containers and tensors, so that
`torch.load(path, weights_only=True)` opens them without this module.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import re
import secrets
import urllib.request
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.logging import LOGGER

FORMAT = "yolov5-attention/1"
RELEASE_URL = "https://github.com/ultralytics/yolov5/releases/download/v7.0/{name}"
RELEASE_NAMES = {f"yolov5{s}{p}.pt" for s in "nsmlx" for p in ("", "6")}


class CheckpointError(RuntimeError):
    """A file that is not a loadable checkpoint; the message names the file and the reason."""


class _PickledObject:
    """Inert stand-in for any module object found in a foreign pickle: it only stores state."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _foreign_class_names() -> list[str]:
    """Fully-qualified names a YOLOv5 checkpoint may use for its module objects."""
    from models.registry import BLOCKS, _ensure_loaded

    _ensure_loaded()
    names = {"models.yolo.Model", "models.yolo.DetectionModel", "models.yolo.Detect",
             "models.yolo.SegmentationModel", "models.yolo.ClassificationModel"}
    for spec in BLOCKS.values():
        cls = spec.cls.__name__
        names.update({f"models.common.{cls}", f"models.yolo.{cls}", f"models.experimental.{cls}"})
    for attr in dir(nn):
        obj = getattr(nn, attr)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            names.add(f"{obj.__module__}.{obj.__name__}")
    # torch releases have moved some classes between files; accept the historic locations
    for old in ("torch.nn.modules.activation.SiLU", "torch.nn.modules.activation.Hardswish",
                "torch.nn.modules.activation.LeakyReLU", "torch.nn.modules.activation.ReLU",
                "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
                "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d",
                "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.upsampling.Upsample"):
        names.add(old)
    return sorted(names)


def _safe_load(path: Path) -> Any:
    """`torch.load` with the weights-only unpickler; module classes become `_PickledObject`."""
    allowed = [(_PickledObject, name) for name in _foreign_class_names()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = [ln for ln in str(e).splitlines() if "GLOBAL" in ln or "unrecognized function" in ln]
        if not found:  # not a pickle at all (an image, a text file, ...)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch zip archive nor a "
                                  "valid pickle)") from None
        m = re.search(r"GLOBAL (\S+)", found[0])
        what = m.group(1) if m else found[0].strip()[:200]
        raise CheckpointError(
            f"{path}: refused to load: the pickle asks for {what}, which a model checkpoint never needs. "
            "Loading it could execute arbitrary code; nothing from it was executed.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else "truncated or corrupt"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({type(e).__name__}: {first[:200]})") from None


def _record_tensors(obj: _PickledObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Collect parameters and persistent buffers of a pickled module tree, state-dict style."""
    state = obj.__dict__.get("_state", {})
    if not isinstance(state, dict):
        return
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _PickledObject):
            _record_tensors(child, f"{prefix}{name}.", out)


def _state(obj: Any) -> dict:
    return obj.__dict__.get("_state", {}) if isinstance(obj, _PickledObject) else {}


def _model_record(path: Path, obj: Any) -> dict:
    """Turn a pickled model (foreign) or a model record (ours) into {yaml, state_dict, names, stride}."""
    if isinstance(obj, dict) and "state_dict" in obj and "yaml" in obj:
        return obj
    st = _state(obj)
    if not st or "yaml" not in st:
        raise CheckpointError(f"{path}: holds no YOLOv5 model (no model object with a 'yaml' config)")
    sd: dict[str, torch.Tensor] = OrderedDict()
    _record_tensors(obj, "", sd)
    names = st.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    stride = st.get("stride")
    return {"yaml": st["yaml"], "state_dict": sd, "names": list(names) if names else None,
            "stride": stride.tolist() if isinstance(stride, torch.Tensor) else stride}


def _refuse_export(path: Path) -> None:
    """CheckpointError for an exported model (.onnx, .torchscript, OpenVINO) where a .pt is needed."""
    from models.backends import BACKENDS, format_key

    key = format_key(path)
    if key != ".pt" and key in BACKENDS:  # an export: inference only (detect, val, compare take it)
        raise CheckpointError(f"{path}: an exported model ({key}); this needs the .pt checkpoint it was exported "
                              "from (detect.py, val.py and compare.py run exports)")


def _refuse_torchscript(path: Path) -> None:
    """CheckpointError for a TorchScript archive under a checkpoint's name (a renamed .torchscript)."""
    from models.backends import is_torchscript_archive

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: _safe_load says what it is
    if is_torchscript_archive(names):
        raise CheckpointError(f"{path}: a TorchScript archive (an export), not a checkpoint: name it .torchscript "
                              "for detect.py, val.py and compare.py; training and export need the .pt it came from")


def load_checkpoint(path: str | Path) -> dict:
    """Open a checkpoint (ours or an official YOLOv5 one) safely; returns a plain dict.

    Keys: ``model`` (and ``ema`` when present) as model records ``{yaml, state_dict, names,
    stride}``, plus whatever training state the file holds (``epoch``, ``optimizer``, ...).
    """
    path = Path(path)
    _refuse_export(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    _refuse_torchscript(path)
    ckpt = _safe_load(path)
    if not isinstance(ckpt, dict) or not ({"model", "ema"} & set(ckpt)):
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (expected a dict with a 'model' entry, "
                              f"got {type(ckpt).__name__})")
    out = dict(ckpt)
    for key in ("model", "ema"):
        if out.get(key) is not None:
            out[key] = _model_record(path, out[key])
    if out.get("model") is None:
        out["model"] = out["ema"]
    return out


def model_from_record(record: dict, source: str = "checkpoint", nc: int | None = None) -> nn.Module:
    """Rebuild a DetectionModel from its YAML and load the record's weights (fp32).

    The model is rebuilt *as it was trained*: leniently (YAML arguments literal, graph-check
    findings logged as warnings, see :mod:`models.graph_check`), so checkpoints written under
    older rules still load. A checkpoint whose YAML still holds blog-style channel counts that
    its weights were built without (written between the channel-count rule and the normalised
    YAML) is rebuilt with them dropped, with a warning. Raises CheckpointError naming `source`
    and the layer when the config cannot be built or the weights do not fit it.
    """
    from models.yolo import DetectionModel, ModelConfigError

    try:
        model = DetectionModel(record["yaml"], nc=nc, lenient=True)
    except ModelConfigError as e:
        raise CheckpointError(f"{source}: its model config cannot be built here: {e}") from None
    sd = {k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    misfit = weights_misfit(model, sd)
    if misfit:
        with contextlib.suppress(ModelConfigError):
            normalised = DetectionModel(record["yaml"], nc=nc)
            if weights_misfit(normalised, sd) is None:
                LOGGER.warning(f"WARNING: {source}: its weights fit the config with the blog-style channel counts "
                               "dropped (a checkpoint written before model YAMLs were stored normalised); rebuilt so")
                model, misfit = normalised, None
    if misfit:
        raise CheckpointError(f"{source}: weights do not fit the model built from its config: {misfit}")
    model.load_state_dict(sd)
    if record.get("names"):
        model.names = list(record["names"])
    return model


def weights_misfit(model: nn.Module, sd: dict[str, torch.Tensor]) -> str | None:
    """None when `sd` loads into `model` exactly; otherwise what differs, by layer, e.g.
    ``layer 9 (CBAM): model.9.mlp.0.weight is (1, 1024, 1, 1) in the file, (64, 1024, 1, 1) in the model``.
    Keys without a layer index are named as they are. Gates missing from older files are fine."""
    own = model.state_dict()
    layers = getattr(model, "model", None)

    def where(k: str) -> str:
        m = re.match(r"^model\.(\d+)\.", k)
        if m and layers is not None and int(m.group(1)) < len(layers):
            i = int(m.group(1))
            return f"layer {i} ({getattr(layers[i], 'type', type(layers[i]).__name__)}): {k}"
        return k

    shape = [f"{where(k)} is {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
             for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing = [where(k) for k in own if k not in sd and not optional_block_entry(model, k, with_gate=True)]
    unexpected = [where(k) for k in sd if k not in own and not optional_block_entry(model, k)]
    parts = shape[:3] + [f"missing {x}" for x in missing[:3]] + [f"unexpected {x}" for x in unexpected[:3]]
    extra = len(shape) + len(missing) + len(unexpected) - len(parts)
    return "; ".join(parts) + (f" (and {extra} more)" if extra > 0 else "") if parts else None


def optional_block_entry(model: nn.Module, key: str, with_gate: bool = False) -> bool:
    """True when `key` is an optional entry of an attention block in `model` (its output scale or
    residual-form scale: inserted blocks carry them, freshly built ones not; see AttentionBlock),
    or with `with_gate` any gate (files from code without gates load as gate 1)."""
    from models.attention._base import OPTIONAL_ENTRIES, AttentionBlock

    prefix, _, name = key.rpartition(".")
    if with_gate and name == "gate":
        return True
    if name not in OPTIONAL_ENTRIES:
        return False
    try:
        return isinstance(model.get_submodule(prefix), AttentionBlock)
    except AttributeError:
        return False


def load_model(weights: str | Path, device: torch.device | str = "cpu", fuse: bool = True,
               prefer_ema: bool = True) -> nn.Module:
    """A model ready for inference from a checkpoint file: fp32, eval mode, optionally fused."""
    _refuse_export(Path(weights))
    path = attempt_download(weights)
    ckpt = load_checkpoint(path)
    record = ckpt.get("ema") if prefer_ema and ckpt.get("ema") is not None else ckpt["model"]
    model = model_from_record(record, source=str(path))
    model.eval()
    if fuse:
        model.fuse()
    return model.to(device)


def model_record(model: nn.Module, half: bool = False) -> dict:
    """A model as plain data: its YAML dict, state dict (on CPU), class names and strides."""
    from utils.torch_utils import de_parallel

    m = de_parallel(model)
    sd = OrderedDict((k, (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone())
                     for k, v in m.state_dict().items())
    return {"yaml": dict(m.yaml), "state_dict": sd, "names": list(m.names),
            "stride": [float(s) for s in m.stride]}


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write `ckpt` atomically: a temporary file in the same folder, fsync'ed, then renamed.

    A process killed while saving leaves the previous file intact. The file's mode follows the
    umask (0644 under the usual 022), as for any file the user creates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": FORMAT, "date": datetime.datetime.now().isoformat(timespec="seconds"), **ckpt}
    # not tempfile.mkstemp: it creates mode 0600 files; os.open with 0666 lets the umask decide, like any file
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_resumable(ckpt: dict, path: str | Path, epochs: int) -> None:
    """Raise CheckpointError unless `ckpt` (a train.py last.pt planned for `epochs` epochs) can be
    resumed: it must hold its optimizer state and have epochs left to train."""
    hint = f"to train it further, start a new run with --weights {path}"
    if ckpt.get("optimizer") is None:
        raise CheckpointError(f"--resume: {path} is a finished run (no optimizer state): nothing to resume; {hint}")
    done = int(ckpt.get("epoch", -1)) + 1
    if done >= epochs:
        raise CheckpointError(f"--resume: {path} already trained all {epochs} epochs: nothing to resume; {hint}")


def attempt_download(weights: str | Path, timeout: float = 30.0) -> Path:
    """The local path of `weights`; a missing official name (`yolov5s.pt`) is downloaded.

    Offline, or for any other missing name, raises FileNotFoundError with one clear line
    saying where the file is expected.
    """
    path = Path(str(weights).strip().replace("'", ""))
    if path.is_file():
        return path
    if path.name not in RELEASE_NAMES:
        raise FileNotFoundError(f"weights {str(weights)!r} not found (looked at {path.resolve()})")
    url = RELEASE_URL.format(name=path.name)
    LOGGER.info(f"Downloading {url} to {path.resolve()} ...")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:  # noqa: S310
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, path)
        return path
    except Exception as e:
        path.with_suffix(".part").unlink(missing_ok=True)
        raise FileNotFoundError(
            f"weights {path.name} not found locally and the download from {url} failed "
            f"({type(e).__name__}: {e}); download it yourself and put it at {path.resolve()}") from None
