"""Channel attention: one weight per channel (and image), computed from global statistics.

SE, ECA, GC, SK, SOCA and NAM. Each class docstring names the paper, its defaults and the
parameter count (excluding the identity-start ``gate``, see :mod:`models.attention._base`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention._base import AttentionBlock, PooledBatchNorm, fit_groups, full_precision, odd_kernel
from models.common import BN_EPS, BN_MOMENTUM, Conv
from models.registry import Channels, register

__all__ = ["SE", "ECA", "GC", "SK", "SOCA", "NAM"]


class SE(AttentionBlock):
    """Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507).

    ``x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)`` with a hidden width ``h = C // r``, r = 16.
    Parameters: ``2*C*h + h + C``. Works at any size, 1x1 included.
    """

    zero_layers = ("fc2",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 16):
        super().__init__()
        h = max(c1 // r, 1)
        self.fc1 = nn.Conv2d(c1, h, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(h, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


class ECA(AttentionBlock):
    """Efficient Channel Attention (Wang et al., "ECA-Net", arXiv:1910.03151).

    A 1-D convolution (no bias) of kernel k across the channel descriptor ``mean_hw(x)``,
    sigmoid, scale. ``k = |log2(C)/gamma + b/gamma|`` made odd, gamma = 2, b = 1
    (k = 3 for C = 64, 5 for C = 512) unless given. Parameters: ``k``. Any size.
    """

    zero_layers = ("conv",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, k: int | None = None, gamma: float = 2.0, b: float = 1.0):
        super().__init__()
        self.k = int(k) if k else odd_kernel(c1, gamma, b)
        self.conv = nn.Conv1d(1, 1, self.k, padding=self.k // 2, bias=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C): channels as a sequence
        w = self.conv(s).sigmoid()
        return x * w.transpose(1, 2).unsqueeze(-1)


class GC(AttentionBlock):
    """Global Context block (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation
    Networks and Beyond", arXiv:1904.11492).

    Context modelling: a 1x1 conv C->1 gives one logit per position, softmax over H*W, the
    attention-weighted sum of x is the context vector. Transform: 1x1 conv C->C/r,
    LayerNorm, ReLU, 1x1 conv C/r->C (r = 16, biases on). Fusion: added to every position.
    Parameters with ``h = C // r``: ``(C + 1) + (C*h + h) + 2*h + (h*C + C)``. Any size.
    """

    zero_layers = ("transform.3",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 16):
        super().__init__()
        h = max(c1 // r, 1)
        self.key = nn.Conv2d(c1, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(c1, h, 1), nn.LayerNorm([h, 1, 1]), nn.ReLU(inplace=True), nn.Conv2d(h, c1, 1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        logits = self.key(x)
        with full_precision(x):
            w = logits.float().reshape(b, hh * ww, 1).softmax(1)  # (B, N, 1)
            ctx = x.float().reshape(b, c, hh * ww) @ w  # (B, C, 1)
        ctx = ctx.reshape(b, c, 1, 1).to(x.dtype)
        return x + self.transform(ctx)


class SK(AttentionBlock):
    """Selective Kernel convolution (Li et al., "Selective Kernel Networks", arXiv:1903.06586).

    Split: M = 2 grouped 3x3 convolutions (dilation 1 and 2, the paper's stand-in for 5x5),
    G = 32 groups (reduced to a divisor of C), each with BN + ReLU. Fuse: ``z = relu(BN(W s))``
    with ``s = mean_hw(sum of branches)``, ``d = max(C / r, L)``, r = 16, L = 32. Select: one
    d->C matrix per branch (no bias), softmax across branches per channel, weighted sum.
    The output is the selected feature map (the SK convolution itself, no residual).
    Parameters with ``g = groups``: ``M*(9*C*C/g + 2*C) + (C*d + 2*d) + M*d*C``.
    Any size. The BN on the pooled vector takes batch statistics; a single image in training
    uses the running statistics (:class:`PooledBatchNorm`).
    """

    group_args = ("g",)

    def __init__(self, c1: int, m: int = 2, g: int = 32, r: int = 16, l: int = 32):  # noqa: E741
        super().__init__()
        self.m = m
        g = fit_groups(c1, g)
        d = max(c1 // r, l)
        self.branches = nn.ModuleList(Conv(c1, c1, 3, g=g, d=i + 1, act=nn.ReLU()) for i in range(m))
        self.fc = Conv(c1, d, 1, act=nn.ReLU())
        self.fc.bn = PooledBatchNorm(d, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.select = nn.Conv2d(d, m * c1, 1, bias=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        u = [branch(x) for branch in self.branches]
        s = torch.stack(u, 1).sum(1).mean((2, 3), keepdim=True)
        logits = self.select(self.fc(s)).reshape(b, self.m, c, 1, 1)
        with full_precision(x):
            a = logits.float().softmax(1).to(u[0].dtype)
        return (torch.stack(u, 1) * a).sum(1)


def sqrtm_newton_schulz(a: torch.Tensor, iterations: int = 5, eps: float = 1e-5) -> torch.Tensor:
    """Square root of a batch of SPD matrices by the coupled Newton-Schulz iteration.

    Pre-normalise by the trace (so the iteration converges), iterate
    ``T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z`` from ``Y0 = A / tr(A), Z0 = I``, then
    post-compensate by ``sqrt(tr(A))``. Only matmuls: exportable, differentiable.
    """
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype).expand_as(a)
    norm = (a * eye).sum((-2, -1), keepdim=True) + eps
    y = a / norm
    z = eye
    for i in range(iterations):
        t = 0.5 * (3.0 * eye - (y if i == 0 else z @ y))
        if i < iterations - 1:
            z = t if i == 0 else t @ z
        y = y @ t
    return y * norm.sqrt()


class SOCA(AttentionBlock):
    """Second-order Channel Attention (Dai et al., "Second-order Attention Network for Single
    Image Super-Resolution", CVPR 2019; no arXiv version).

    Covariance pooling: ``S = X I_hat X^T`` with ``I_hat = (I - 11^T/N) / N`` over the
    N = H*W positions (the centred channel covariance), normalised by its square root
    computed with ``iterations`` = 5 Newton-Schulz steps; the channel descriptor is the mean of
    each row. Gate: ``sigmoid(W2 relu(W1 z + b1) + b2)``, ``h = C // r``, r = 16.
    Parameters: ``2*C*h + h + C``. Cost: about ``3 * iterations * C^3`` multiply-adds per image.
    At 1x1 the covariance is 0 (``eps`` keeps it finite) and the gate depends on the biases only.
    """

    zero_layers = ("fc2",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 16, iterations: int = 5, eps: float = 1e-5):
        super().__init__()
        h = max(c1 // r, 1)
        self.iterations, self.eps = iterations, eps
        self.fc1 = nn.Conv2d(c1, h, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(h, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        with full_precision(x):
            f = x.float().reshape(b, c, hh * ww)
            f = f - f.mean(2, keepdim=True)
            cov = f @ f.transpose(1, 2) / (hh * ww)
            z = sqrtm_newton_schulz(cov, self.iterations, self.eps).mean(2)
        z = z.reshape(b, c, 1, 1).to(x.dtype)
        return x * self.fc2(self.act(self.fc1(z))).sigmoid()


class NAM(AttentionBlock):
    """Normalization-based Attention Module, channel part (Liu et al., "NAM:
    Normalization-based Attention Module", arXiv:2111.12419).

    ``x * sigmoid(w * BN(x))`` with ``w_i = |gamma_i| / sum_j |gamma_j|`` from the batch
    norm's own scales (absolute values keep the weights a convex combination). The paper's
    spatial "pixel normalisation" needs one scale per pixel, i.e. a fixed input size, and is
    left out (as in the authors' release). The paper also adds an L1 penalty on the gammas
    to the loss; that is a training option, not part of the block. Parameters: ``2*C``.
    Any size; in training the batch norm needs more than one value per channel.
    """

    def __init__(self, c1: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        w = self.bn.weight.abs()
        w = (w / w.sum()).reshape(1, -1, 1, 1)
        return x * (self.bn(x) * w).sigmoid()


register("SE", SE, Channels.KEEP, attention=True, aliases=("SEAttention",))
register("ECA", ECA, Channels.KEEP, attention=True, aliases=("ECAAttention",))
register("GC", GC, Channels.KEEP, attention=True, aliases=("GlobalContext",))
register("SK", SK, Channels.KEEP, attention=True, aliases=("SKAttention",))
register("SOCA", SOCA, Channels.KEEP, attention=True)
register("NAM", NAM, Channels.KEEP, attention=True, aliases=("NAMAttention",))
