"""YOLOv5 detection model: the `Detect` head, `DetectionModel` and the YAML parser.

Run as a script to print a model summary::

    python models/yolo.py --cfg yolov5s_CBAM.yaml
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import math
import re
import sys
from pathlib import Path

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(ROOT) not in sys.path:  # as a script only: importers keep their path
    sys.path.insert(0, str(ROOT))

from models.common import Conv  # noqa: E402
from models.graph_check import check_block_args, check_graph, log_dropped_channels, strip_channel_args  # noqa: E402
from models.registry import Channels, lookup, register  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent

# depth_multiple, width_multiple of the five standard scales.
SCALES: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}


class ModelConfigError(ValueError):
    """A model YAML that cannot be built; the message names the file, layer and module."""


class Detect(nn.Module):
    """YOLOv5 head: a 1x1 conv per level predicting (x, y, w, h, obj, classes) per anchor.

    `anchors` is stored in units of each level's stride (as in official checkpoints).
    In eval mode the forward returns ``(decoded, raw)`` where decoded is
    ``(batch, anchors * cells, 5 + nc)`` in input-image pixels; in train mode the raw maps.
    """

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list[int] | tuple[int, ...] = (), inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.inplace = inplace
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._grids: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.nl

    def forward(self, x: list[torch.Tensor]):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                # bf16 (CPU autocast) keeps 8 significant bits: pixel coordinates up to 640 would round to
                # 4 px, so its outputs are decoded in float32
                p = x[i].float() if x[i].dtype == torch.bfloat16 else x[i]
                grid, anchor_grid = self._grid(i, nx, ny, p)
                xy, wh, rest = p.sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + grid) * self.stride[i]
                wh = (wh * 2) ** 2 * anchor_grid
                z.append(torch.cat((xy, wh, rest), 4).view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _grid(self, i: int, nx: int, ny: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (minus 0.5) and anchor sizes in pixels for level `i`, cached per size."""
        cached = self._grids[i]
        if cached is not None and cached[0].shape[2:4] == (ny, nx) and cached[0].device == like.device \
                and cached[0].dtype == like.dtype:
            return cached
        yv, xv = torch.meshgrid(torch.arange(ny, device=like.device, dtype=like.dtype),
                                torch.arange(nx, device=like.device, dtype=like.dtype), indexing="ij")
        # broadcast shapes, not expanded copies: the same sums, and a graph OpenVINO accepts for any batch
        grid = (torch.stack((xv, yv), 2) - 0.5).view(1, 1, ny, nx, 2)
        anchor_grid = (self.anchors[i] * self.stride[i]).to(like.dtype).view(1, self.na, 1, 1, 2)
        self._grids[i] = (grid, anchor_grid)
        return grid, anchor_grid

    def _apply(self, fn, *args, **kwargs):
        self._grids = [None] * self.nl  # device/dtype changed: rebuild grids lazily
        return super()._apply(fn, *args, **kwargs)


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of `divisor` that is >= x."""
    return int(math.ceil(x / divisor) * divisor)


def refuse_model_file(cfg: str | Path, hint: str = "") -> None:
    """Raise ModelConfigError when `cfg` names a checkpoint or exported model (`best.pt`, `best.onnx`,
    `best.torchscript`, `best.xml`, `best_openvino_model/`: the suffixes of models/backends.py's
    registry), whether it exists or not: a model file is no model YAML, and reading the YAML of the
    same name in its place would train another model. `hint` (a sentence) is added to the message."""
    from models.backends import BACKENDS, format_key

    key = format_key(cfg)
    if key in BACKENDS:
        raise ModelConfigError(
            f"--cfg {cfg} is a model file ({key}), not a model YAML. {hint + ' ' if hint else ''}To train, pass the "
            "model YAML with --cfg and the checkpoint (.pt) with --weights (or --weights alone to keep its own config)")


def resolve_cfg(cfg: str | Path) -> Path:
    """Find a model YAML: a path, a name under `models/` (searched recursively), or a name
    whose scale letter differs from an existing file (`yolov5n_CBAM.yaml` -> `yolov5s_CBAM.yaml`).

    A name without a suffix gets `.yaml`. ModelConfigError for a model file (:func:`refuse_model_file`)
    or an existing file of another suffix; FileNotFoundError when nothing is found."""
    refuse_model_file(cfg)
    p = Path(cfg)
    if p.is_dir():
        from models.backends import openvino_folder_hint

        raise ModelConfigError(f"model config {str(cfg)!r} is a folder, not a model YAML{openvino_folder_hint(p)}")
    if p.suffix not in (".yaml", ".yml"):
        if p.suffix and p.exists():  # best.pth, cfg.json: never read another file's YAML in its place
            raise ModelConfigError(f"model config {str(cfg)!r} is not a YAML file (.yaml or .yml); pass a model YAML")
        p = p.with_suffix(".yaml")
    if p.is_file():
        return p
    matches = sorted(MODELS_DIR.rglob(p.name))
    if matches:
        return matches[0]
    m = re.match(r"^yolov5([nsmlx])(6?)(.*)$", p.stem)
    if m:
        for letter in "snmlx":
            matches = sorted(MODELS_DIR.rglob(f"yolov5{letter}{m.group(2)}{m.group(3)}{p.suffix}"))
            if matches:
                return matches[0]
    raise FileNotFoundError(f"model config {cfg!r} not found (looked at {p} and under {MODELS_DIR})")


def load_cfg(cfg: str | Path | dict) -> dict:
    """Read a model YAML into a dict; the scale letter of the requested file name sets the multiples."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    path = resolve_cfg(cfg)
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ModelConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ModelConfigError(f"{path}: expected a mapping with 'backbone' and 'head', got {type(d).__name__}")
    d["yaml_file"] = path.name
    m = re.match(r"^yolov5([nsmlx])", Path(cfg).name)
    if m and not re.match(rf"^yolov5{m.group(1)}", path.name):
        d["depth_multiple"], d["width_multiple"] = SCALES[m.group(1)]
        d["yaml_file"] = Path(cfg).name
    return d


def _literal(a):
    """YAML args may name values (`nc`, `anchors`, `None`, `'nearest'`): evaluate them safely."""
    if isinstance(a, str):
        with contextlib.suppress(ValueError, SyntaxError):
            return ast.literal_eval(a)
    return a


def parse_model(d: dict, ch: list[int], verbose: bool = True, lenient: bool = False) -> tuple[nn.Sequential, list[int]]:
    """Build the layers of a YOLOv5 YAML dict; returns the layers and the sorted save list.

    The rows of `d` are normalised in place: blog-style channel counts of channel-keeping blocks
    are removed (see :mod:`models.graph_check`). With `lenient` (a model rebuilt from a
    checkpoint) the arguments are taken literally and invalid block options are warnings.
    Raises ModelConfigError naming the file and layer otherwise.
    """
    src = d.get("yaml_file", "<dict>")
    for key in ("backbone", "head"):
        if key not in d:
            raise ModelConfigError(f"{src}: missing key {key!r} (a model YAML needs 'backbone' and 'head')")
    for key in ("depth_multiple", "width_multiple"):
        d.setdefault(key, 1.0)
    default_act = Conv.default_act
    Conv.default_act = _activation(d.get("activation"), src)
    try:
        return _build_layers(d, ch, src, verbose, lenient)
    finally:  # the YAML's activation applies to this model only
        Conv.default_act = default_act


def _activation(spec: str | None, src: str) -> nn.Module:
    """The module named by a YAML's optional `activation:` key, e.g. `nn.ReLU()` or `nn.LeakyReLU(0.1)`."""
    if not spec:
        return nn.SiLU(inplace=True)
    try:
        act = eval(str(spec), {"__builtins__": {}, "nn": nn})  # noqa: S307 - only torch.nn is in scope
    except Exception as e:
        raise ModelConfigError(f"{src}: activation {spec!r} is not a torch.nn module expression: {e}") from None
    if not isinstance(act, nn.Module):
        raise ModelConfigError(f"{src}: activation {spec!r} must build an nn.Module, got {type(act).__name__}")
    return act


def _build_layers(d: dict, ch: list[int], src: str, verbose: bool, lenient: bool) -> tuple[nn.Sequential, list[int]]:
    nc, anchors = d.get("nc", 80), d.get("anchors", 3)
    gd = d["depth_multiple"]
    names = {"nc": nc, "anchors": anchors}
    _check_anchors_key(anchors, src)
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)

    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}")
    layers, save = [], []
    ch0 = list(ch)  # each layer's width before width_multiple (the numbers the YAML writes)
    widths: set[int] = set()  # the widths the YAML sets (width-setting layers and Concat sums)
    dropped: dict[int, tuple[str, list[int]]] = {}  # blog-style channel counts ignored, per layer
    for i, row in enumerate(d["backbone"] + d["head"]):
        where = f"{src}: layer {i}"
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ModelConfigError(f"{where}: expected [from, number, module, args], got {row!r}")
        f, n, m_name, args = row
        where = f"{where} ({m_name})"
        try:
            spec = lookup(str(m_name))
        except KeyError as e:
            raise ModelConfigError(f"{where}: {e.args[0]}") from None
        args = [names.get(a, _literal(a)) if isinstance(a, str) else a for a in (args or [])]
        froms = [f] if isinstance(f, int) else list(f)
        for j in froms:
            if not isinstance(j, int) or not (-i <= j < i or (j == -1 and i == 0)):
                raise ModelConfigError(f"{where}: 'from' index {j!r} does not refer to an earlier layer")
        n = n_ = max(round(n * gd), 1) if n > 1 else n

        if spec.channels is Channels.KEEP and isinstance(f, int):
            if not lenient:
                args, nums = strip_channel_args(spec, args, ch0[f])
                if nums:
                    dropped[i] = (str(m_name), nums)
                    _set_row(d, i, [row[0], row[1], m_name, list(row[3])[len(nums):]])  # the normalised form
            check_block_args(spec, args, ch[f], ch0[f], widths, where, lenient)
        args, c2, c20, n = _layer_args(spec, args, froms, n, ch, ch0, d, no, where)
        try:
            m_ = nn.Sequential(*(spec.cls(*args) for _ in range(n))) if n > 1 else spec.cls(*args)
        except Exception as e:  # the constructor's own message, with where it happened
            raise ModelConfigError(f"{where}: cannot build {spec.cls.__name__}{tuple(args)}: {e}") from None
        m_.i, m_.f, m_.type = i, f, str(m_name)
        m_.np = sum(x.numel() for x in m_.parameters())
        if verbose:
            LOGGER.info(f"{i:>3}{str(f):>18}{n_:>3}{m_.np:10.0f}  {m_name!s:<40}{str(args):<30}")
        save.extend(x % i for x in froms if x != -1)
        layers.append(m_)
        if spec.channels in (Channels.IN_OUT, Channels.CONCAT):
            widths.add(c20)
        if i == 0:
            ch, ch0 = [], []
        ch.append(c2)
        ch0.append(c20)
    log_dropped_channels(src, dropped)
    return nn.Sequential(*layers), sorted(set(save))


def _check_anchors_key(anchors, src: str) -> None:
    """A YAML's `anchors`: a positive count per level, or one list of positive (w, h) pixel sizes per level,
    all levels of one length. Raises ModelConfigError naming `src` otherwise."""
    if isinstance(anchors, bool) or not isinstance(anchors, (int, list)):
        raise ModelConfigError(f"{src}: anchors: {anchors!r} must be an anchor count per output layer or a list "
                               "of anchor sizes per layer")
    if isinstance(anchors, int):
        if anchors < 1:
            raise ModelConfigError(f"{src}: anchors: {anchors} must be at least 1 anchor per output layer")
        return
    rows = [r for r in anchors if isinstance(r, (list, tuple)) and r and len(r) % 2 == 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in r)]
    if not anchors or len(rows) != len(anchors) or len({len(r) for r in rows}) != 1:
        raise ModelConfigError(f"{src}: anchors must list, per output layer, the same even number of positive "
                               f"widths and heights (w1,h1, w2,h2, ...), got {anchors!r}")


def _set_row(d: dict, i: int, row: list) -> None:
    """Replace layer `i` (counted over backbone + head) of the YAML dict `d`."""
    nb = len(d["backbone"])
    if i < nb:
        d["backbone"][i] = row
    else:
        d["head"][i - nb] = row


def _layer_args(spec, args: list, froms: list[int], n: int, ch: list[int], ch0: list[int], d: dict, no: int,
                where: str) -> tuple[list, int, int, int]:
    """Constructor arguments of one layer by its registry rule; returns (args, output width,
    output width before width_multiple, number of stacked copies)."""
    f = froms[0] if len(froms) == 1 else None
    c1 = ch[f] if f is not None else None
    c2, c20 = c1, (ch0[f] if f is not None else None)
    rule = spec.channels
    if rule is Channels.IN_OUT:
        if not args:
            raise ModelConfigError(f"{where}: needs its output channels as the first argument")
        c2 = c20 = args[0]
        if c2 != no:
            c2 = make_divisible(min(c2, d.get("max_channels", c2)) * d["width_multiple"], 8)
        args = [c1, c2, *args[1:]]
        if spec.repeats:
            args.insert(2, n)
            n = 1
    elif rule is Channels.KEEP:
        args = [c1, *args]
        if spec.repeats:
            args.insert(1, n)
            n = 1
    elif rule is Channels.BN:
        args = [c1]
    elif rule is Channels.CONCAT:
        c2, c20 = sum(ch[x] for x in froms), sum(ch0[x] for x in froms)
    elif rule is Channels.DETECT:
        args.append([ch[x] for x in froms])
        if isinstance(args[1], int):  # number of anchors per level -> unset (zero) anchors, see utils/autoanchor.py
            args[1] = [[0.0] * (args[1] * 2)] * len(froms)
    return args, c2, c20, n


def _checked_run(layers: nn.Sequential, save: list[int], x: torch.Tensor, src: str, sizes: list | None = None):
    """Run parsed `layers` on `x`; a failing layer raises ModelConfigError naming `src` and itself.
    Appends each layer's output (height, width) to `sizes` (None for a list output)."""
    y: list[torch.Tensor | None] = []
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        try:
            x = m(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            shapes = [tuple(t.shape) for t in x] if isinstance(x, list) else tuple(x.shape)
            mode = "training" if m.training else "inference"
            raise ModelConfigError(f"{src}: layer {m.i} ({m.type}) fails on input of shape {shapes} "
                                   f"(from {m.f}, in {mode}): {type(e).__name__}: {e}") from e
        if sizes is not None:
            sizes.append(tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) else None)
        y.append(x if m.i in save else None)
    return x


def _layer_sizes(d: dict, rows: list[list], s: int = 64) -> list:
    """Each layer's output (height, width) for an s x s input when `d` has the layer list `rows`
    (split at the same backbone length). Raises ModelConfigError when that does not build or run."""
    d = copy.deepcopy(d)
    nb = len(d["backbone"])
    d["backbone"], d["head"] = rows[:nb], rows[nb:]
    ch = d.get("ch", 3)
    with torch.no_grad():
        layers, save = parse_model(d, [ch], verbose=False)
        sizes: list = []
        _checked_run(layers.train(), save, torch.zeros(1, ch, s, s), d.get("yaml_file", "<dict>"), sizes)
    return sizes


class DetectionModel(nn.Module):
    """A YOLOv5 detector built from a YAML file or dict."""

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None,
                 anchors: list | None = None, verbose: bool = False, lenient: bool = False):
        """`cfg`: a YAML path or name, or a YAML dict. `self.yaml` is its normalised form (blog-style
        channel counts removed), which checkpoints store. `lenient`: rebuild a checkpoint's model as
        it was trained (arguments literal, graph findings as warnings, see :mod:`models.graph_check`).
        `anchors`: replaces the YAML's; a number (the ``anchors`` hyperparameter, rounded) is a count
        per output layer whose anchors start unset (zeros) until AutoAnchor computes them; 0 or
        None keeps the YAML's. Raises ModelConfigError naming the file and layer for a YAML that
        cannot be built."""
        super().__init__()
        self.yaml = load_cfg(cfg)
        self.yaml_file = self.yaml.get("yaml_file", "<dict>")
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml.get("nc"):
            if verbose:
                LOGGER.info(f"Overriding {self.yaml_file} nc={self.yaml.get('nc')} with nc={nc}")
            self.yaml["nc"] = nc
        if isinstance(anchors, (int, float)) and not isinstance(anchors, bool):
            anchors = round(anchors)  # a count per output layer (the `anchors` hyperparameter); 0: the YAML's
        if anchors:
            self.yaml["anchors"] = anchors
        d = copy.deepcopy(self.yaml)
        self.model, self.save = parse_model(d, ch=[ch], verbose=verbose, lenient=lenient)
        self.yaml["backbone"], self.yaml["head"] = d["backbone"], d["head"]
        self.names = [str(i) for i in range(self.yaml.get("nc", 80))]
        self.inplace = self.yaml.get("inplace", True)

        head, sizes = self.model[-1], None
        if isinstance(head, Detect):
            s, sizes = 256, []
            head.inplace = self.inplace
            self.train()  # raw maps give the level sizes
            with torch.no_grad():
                outs = self._checked_forward(torch.zeros(1, ch, s, s), sizes)
            head.stride = torch.tensor([s / x.shape[-2] for x in outs], dtype=torch.float32)
            _check_anchor_order(head)
            head.anchors /= head.stride.view(-1, 1, 1)
            self.stride = head.stride
            self._initialize_biases()
        else:
            self.stride = torch.tensor([32.0])
        check_graph(self.yaml["backbone"] + self.yaml["head"], self.yaml_file, sizes,
                    rebuild=lambda rows: _layer_sizes(self.yaml, rows), lenient=lenient)
        initialize_weights(self)

    @property
    def nc(self) -> int:
        return self.model[-1].nc

    def forward(self, x: torch.Tensor, augment: bool = False):
        if augment:
            return self._forward_augment(x)
        return self._forward_once(x)

    def _forward_once(self, x: torch.Tensor):
        """The forward pass; an error raised inside a layer is re-raised as ModelConfigError naming
        the config, the layer (index, type, inputs) and the input shape that caused it (an
        out-of-memory error is passed on unchanged)."""
        return _checked_run(self.model, self.save, x, self.yaml_file)

    def _checked_forward(self, x: torch.Tensor, sizes: list | None = None):
        """The forward pass (see :meth:`_forward_once`); also appends each layer's output
        (height, width) to `sizes` (None for a list output)."""
        return _checked_run(self.model, self.save, x, self.yaml_file, sizes)

    def _forward_augment(self, x: torch.Tensor):
        """Test-time augmentation: full scale, 0.83 scale flipped left-right, 0.67 scale."""
        img_size = x.shape[-2:]
        outs = []
        for scale, flip in ((1.0, None), (0.83, 3), (0.67, None)):
            xi = scale_img(x.flip(flip) if flip else x, scale, gs=int(self.stride.max()))
            p = self._forward_once(xi)[0]
            p[..., :4] /= scale
            if flip == 3:
                p[..., 0] = img_size[1] - p[..., 0]
            outs.append(p)
        # drop the predictions each scale is worst at (large objects at full scale, small at 0.67)
        head = self.model[-1]
        cells = sum(4 ** x for x in range(head.nl))
        n_first = (outs[0].shape[1] // cells) * sum(4 ** x for x in range(1))
        outs[0] = outs[0][:, :-n_first]
        n_last = (outs[-1].shape[1] // cells) * sum(4 ** (head.nl - 1 - x) for x in range(1))
        outs[-1] = outs[-1][:, n_last:]
        return torch.cat(outs, 1), None

    def _initialize_biases(self, cf: torch.Tensor | None = None) -> None:
        """Objectness prior ~8 objects per 640x640 image, class prior ~0.6 / nc."""
        head = self.model[-1]
        for mi, s in zip(head.m, head.stride):
            b = mi.bias.data.view(head.na, -1)  # a view: edits land in the bias itself
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:5 + head.nc] += math.log(0.6 / (head.nc - 0.99999)) if cf is None else torch.log(cf / cf.sum())

    def fuse(self) -> DetectionModel:
        """Fold every Conv's batch norm into its convolution (for inference)."""
        from utils.torch_utils import fuse_conv_and_bn

        for m in self.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return self

    def info(self, verbose: bool = False, img_size: int | tuple[int, int] = 640) -> dict:
        """Log and return layers, parameters, gradients and GFLOPs (attention matmuls included)."""
        from utils.torch_utils import model_info

        return model_info(self, verbose=verbose, img_size=img_size)


Model = DetectionModel  # the name older YOLOv5 code and checkpoints use


class DecodedOutput(nn.Module):
    """A detector in eval mode with only its decoded predictions ``(batch, boxes, 5 + nc)`` as output
    (the raw maps are for training): what export.py traces and Grad-CAM differentiates."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]
if __name__ != "__main__":  # run as a script, this file is imported again as models.yolo
    register("Detect", Detect, Channels.DETECT)


def _check_anchor_order(head: Detect) -> None:
    """Anchors must grow with the stride; flip them if the YAML lists them the other way round."""
    a = head.anchors.prod(-1).mean(-1).view(-1)
    da, ds = a[-1] - a[0], head.stride[-1] - head.stride[0]
    if da and (da.sign() != ds.sign()):
        LOGGER.info("Reversing anchor order to match strides")
        head.anchors[:] = head.anchors.flip(0)


def initialize_weights(model: nn.Module) -> None:
    """YOLOv5's batch-norm settings and in-place activations."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
            m.inplace = True


def scale_img(img: torch.Tensor, ratio: float = 1.0, same_shape: bool = False, gs: int = 32) -> torch.Tensor:
    """Resize a batch by `ratio` and pad (value 0.447, ImageNet mean grey) to a multiple of `gs`."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    s = (int(h * ratio), int(w * ratio))
    img = nn.functional.interpolate(img, size=s, mode="bilinear", align_corners=False)
    if not same_shape:
        h, w = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return nn.functional.pad(img, [0, w - s[1], 0, h - s[0]], value=0.447)


def _placement(text: str, flag: str) -> tuple[str, list[int] | None]:
    """'CBAM@9' -> ('CBAM', [9]); 'CBAM@2,4' -> ('CBAM', [2, 4]); 'CBAM' -> ('CBAM', None)."""
    name, _, at = text.partition("@")
    try:
        return name, [int(x) for x in at.split(",")] if at else None
    except ValueError:
        raise ModelConfigError(f"{flag} {text!r}: expected <Block>@<index>[,<index>...]") from None


def edit_cfg(cfg: str | Path | dict, insert: list[str] = (), in_c3: list[str] = (),
             replace_c3: list[str] = ()) -> dict:
    """The YAML `cfg` with blocks placed by :mod:`models.yaml_edit`: `in_c3` / `replace_c3` entries
    ``Name[@i,j]`` (default: every backbone C3), then `insert` entries ``Name@K[,K2]``. Every index
    refers to the layers of the input YAML (insertions are applied from the highest index down).
    Raises ModelConfigError for an unknown block, an index out of range or a width-changing C3."""
    from models import yaml_edit

    d = load_cfg(cfg)
    for text in in_c3:
        d = yaml_edit.in_c3(d, *_placement(text, "--in-c3"))
    for text in replace_c3:
        d = yaml_edit.replace_c3(d, *_placement(text, "--replace-c3"))
    inserts = []
    for text in insert:
        name, at = _placement(text, "--insert")
        if not at:
            raise ModelConfigError(f"--insert {text!r}: give the index the block takes, e.g. {name}@9")
        inserts += [(k, name) for k in at]
    for k, name in sorted(inserts, reverse=True):
        d = yaml_edit.insert_block(d, name, k)
    return d


def main(argv: list[str] | None = None) -> None:
    from utils.cli import image_size

    parser = argparse.ArgumentParser(
        description="Build a model from its YAML and print its summary; optionally place blocks and save the YAML.",
        epilog="Example: python models/yolo.py --cfg yolov5s.yaml --insert CBAM@9 --save my_CBAM.yaml "
               "(CBAM becomes layer 9, reading layer 8; every later index is rewritten). Indices refer to the "
               "input YAML's layers.")
    parser.add_argument("--cfg", type=str, default="yolov5s.yaml", help="model YAML (path or name)")
    parser.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=640, help="image size for GFLOPs")
    parser.add_argument("--nc", type=int, default=None, help="override the number of classes")
    parser.add_argument("--verbose", action="store_true", help="also list every parameter")
    parser.add_argument("--insert", action="append", default=[], metavar="BLOCK@K[,K2]",
                        help="insert a channel-keeping block as layer K (after layer K-1); repeatable")
    parser.add_argument("--in-c3", action="append", default=[], metavar="BLOCK[@I,J]",
                        help="C3 layers I, J (default: the backbone's) become C3<BLOCK>")
    parser.add_argument("--replace-c3", action="append", default=[], metavar="BLOCK[@I,J]",
                        help="C3 layers I, J (default: the backbone's) are replaced by BLOCK")
    parser.add_argument("--save", type=str, default=None, help="write the (edited) YAML here")
    opt = parser.parse_args(argv)
    try:
        cfg = opt.cfg
        if opt.insert or opt.in_c3 or opt.replace_c3 or opt.save:
            cfg = edit_cfg(opt.cfg, opt.insert, opt.in_c3, opt.replace_c3)
            if opt.save:
                cfg["yaml_file"] = Path(opt.save).name
        model = DetectionModel(cfg, nc=opt.nc, verbose=True)  # the graph check runs before anything is saved
    except (ModelConfigError, FileNotFoundError) as e:
        LOGGER.error(f"ERROR: {e}")
        raise SystemExit(2) from None
    if opt.save:
        _save_edited(cfg, opt)
    model.info(verbose=opt.verbose, img_size=opt.imgsz)


def _save_edited(cfg: dict, opt: argparse.Namespace) -> None:
    from models.yaml_edit import render

    edits = " ".join(f"--{k.replace('_', '-')} {v}" for k in ("insert", "in_c3", "replace_c3") for v in getattr(opt, k))
    header = [f"{Path(opt.save).stem}: {Path(opt.cfg).name} {edits}".rstrip(),
              f"Written by python models/yolo.py --cfg {opt.cfg} {edits} --save {opt.save}"]
    Path(opt.save).write_text(render(cfg, header))
    LOGGER.info(f"Saved {opt.save}")


if __name__ == "__main__":
    from models.yolo import main as _main  # use the importable module's classes, not __main__'s

    _main()
