"""What attention blocks look at: their own attention maps, and Grad-CAM for a detection.

Block maps are computed from the block's input, captured during one forward pass, with the
block's own sub-functions (so they are the maps the block multiplies by, not a proxy):

- CBAM, GAM: the spatial gate; BAM: the combined gate averaged over channels;
- CA: the product of its height and width gates, averaged over channels;
- CC: the criss-cross affinity of one pixel (the centre of the explained detection);
- any other block: its *effect*, the per-pixel norm of ``f(x) - x`` (labelled "effect").

Grad-CAM uses the `grad-cam` package (pytorch-grad-cam) with a target that is the score
(objectness x class probability) of the prediction behind the explained detection.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import nn

MapFn = Callable[[nn.Module, torch.Tensor, tuple[float, float]], dict[str, torch.Tensor]]
_MAPS: dict[str, MapFn] = {}


def block_map(*names: str) -> Callable[[MapFn], MapFn]:
    """Register a map function for the attention classes called `names`."""

    def deco(fn: MapFn) -> MapFn:
        for n in names:
            _MAPS[n] = fn
        return fn

    return deco


@block_map("CBAM")
def _cbam(m, x, _p):
    xc = x * m.channel_gate(x)
    return {"spatial_gate": m.spatial_gate(xc)[:, 0]}


@block_map("GAM")
def _gam(m, x, _p):
    xc = x * m.channel_gate(x)
    return {"spatial_gate": m.spatial(xc).sigmoid().mean(1)}


@block_map("CA")
def _ca(m, x, _p):
    h, w = x.shape[2:]
    strips = torch.cat((x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)), 2)
    fh, fw = m.conv1(strips).split((h, w), 2)
    a_h, a_w = m.conv_h(fh).sigmoid(), m.conv_w(fw.transpose(2, 3)).sigmoid()
    return {"hw_gates": (a_h * a_w).mean(1), "h_gate": a_h.mean(1).expand(-1, h, w),
            "w_gate": a_w.mean(1).expand(-1, h, w)}


@block_map("CC")
def _cc(m, x, p):
    """Affinity of pixel p (relative coordinates) to its row and column, first recurrence."""
    b, _, h, w = x.shape
    i, j = min(int(p[1] * h), h - 1), min(int(p[0] * w), w - 1)
    q, k = m.q(x).float(), m.k(x).float()
    e_col = torch.einsum("bc,bcg->bg", q[:, :, i, j], k[:, :, :, j])
    e_col[:, i] = float("-inf")
    e_row = torch.einsum("bc,bcv->bv", q[:, :, i, j], k[:, :, i, :])
    att = torch.cat((e_col, e_row), 1).softmax(1)
    out = torch.zeros(b, h, w, dtype=att.dtype, device=x.device)
    out[:, :, j] = att[:, :h]
    out[:, i, :] += att[:, h:]
    return {f"affinity_at_{j}_{i}": out}


def _effect(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = m.attend(x) if hasattr(m, "attend") else m(x)
    return (f.float() - x.float()).norm(dim=1)


def attention_maps(block: nn.Module, x: torch.Tensor, point: tuple[float, float] = (0.5, 0.5)) -> dict[str, torch.Tensor]:
    """Maps (B, H, W) of one attention block for its input `x`."""
    fn = _MAPS.get(type(block).__name__)
    with torch.no_grad():
        if fn is not None:
            return {k: v.float() for k, v in fn(block, x, point).items()}
        return {"effect": _effect(block, x)}


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention block in the model, outermost first."""
    from models.attention._base import AttentionBlock

    return [(n, m) for n, m in model.named_modules() if isinstance(m, AttentionBlock)]


def capture_inputs(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> tuple[list[torch.Tensor], object]:
    """Run the model once and return the input each of `modules` received (and the output)."""
    seen: list[torch.Tensor | None] = [None] * len(modules)
    hooks = [m.register_forward_pre_hook(lambda mod, args, k=k: seen.__setitem__(k, args[0].detach()))
             for k, m in enumerate(modules)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return [s for s in seen], out


class DetectionScore:
    """Grad-CAM target: objectness x class probability of prediction `index` for class `cls`."""

    def __init__(self, index: int, cls: int):
        self.index, self.cls = index, cls

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.index, 4] * output[self.index, 5 + self.cls]


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, index: int, cls: int) -> np.ndarray:
    """Grad-CAM map (H, W) in [0, 1] of `layer` for the prediction `index` / class `cls`."""
    from pytorch_grad_cam import GradCAM

    from models.yolo import DecodedOutput

    with GradCAM(model=DecodedOutput(model), target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[DetectionScore(index, cls)])[0]


def unletterbox(m: np.ndarray, shape0: tuple[int, int], ratio_pad: tuple) -> np.ndarray:
    """A map over the letterboxed input back to the original image's (h, w)."""
    h0, w0 = shape0
    H, W = ratio_pad[2]
    m = cv2.resize(m.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    gain, (dw, dh) = ratio_pad[0][0], ratio_pad[1]
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    m = m[top:top + int(round(h0 * gain)), left:left + int(round(w0 * gain))]
    return cv2.resize(m, (w0, h0), interpolation=cv2.INTER_LINEAR)


def value_range(name: str, m: np.ndarray) -> tuple[float, float]:
    """The colour scale (low, high) of a map called `name`.

    Gates (names holding "gate": sigmoid outputs) and Grad-CAM (which pytorch-grad-cam scales to
    [0, 1] itself) use the fixed range [0, 1], so a nearly flat gate (0.49-0.51) shows as one
    flat colour instead of a full-contrast picture. Other maps (effect norms, affinities) use
    [min(0, m.min()), m.max()]: their zero stays the bottom of the scale.
    """
    if "gate" in name or name == "gradcam":
        return 0.0, 1.0
    lo, hi = min(0.0, float(m.min())), float(m.max())
    return lo, (hi if hi > lo else lo + 1e-6)


def colour_bar(height: int, lo: float, hi: float, m_lo: float | None = None, m_hi: float | None = None,
               width: int | None = None) -> np.ndarray:
    """A white (height, width, 3) BGR panel with a JET colour bar from `lo` (bottom) to `hi`
    (top), its values written beside it; black marks show the map's own range [m_lo, m_hi]."""
    width = width or max(96, height // 6)
    panel = np.full((height, width, 3), 255, np.uint8)
    top, bottom = max(int(0.06 * height), 12), height - max(int(0.06 * height), 12)
    x0, x1 = 6, 6 + max(width // 5, 8)
    ramp = np.linspace(255, 0, max(bottom - top, 2)).astype(np.uint8)[:, None]
    panel[top:bottom, x0:x1] = cv2.applyColorMap(np.repeat(ramp, x1 - x0, 1), cv2.COLORMAP_JET)
    scale = max(width / 260, 0.3)
    thick = max(int(scale * 2), 1)

    def y_of(v: float) -> int:
        t = 0.0 if hi == lo else (v - lo) / (hi - lo)
        return int(round(bottom - 1 - min(max(t, 0.0), 1.0) * (bottom - top - 1)))

    for v in (hi, (lo + hi) / 2, lo):
        y = y_of(v)
        cv2.putText(panel, f"{v:.3g}", (x1 + 4, min(max(y + int(8 * scale), 10), height - 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if m_lo is not None and m_hi is not None:
        for v in (m_lo, m_hi):
            cv2.line(panel, (x0 - 4, y_of(v)), (x1 + 2, y_of(v)), (0, 0, 0), thick)
    return panel


def overlay(img_bgr: np.ndarray, m: np.ndarray, vrange: tuple[float, float] | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Colour-mapped (JET) map `m` (H, W) over a BGR image of the same size, followed on the
    right by a colour bar (see :func:`colour_bar`). `vrange` = (low, high) is the value scale
    (default: :func:`value_range` of an unnamed map); values outside it are clipped. Returns a
    (H, W + bar width, 3) uint8 image."""
    lo, hi = vrange if vrange is not None else value_range("", m)
    norm = np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    blended = cv2.addWeighted(img_bgr, 1 - alpha, heat, alpha, 0)
    bar = colour_bar(img_bgr.shape[0], lo, hi, float(m.min()), float(m.max()))
    return np.concatenate([blended, bar], 1)
