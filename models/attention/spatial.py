"""Spatial and mixed channel/spatial attention: gates that vary over positions.

CBAM, BAM, CA, GAM, TripletAttention, SimAM, ShuffleAttention, EMA, SGE, PSA, LSK, LSKA and
S2MLPv2. Parameter counts in the docstrings exclude the identity-start ``gate``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention._base import AttentionBlock, PooledBatchNorm, fit_groups, full_precision
from models.common import Conv
from models.registry import Channels, register

__all__ = ["CBAM", "BAM", "CA", "GAM", "TripletAttention", "SimAM", "ShuffleAttention", "EMA", "SGE", "PSA",
           "LSK", "LSKA", "S2MLPv2"]


def _mean_max(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean and max over `dim`, stacked along dim 1 (the 2-channel map CBAM and friends convolve)."""
    return torch.cat((x.mean(dim, keepdim=True), x.amax(dim, keepdim=True)), 1)


class CBAM(AttentionBlock):
    """Convolutional Block Attention Module (Woo et al., "CBAM", arXiv:1807.06521).

    Channel gate: ``Mc = sigmoid(W1 relu(W0 avg) + W1 relu(W0 max))``, one MLP (C -> C/r -> C,
    r = 16, no biases as in the paper's equation) shared by the average- and max-pooled
    descriptors; ``x' = Mc * x``. Spatial gate: ``Ms = sigmoid(conv7x7([mean_c(x'); max_c(x')]))``;
    output ``Ms * x'``. Parameters with ``h = C // r``: ``2*C*h + 2*k*k`` (k = 7: ``2*C*h + 98``).
    Any size.
    """

    zero_layers = ("mlp.2", "spatial")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 16, k: int = 7):
        super().__init__()
        h = max(c1 // r, 1)
        self.mlp = nn.Sequential(nn.Conv2d(c1, h, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(h, c1, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))).sigmoid()

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(_mean_max(x)).sigmoid()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)


class BAM(AttentionBlock):
    """Bottleneck Attention Module (Park et al., "BAM", arXiv:1807.06514).

    ``x + x * sigmoid(Mc(x) + Ms(x))``. Channel branch: ``BN(W1 relu(W0 avg(x) + b0) + b1)``,
    C -> C/r -> C, r = 16. Spatial branch: 1x1 conv C -> C/r, two 3x3 convs with dilation
    d = 4, 1x1 conv C/r -> 1, each conv followed by BN (ReLU on all but the last).
    Parameters with ``h = C // r``: channel ``2*C*h + h + C + 2*C``; spatial
    ``C*h + 2*h + 2*(9*h*h + 2*h) + h + 2``. Any size (the dilated convs are zero-padded).
    The channel-branch BN sees one value per image and channel: it normalises over the batch,
    with a single image in training it uses the running statistics (:class:`PooledBatchNorm`);
    with two images its output is +-1 whatever the input, so train with batches of 3 or more.
    """

    zero_layers = ("channel.3", "spatial.3")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 16, d: int = 4):
        super().__init__()
        h = max(c1 // r, 1)
        self.channel = nn.Sequential(nn.Conv2d(c1, h, 1), nn.ReLU(inplace=True), nn.Conv2d(h, c1, 1),
                                     PooledBatchNorm(c1))
        self.spatial = nn.Sequential(Conv(c1, h, 1, act=nn.ReLU()), Conv(h, h, 3, d=d, act=nn.ReLU()),
                                     Conv(h, h, 3, d=d, act=nn.ReLU()), Conv(h, 1, 1, act=False))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        m = (self.channel(x.mean((2, 3), keepdim=True)) + self.spatial(x)).sigmoid()
        return x + x * m


class CA(AttentionBlock):
    """Coordinate Attention (Hou et al., "Coordinate Attention for Efficient Mobile Network
    Design", arXiv:2103.02907).

    Pool along W and along H separately, concatenate the two strips, shared 1x1 conv
    C -> mid (``mid = max(8, C // r)``, r = 32) + BN + h-swish, split, one 1x1 conv (with bias)
    per direction mid -> C, sigmoid; ``x * a_h * a_w``. The conv before BN has no bias
    (redundant). Parameters: ``C*mid + 2*mid + 2*(mid*C + C)``. Any size.
    """

    zero_layers = ("conv_h", "conv_w")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 32, min_mid: int = 8):
        super().__init__()
        mid = max(min_mid, c1 // r)
        self.conv1 = Conv(c1, mid, 1, act=nn.Hardswish())
        self.conv_h = nn.Conv2d(mid, c1, 1)
        self.conv_w = nn.Conv2d(mid, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        strips = torch.cat((x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)), 2)  # (B, C, H+W, 1)
        fh, fw = self.conv1(strips).split((h, w), 2)
        return x * self.conv_h(fh).sigmoid() * self.conv_w(fw.transpose(2, 3)).sigmoid()


class GAM(AttentionBlock):
    """Global Attention Mechanism (Liu et al., "Global Attention Mechanism: Retain Information
    to Enhance Channel-Spatial Interactions", arXiv:2112.05561).

    Channel gate: the tensor permuted to (B, H, W, C), a two-layer MLP C -> C/r -> C (ReLU,
    r = 4) at every position, permuted back, sigmoid: no pooling, so the gate differs per
    position. Spatial gate: 7x7 conv C -> C/r, BN, ReLU, 7x7 conv C/r -> C, BN, sigmoid.
    ``x2 = Mc(x) * x; out = Ms(x2) * x2``. Parameters with ``h = C // r``:
    ``(C*h + h) + (h*C + C) + (49*C*h + 2*h) + (49*h*C + 2*C)``. Any size.
    """

    zero_layers = ("channel.2", "spatial.1")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 4, k: int = 7):
        super().__init__()
        h = max(c1 // r, 1)
        self.channel = nn.Sequential(nn.Linear(c1, h), nn.ReLU(inplace=True), nn.Linear(h, c1))
        self.spatial = nn.Sequential(Conv(c1, h, k, act=nn.ReLU()), Conv(h, c1, k, act=False))

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).sigmoid()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial(x).sigmoid()


class _ZGate(nn.Module):
    """Triplet attention branch: Z-pool ([max; mean] over dim 1), k x k conv 2 -> 1 + BN, sigmoid."""

    def __init__(self, k: int = 7):
        super().__init__()
        self.conv = Conv(2, 1, k, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1)
        return x * self.conv(z).sigmoid()


class TripletAttention(AttentionBlock):
    """Triplet Attention (Misra et al., "Rotate to Attend: Convolutional Triplet Attention
    Module", arXiv:2010.03102).

    Three branches, each a Z-pool + 7x7 conv + BN + sigmoid gate on a rotated view: (C, W)
    interaction (H pooled), (H, C) interaction (W pooled) and the plain (H, W) spatial
    branch (C pooled); the output is the average of the three gated tensors.
    Parameters: ``3 * (2*k*k + 2)`` = 300 for k = 7, independent of C. Any size.
    """

    zero_layers = ("cw.conv", "hc.conv", "hw.conv")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int | None = None, k: int = 7):
        super().__init__()
        self.cw = _ZGate(k)
        self.hc = _ZGate(k)
        self.hw = _ZGate(k)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        y_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (B, H, C, W): pool H
        y_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # (B, W, H, C): pool W
        return (y_cw + y_hc + self.hw(x)) * (1.0 / 3.0)


class SimAM(AttentionBlock):
    """SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional
    Neural Networks", ICML 2021; no arXiv version).

    Each neuron's inverse minimal energy ``1/e* = (x - mu)^2 / (4 (var + lambda)) + 1/2``
    with mean and variance over the channel's other ``n = H*W - 1`` positions, lambda = 1e-4;
    output ``x * sigmoid(1/e*)``. No parameters (the identity-start gate only). At 1x1,
    n is taken as 1 (the variance is 0) and every gate is sigmoid(1/2).
    """

    def __init__(self, c1: int | None = None, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        with full_precision(x):
            xf = x.float()
            d = (xf - xf.mean((2, 3), keepdim=True)).pow(2)
            v = d.sum((2, 3), keepdim=True) / n
            e_inv = d / (4 * (v + self.e_lambda)) + 0.5
            return (xf * e_inv.sigmoid()).to(x.dtype)


class ShuffleAttention(AttentionBlock):
    """Shuffle Attention (Zhang and Yang, "SA-Net: Shuffle Attention for Deep Convolutional
    Neural Networks", arXiv:2102.00240).

    Channels split into G = 64 groups (reduced so that C is divisible by 2G), each split in
    half: the channel half is scaled by ``sigmoid(w1 * mean_hw + b1)``, the spatial half by
    ``sigmoid(w2 * GN(x) + b2)`` (GroupNorm with one group per channel); halves are
    concatenated and the channels shuffled with 2 groups. w, b are per channel of a half
    group and shared by all groups (w = 0, b = 1 at init). Parameters with
    ``c' = C / (2G)``: ``6*c'``. Needs an even C. Any size.
    """

    group_args = ("g",)

    def __init__(self, c1: int, g: int = 64):
        super().__init__()
        self.g = fit_groups(c1, g, multiple=2)
        cg = c1 // (2 * self.g)
        self.cw = nn.Parameter(torch.zeros(cg))
        self.cb = nn.Parameter(torch.ones(cg))
        self.sw = nn.Parameter(torch.zeros(cg))
        self.sb = nn.Parameter(torch.ones(cg))
        self.gn = nn.GroupNorm(cg, cg)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        cw, cb, sw, sb = (p.view(1, -1, 1, 1) for p in (self.cw, self.cb, self.sw, self.sb))
        x0, x1 = x.reshape(b * self.g, c // self.g, h, w).chunk(2, 1)
        xc = x0 * (cw * x0.mean((2, 3), keepdim=True) + cb).sigmoid()
        xs = x1 * (sw * self.gn(x1) + sb).sigmoid()
        y = torch.cat((xc, xs), 1).reshape(b, 2, c // 2, h, w)
        return y.transpose(1, 2).reshape(b, c, h, w)


class EMA(AttentionBlock):
    """Efficient Multi-scale Attention (Ouyang et al., "Efficient Multi-Scale Attention Module
    with Cross-Spatial Learning", arXiv:2305.13563).

    Channels reshaped into G = 32 groups (reduced to a divisor of C), ``cg = C / G`` each.
    1x1 branch: coordinate-attention style strips (mean over W, mean over H) through a shared
    1x1 conv, sigmoid gates along H and W, GroupNorm. 3x3 branch: a 3x3 conv. Cross-spatial
    learning: the softmax of each branch's pooled channel vector is matrix-multiplied with the
    other branch's per-position features; the sum gives one spatial map per group, sigmoid,
    scale. Parameters: ``(cg*cg + cg) + (9*cg*cg + cg) + 2*cg``. Any size.
    """

    group_args = ("factor",)

    zero_layers = ("conv3x3", "gn")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, factor: int = 32):
        super().__init__()
        self.g = fit_groups(c1, factor)
        cg = c1 // self.g
        self.conv1x1 = nn.Conv2d(cg, cg, 1)
        self.conv3x3 = nn.Conv2d(cg, cg, 3, padding=1)
        self.gn = nn.GroupNorm(cg, cg)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bg, cg = b * self.g, c // self.g
        gx = x.reshape(bg, cg, h, w)
        strips = torch.cat((gx.mean(3, keepdim=True), gx.mean(2, keepdim=True).transpose(2, 3)), 2)
        ah, aw = self.conv1x1(strips).split((h, w), 2)
        x1 = self.gn(gx * ah.sigmoid() * aw.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(gx)
        with full_precision(x):
            x1f, x2f = x1.float(), x2.float()
            a1 = x1f.mean((2, 3)).softmax(-1).unsqueeze(1)  # (bg, 1, cg)
            a2 = x2f.mean((2, 3)).softmax(-1).unsqueeze(1)
            m = a1 @ x2f.reshape(bg, cg, h * w) + a2 @ x1f.reshape(bg, cg, h * w)  # (bg, 1, h*w)
        m = m.reshape(bg, 1, h, w).sigmoid().to(x.dtype)
        return (gx * m).reshape(b, c, h, w)


class SGE(AttentionBlock):
    """Spatial Group-wise Enhance (Li et al., "Spatial Group-wise Enhance: Improving Semantic
    Feature Learning in Convolutional Networks", arXiv:1905.09646).

    G = 64 groups (reduced to a divisor of C). Per group: similarity of each position to the
    group's mean vector, ``c = sum_ch x * mean_hw(x)``, normalised over positions (mean 0,
    std 1, biased std + eps), ``a = scale * c + shift`` (per-group, 0 and 1 at init),
    ``x * sigmoid(a)``. Parameters: ``2*G``. Any size (at 1x1 the normalised map is 0).
    """

    group_args = ("groups",)

    def __init__(self, c1: int, groups: int = 64, eps: float = 1e-5):
        super().__init__()
        self.g, self.eps = fit_groups(c1, groups), eps
        self.scale = nn.Parameter(torch.zeros(self.g))
        self.shift = nn.Parameter(torch.ones(self.g))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gx = x.reshape(b * self.g, c // self.g, h, w)
        with full_precision(x):
            xf = gx.float()
            t = (xf * xf.mean((2, 3), keepdim=True)).sum(1, keepdim=True)
            t = t - t.mean((2, 3), keepdim=True)
            t = t / (t.pow(2).mean((2, 3), keepdim=True).sqrt() + self.eps)
            a = (t.reshape(b, self.g, h, w) * self.scale.float().view(1, -1, 1, 1)
                 + self.shift.float().view(1, -1, 1, 1)).sigmoid()
        return (gx * a.reshape(b * self.g, 1, h, w).to(x.dtype)).reshape(b, c, h, w)


class PSA(AttentionBlock):
    """Polarized Self-Attention, parallel layout (Liu et al., "Polarized Self-Attention:
    Towards High-quality Pixel-wise Regression", arXiv:2107.00782).

    Channel-only branch: ``Wq`` C -> 1 (softmax over positions), ``Wv`` C -> C/2, their product
    (C/2 x 1), ``Wz`` C/2 -> C, LayerNorm, sigmoid. Spatial-only branch: ``Wq`` C -> C/2
    globally pooled and softmaxed over channels, ``Wv`` C -> C/2, their product (1 x HW),
    sigmoid. Output ``A_ch * x + A_sp * x``. All 1x1 convs with bias. Parameters with
    ``h = C // 2``: ``(C + 1) + (C*h + h) + (h*C + C) + 2*C + 2*(C*h + h)``. Any size.
    """

    zero_layers = ("ln", "sp_v")  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int):
        super().__init__()
        h = max(c1 // 2, 1)
        self.ch_q = nn.Conv2d(c1, 1, 1)
        self.ch_v = nn.Conv2d(c1, h, 1)
        self.ch_z = nn.Conv2d(h, c1, 1)
        self.ln = nn.LayerNorm([c1, 1, 1])
        self.sp_q = nn.Conv2d(c1, h, 1)
        self.sp_v = nn.Conv2d(c1, h, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        n = hh * ww
        q_ch, v_ch, q_sp, v_sp = self.ch_q(x), self.ch_v(x), self.sp_q(x), self.sp_v(x)
        h = v_ch.shape[1]
        with full_precision(x):
            z_ch = v_ch.float().reshape(b, h, n) @ q_ch.float().reshape(b, n, 1).softmax(1)  # (B, h, 1)
            q = q_sp.float().mean((2, 3)).softmax(-1).unsqueeze(1)  # (B, 1, h)
            z_sp = q @ v_sp.float().reshape(b, h, n)  # (B, 1, N)
        a_ch = self.ln(self.ch_z(z_ch.reshape(b, h, 1, 1).to(x.dtype))).sigmoid().to(x.dtype)
        a_sp = z_sp.reshape(b, 1, hh, ww).sigmoid().to(x.dtype)
        return x * a_ch + x * a_sp


class LSK(AttentionBlock):
    """Large Selective Kernel block (Li et al., "Large Selective Kernel Network for Remote
    Sensing Object Detection", arXiv:2303.09030).

    Two depth-wise convs in sequence (5x5, then 7x7 with dilation 3: receptive field 23),
    each projected C -> C/2 by a 1x1 conv; spatial selection: [mean; max] over the channels
    of both, 7x7 conv 2 -> 2, sigmoid, weighted sum of the two; 1x1 conv C/2 -> C gives the
    attention, output ``x * attention``. All convs with bias. Parameters with ``h = C // 2``:
    ``26*C + 50*C + 2*(C*h + h) + (4*49 + 2) + (h*C + C)``. Any size.
    """

    zero_layers = ("conv",)  # zero_start: see AttentionBlock.zero_layers
    unit_bias_layers = ("conv",)  # the map multiplies x directly (no sigmoid): bias 1, map 1

    def __init__(self, c1: int):
        super().__init__()
        h = max(c1 // 2, 1)
        self.conv0 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, 7, padding=9, groups=c1, dilation=3)
        self.conv1 = nn.Conv2d(c1, h, 1)
        self.conv2 = nn.Conv2d(c1, h, 1)
        self.squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(h, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.conv0(x)
        f2 = self.conv_spatial(f1)
        f1, f2 = self.conv1(f1), self.conv2(f2)
        s = self.squeeze(_mean_max(torch.cat((f1, f2), 1))).sigmoid()
        return x * self.conv(f1 * s[:, :1] + f2 * s[:, 1:])


class LSKA(AttentionBlock):
    """Large Separable Kernel Attention (Lau et al., "Large Separable Kernel Attention:
    Rethinking the Large Kernel Attention Design in CNN", arXiv:2309.01643).

    VAN's large-kernel attention with every depth-wise k x k conv split into 1 x k and
    k x 1: a local depth-wise pair of size ``2d - 1``, a dilated depth-wise pair of size
    ``k // d`` (made odd) with dilation d, then a 1x1 conv; output ``x * attention``.
    k = 23 by default with d = 2 for k <= 11 and 3 above (5 and 7 taps for k = 23).
    All convs with bias. Parameters: ``C*C + C + 2*(k0*C + C) + 2*(kd*C + C)``
    (``C*C + 29*C`` for k = 23). Any size.
    """

    zero_layers = ("conv1",)  # zero_start: see AttentionBlock.zero_layers
    unit_bias_layers = ("conv1",)  # the map multiplies x directly (no sigmoid): bias 1, map 1

    def __init__(self, c1: int, k: int = 23, d: int | None = None):
        super().__init__()
        d = d or (2 if k <= 11 else 3)
        k0 = 2 * d - 1
        kd = k // d if (k // d) % 2 else k // d + 1
        self.conv0h = nn.Conv2d(c1, c1, (1, k0), padding=(0, k0 // 2), groups=c1)
        self.conv0v = nn.Conv2d(c1, c1, (k0, 1), padding=(k0 // 2, 0), groups=c1)
        self.conv_spatial_h = nn.Conv2d(c1, c1, (1, kd), padding=(0, (kd // 2) * d), groups=c1, dilation=d)
        self.conv_spatial_v = nn.Conv2d(c1, c1, (kd, 1), padding=((kd // 2) * d, 0), groups=c1, dilation=d)
        self.conv1 = nn.Conv2d(c1, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x))))
        return x * self.conv1(a)


def _shift(t: torch.Tensor, moves: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Spatial shift of a channels-last (B, H, W, C) tensor: channel quarter i moves one step
    along dim ``moves[i][0]`` (1 = H, 2 = W) in direction ``moves[i][1]``; borders repeat."""
    c = t.shape[-1]
    q = c // 4
    parts = t.split((q, q, q, c - 3 * q), -1)
    out = []
    for p, (dim, step) in zip(parts, moves):
        n = p.shape[dim]
        if step > 0:  # out[i] = p[i - 1], out[0] = p[0]
            p = torch.cat((p.narrow(dim, 0, 1), p.narrow(dim, 0, n - 1)), dim)
        else:  # out[i] = p[i + 1], out[-1] = p[-1]
            p = torch.cat((p.narrow(dim, 1, n - 1), p.narrow(dim, n - 1, 1)), dim)
        out.append(p)
    return torch.cat(out, -1)


class S2MLPv2(AttentionBlock):
    """Spatial-shift block of S2-MLPv2 (Yu et al., "S2-MLPv2: Improved Spatial-Shift MLP
    Architecture for Vision", arXiv:2108.01072).

    ``x + MLP_out(SplitAttention(S1(x1), S2(x2), x3))`` with ``[x1, x2, x3] = MLP_in(LN(x))``:
    the LayerNorm-ed per-pixel features are expanded to 3C and split in three; the first two
    thirds are spatially shifted (four channel quarters moved one pixel right, left, down, up;
    the second third in the order down, up, right, left), the third is left alone. Split
    attention: ``a = mean_hw(x1 + x2 + x3)``, ``W2 gelu(W1 a)`` (C -> C -> 3C, no biases),
    softmax over the three parts, weighted sum; then a C -> C projection. Parameters:
    ``2*C + (3*C*C + 3*C) + C*C + 3*C*C + (C*C + C)`` = ``8*C*C + 6*C``. Any size (a shift
    at a border repeats the edge; at 1x1 shifts are the identity).
    """

    SHIFT1 = ((2, 1), (2, -1), (1, 1), (1, -1))
    SHIFT2 = ((1, 1), (1, -1), (2, 1), (2, -1))

    zero_layers = ("fc_out",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int):
        super().__init__()
        self.norm = nn.LayerNorm(c1)
        self.fc_in = nn.Linear(c1, 3 * c1)
        self.sa1 = nn.Linear(c1, c1, bias=False)
        self.act = nn.GELU()
        self.sa2 = nn.Linear(c1, 3 * c1, bias=False)
        self.fc_out = nn.Linear(c1, c1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        t = self.fc_in(self.norm(x.permute(0, 2, 3, 1)))  # (B, H, W, 3C)
        x1, x2, x3 = t.split((c, c, c), -1)
        parts = torch.stack((_shift(x1, self.SHIFT1), _shift(x2, self.SHIFT2), x3), 1)  # (B, 3, H, W, C)
        logits = self.sa2(self.act(self.sa1(parts.sum(1).mean((1, 2))))).reshape(b, 3, 1, 1, c)
        with full_precision(x):
            a = logits.float().softmax(1).to(parts.dtype)
        y = self.fc_out((parts * a).sum(1))
        return x + y.permute(0, 3, 1, 2).to(x.dtype)


register("CBAM", CBAM, Channels.KEEP, attention=True, aliases=("CBAMBlock",))
register("BAM", BAM, Channels.KEEP, attention=True, aliases=("BAMBlock",))
register("CA", CA, Channels.KEEP, attention=True, aliases=("CoordAtt",), channel_args=2)  # blogs: [inp, oup]
register("GAM", GAM, Channels.KEEP, attention=True, aliases=("GAMAttention",))
register("TripletAttention", TripletAttention, Channels.KEEP, attention=True, aliases=("Triplet",))
register("SimAM", SimAM, Channels.KEEP, attention=True)
register("ShuffleAttention", ShuffleAttention, Channels.KEEP, attention=True)
register("EMA", EMA, Channels.KEEP, attention=True)
register("SGE", SGE, Channels.KEEP, attention=True, aliases=("SpatialGroupEnhance",))
register("PSA", PSA, Channels.KEEP, attention=True, aliases=("ParallelPolarizedSelfAttention",))
register("LSK", LSK, Channels.KEEP, attention=True, aliases=("LSKblock",))
register("LSKA", LSKA, Channels.KEEP, attention=True)
register("S2MLPv2", S2MLPv2, Channels.KEEP, attention=True, aliases=("S2Attention",))
