"""Model utilities: Conv+BN folding, parameter and FLOP counting, seeding, timing."""

from __future__ import annotations

import copy
import math
import os
import random
import time

import numpy as np
import torch
from torch import nn

from utils.logging import LOGGER


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A single Conv2d equal to `bn(conv(x))` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).requires_grad_(False).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    b_conv = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (b_conv - bn.running_mean) * scale)
    return fused


def _dummy_input(model: nn.Module, img_size: int | tuple[int, int], ch: int) -> torch.Tensor:
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return torch.zeros(1, ch, h, w, device=next(model.parameters()).device)


def thop_flops(model: nn.Module, img_size: int | tuple[int, int] = 640, ch: int = 3) -> float:
    """GFLOPs of thop's module count (ultralytics-thop's ``profile_origin``: hooks on conv, norm
    and linear modules; nearest-neighbour upsampling copies count 0), 2 FLOPs per MAC.

    Functional products (`matmul`, `bmm`, `einsum`, `@`) inside attention are left out here:
    :func:`matmul_flops` counts them (``thop.profile`` would count them too, so it is not used).
    """
    import thop

    im = _dummy_input(model, img_size, ch)
    macs = thop.profile_origin(copy.deepcopy(model).float().eval(), inputs=(im,), verbose=False)[0]
    return macs * 2 / 1e9


_MATMUL_OPS = ("mm", "addmm", "bmm", "baddbmm")


def matmul_flops(model: nn.Module, img_size: int | tuple[int, int] = 640, ch: int = 3) -> float:
    """GFLOPs of the functional matrix products thop misses (attention maps, einsum, sdpa).

    Measured with `torch.utils.flop_counter.FlopCounterMode`; products made by `nn.Linear`
    modules are subtracted because thop already counts those.
    """
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).float().eval()
    linear = [0]

    def hook(mod: nn.Linear, _inp, out: torch.Tensor) -> None:
        linear[0] += 2 * mod.in_features * out.numel()

    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            mod.register_forward_hook(hook)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(_dummy_input(model, img_size, ch))
    total = 0
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        if name in _MATMUL_OPS or "scaled_dot_product" in name:
            total += n
    return max(total - linear[0], 0) / 1e9


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 640, ch: int = 3) -> float:
    """GFLOPs of one forward pass: thop's module count plus the attention products it misses."""
    return thop_flops(model, img_size, ch) + matmul_flops(model, img_size, ch)


def model_info(model: nn.Module, verbose: bool = False, img_size: int | tuple[int, int] = 640) -> dict:
    """Log a one-line summary (layers, parameters, gradients, GFLOPs) and return it as a dict."""
    n_p = sum(x.numel() for x in model.parameters())
    n_g = sum(x.numel() for x in model.parameters() if x.requires_grad)
    n_l = len(list(model.modules()))
    if verbose:
        LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20}")
        for i, (name, p) in enumerate(model.named_parameters()):
            LOGGER.info(f"{i:5g} {name:>40} {p.requires_grad!s:>9} {p.numel():12g} {list(p.shape)!s:>20}")
    try:
        gflops = count_flops(model, img_size)
    except Exception as e:  # a model that cannot run a dummy forward still gets its counts
        LOGGER.warning(f"WARNING: GFLOPs not computed: {e}")
        gflops = float("nan")
    name = getattr(model, "yaml_file", type(model).__name__).replace(".yaml", "")
    fused = " (fused)" if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) else ""
    LOGGER.info(f"{name} summary{fused}: {n_l} layers, {n_p:,} parameters, {n_g:,} gradients, {gflops:.1f} GFLOPs")
    return {"layers": n_l, "parameters": n_p, "gradients": n_g, "gflops": gflops}


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        os.environ["PYTHONHASHSEED"] = str(seed)


def time_sync() -> float:
    """Wall time after waiting for queued CUDA work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def de_parallel(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model


def multi_scale_sizes(imgsz: int, gs: int, floor: int | None = None) -> list[int]:
    """The training sizes ``--multi-scale`` picks from: multiples of the grid stride `gs` from
    0.5 x to 1.5 x `imgsz`, none below `floor` (default 2 x `gs`, train.py's minimum --img: at
    one stride-`gs` cell the last feature map is 1x1 and batch norm fails on a batch of 1)."""
    floor = 2 * gs if floor is None else floor
    lo = max(math.ceil(imgsz * 0.5 / gs) * gs, math.ceil(floor / gs) * gs)
    hi = max(int(imgsz * 1.5) // gs * gs, lo)
    return list(range(lo, hi + 1, gs))


def multi_scale_resize(imgs: torch.Tensor, imgsz: int, gs: int, floor: int | None = None) -> torch.Tensor:
    """A batch (B, C, H, W) resized (bilinear) so its long side is a random size of
    :func:`multi_scale_sizes`; both sides stay multiples of `gs` and at least `floor`."""
    floor = 2 * gs if floor is None else floor
    sz = random.choice(multi_scale_sizes(imgsz, gs, floor))
    sf = sz / max(imgs.shape[2:])
    if sf == 1:
        return imgs
    ns = [max(math.ceil(x * sf / gs) * gs, floor) for x in imgs.shape[2:]]
    return nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)
