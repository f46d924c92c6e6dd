"""YOLOv5 building blocks.

Layer order and attribute names (``conv``, ``bn``, ``cv1``, ``m`` ...) follow YOLOv5 v6/v7
exactly: official checkpoints are loaded by parameter name into these modules.

The attention blocks live in :mod:`models.attention` and are re-exported here, so that
``from models.common import CBAM`` works as in other YOLOv5 forks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.registry import Channels, register

# YOLOv5 trains its batch norms with these settings; official checkpoints carry them too.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | tuple[int, int], p: int | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the spatial size for stride 1 ('same' padding)."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. After `fuse()` the batch norm is folded away.

    ``act=True`` takes a copy of ``Conv.default_act`` (SiLU; a model YAML's ``activation:`` key
    changes it while that model is built), ``False`` means none, a module is used as given.
    """

    default_act: nn.Module = nn.SiLU(inplace=True)

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        if act is True:
            self.act = copy.deepcopy(Conv.default_act)
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DWConv(Conv):
    """Depth-wise convolution: groups = gcd(c1, c2)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool | nn.Module = True):
        import math

        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels into channels) then a Conv; the YOLOv5 v1-v5 stem."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool | nn.Module = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(parts, 1))


class Bottleneck(nn.Module):
    """1x1 conv to c2*e channels, 3x3 conv back to c2, plus the input when shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convolutions: two 1x1 branches, `n` bottlenecks on the first."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling with parallel max-pools of sizes `k` (YOLOv3/v4 style)."""

    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: one k x k max-pool applied three times in sequence (same result as SPP(5, 9, 13))."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        p1 = self.m(x)
        p2 = self.m(p1)
        return self.cv2(torch.cat((x, p1, p2, self.m(p2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension`."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


register("Conv", Conv, Channels.IN_OUT)
register("DWConv", DWConv, Channels.IN_OUT)
register("Focus", Focus, Channels.IN_OUT)
register("Bottleneck", Bottleneck, Channels.IN_OUT)
register("C3", C3, Channels.IN_OUT, repeats=True)
register("SPP", SPP, Channels.IN_OUT)
register("SPPF", SPPF, Channels.IN_OUT)
register("Concat", Concat, Channels.CONCAT)
register("nn.Upsample", nn.Upsample, Channels.PASS, aliases=("Upsample",))
register("nn.Identity", nn.Identity, Channels.PASS, aliases=("Identity",))
register("nn.BatchNorm2d", nn.BatchNorm2d, Channels.BN, aliases=("BatchNorm2d",))

# Attention blocks register themselves on import; re-export them for `from models.common import X`.
from models.attention import *  # noqa: E402,F401,F403
