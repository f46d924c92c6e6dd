"""Self-attention: outputs mix features from other positions with data-dependent weights.

DA (DANet), CC (CCNet), NonLocal, MHSA (BoTNet), DoubleAttention (A2-Nets) and CoT.
Softmax and matmul work runs in fp32 with autocast disabled; global (N x N) attention is
chunked over queries (see :func:`models.attention._base.softmax_attention`). Parameter counts
in the docstrings exclude the identity-start ``gate``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention._base import AttentionBlock, fit_groups, full_precision, softmax_attention
from models.common import Conv
from models.registry import Channels, register

__all__ = ["DA", "CC", "NonLocal", "MHSA", "DoubleAttention", "CoT"]


def _tokens(t: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, H*W, C // heads)."""
    b, c, h, w = t.shape
    return t.reshape(b, heads, c // heads, h * w).transpose(-1, -2)


class DA(AttentionBlock):
    """Dual Attention (Fu et al., "Dual Attention Network for Scene Segmentation",
    arXiv:1809.02983): position attention and channel attention, run in parallel.

    Position: query/key 1x1 convs C -> C/8, value 1x1 conv C -> C (biases on),
    ``S = softmax_over_keys(Q^T K)`` (N x N), ``P = V S^T``. Channel: ``X = softmax(A A^T)``
    (C x C, rows normalised, no parameters), ``Q_c = X A``. Output
    ``x + alpha * P + beta * Q_c`` with alpha = beta = 0 at init: each module's residual
    ``x + scale * f(x)``, summed with the shared input counted once, so the block is the
    identity at init. Parameters with ``c8 = C // r``: ``2*(C*c8 + c8) + (C*C + C) + 2``.
    Any size; position attention costs O((HW)^2) time.
    """

    zero_layers = ("v",)  # zero_start: see AttentionBlock.zero_layers

    @torch.no_grad()
    def zero_start(self) -> bool:
        """Position branch: value conv zeroed (adds 0); channel branch (no weights): beta back to the
        paper's 0, a trained scale from there."""
        super().zero_start()
        self.beta.zero_()
        return True

    def __init__(self, c1: int, r: int = 8):
        super().__init__()
        c8 = max(c1 // r, 1)
        self.q = nn.Conv2d(c1, c8, 1)
        self.k = nn.Conv2d(c1, c8, 1)
        self.v = nn.Conv2d(c1, c1, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def opening(self) -> float:
        """``gate * (|alpha| + |beta|) / 2``: 0 at the paper's init and under identity start."""
        return float(self.gate.float().mean() * (self.alpha.float().abs() + self.beta.float().abs()).mean() / 2)

    @torch.no_grad()
    def identity_start(self) -> DA:
        """Gate 0 with alpha = beta = 1, so that fading the gate in (models/gates.py) reaches a unit residual."""
        self.alpha.fill_(1.0)
        self.beta.fill_(1.0)
        return super().identity_start()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = softmax_attention(_tokens(self.q(x)), _tokens(self.k(x)), _tokens(self.v(x)))  # (B, 1, N, C)
        with full_precision(x):
            a = x.float().reshape(b, c, h * w)
            chan = ((a @ a.transpose(1, 2)).softmax(-1) @ a).reshape(b, c, h, w)
            pos = pos.transpose(-1, -2).reshape(b, c, h, w)
            y = x.float() + self.alpha.float() * pos + self.beta.float() * chan
        return y.to(x.dtype)


class CC(AttentionBlock):
    """Criss-Cross attention (Huang et al., "CCNet: Criss-Cross Attention for Semantic
    Segmentation", arXiv:1811.11721), recurrent (RCCA).

    Query/key 1x1 convs C -> C/8, value 1x1 conv C -> C (biases on). Each position attends
    to the H + W - 1 positions of its row and column: column energies with the position
    itself set to -inf (it is already in the row), one softmax over the H + W energies,
    aggregation of the values along the same paths, ``gamma * out + x`` with gamma = 0 at init.
    Applied ``recurrence`` = 2 times with the same weights, so every position reaches every
    other. Parameters with ``c8 = C // r``: ``2*(C*c8 + c8) + (C*C + C) + 1``. Any size.
    """

    zero_layers = ("v",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 8, recurrence: int = 2):
        super().__init__()
        c8 = max(c1 // r, 1)
        self.recurrence = recurrence
        self.q = nn.Conv2d(c1, c8, 1)
        self.k = nn.Conv2d(c1, c8, 1)
        self.v = nn.Conv2d(c1, c1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    @torch.no_grad()
    def opening(self) -> float:
        """``gate * |gamma|``: 0 at the paper's init and under identity start."""
        return float(self.gate.float().mean() * self.gamma.float().abs().mean())

    @torch.no_grad()
    def identity_start(self) -> CC:
        """Gate 0 with gamma = 1, so that fading the gate in (models/gates.py) reaches a unit residual."""
        self.gamma.fill_(1.0)
        return super().identity_start()

    def criss_cross(self, x: torch.Tensor) -> torch.Tensor:
        """One pass: every output position depends on its own row and column only."""
        h = x.shape[2]
        q, k, v = self.q(x), self.k(x), self.v(x)
        with full_precision(x):
            q, k, v = q.float(), k.float(), v.float()
            # column path, batched over (b, w): (h x c8) @ (c8 x g); row path over (b, h)
            e_col = (q.permute(0, 3, 2, 1) @ k.permute(0, 3, 1, 2)).transpose(1, 2)  # (b, h, w, g)
            i = torch.arange(h, device=x.device)
            e_col = e_col.masked_fill(i.view(h, 1, 1) == i.view(1, 1, h), float("-inf"))  # the position itself
            e_row = q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3)  # (b, h, w, v)
            att = torch.cat((e_col, e_row), -1).softmax(-1)  # one softmax over the H + W entries
            out_col = att[..., :h].transpose(1, 2) @ v.permute(0, 3, 2, 1)  # (b, w, h, c)
            out_row = att[..., h:] @ v.permute(0, 2, 3, 1)  # (b, h, w, c)
            out = (out_col.transpose(1, 2) + out_row).permute(0, 3, 1, 2)
            y = x.float() + self.gamma.float() * out
        return y.to(x.dtype)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.criss_cross(x)
        return x


class NonLocal(AttentionBlock):
    """Non-local block, embedded Gaussian (Wang et al., "Non-local Neural Networks",
    arXiv:1711.07971).

    theta/phi/g 1x1 convs C -> C/r (r = 2, biases on), ``y = softmax(theta^T phi) g``
    over all positions, ``z = BN(W_z y) + x`` with W_z a 1x1 conv C/r -> C (no bias, followed
    by BN whose scale is 0 at init, as the paper does so the block starts as the identity).
    Parameters with ``h = C // r``: ``3*(C*h + h) + h*C + 2*C``. Any size; O((HW)^2) time.
    The paper's optional max-pool subsampling of phi and g is not used.
    """

    zero_layers = ("w",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 2):
        super().__init__()
        h = max(c1 // r, 1)
        self.theta = nn.Conv2d(c1, h, 1)
        self.phi = nn.Conv2d(c1, h, 1)
        self.g = nn.Conv2d(c1, h, 1)
        self.w = Conv(h, c1, 1, act=False)
        nn.init.zeros_(self.w.bn.weight)

    @torch.no_grad()
    def opening(self) -> float:
        """``gate * mean |BN scale|`` of the output batch norm (0 at init); once fused (no BN), the gate
        times the output conv's mean |weight| (0 after identity start, too)."""
        bn = getattr(self.w, "bn", None)
        scale = bn.weight if bn is not None else self.w.conv.weight
        return float(self.gate.float().mean() * scale.float().abs().mean())

    @torch.no_grad()
    def identity_start(self) -> NonLocal:
        """Gate 0 with the output BN's scale 1 and shift 0 (PyTorch's BN init), so that fading the gate in
        (models/gates.py) reaches a unit residual. A fused block keeps its folded conv."""
        bn = getattr(self.w, "bn", None)
        if bn is not None:
            bn.weight.fill_(1.0)
            bn.bias.zero_()
        return super().identity_start()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = softmax_attention(_tokens(self.theta(x)), _tokens(self.phi(x)), _tokens(self.g(x)))
        y = y.transpose(-1, -2).reshape(b, -1, h, w).to(x.dtype)
        return x + self.w(y)


class MHSA(AttentionBlock):
    """Multi-head self-attention of BoTNet (Srinivas et al., "Bottleneck Transformers for
    Visual Recognition", arXiv:2101.11605), with 2-D relative position logits.

    q, k, v 1x1 convs C -> C (no bias), ``heads`` = 4 (reduced to a divisor of C), logits
    ``q k^T + q r^T`` with ``r = R_h[dy] + R_w[dx]`` (relative offsets between query and key
    rows and columns; tables shared by the heads), q scaled by ``d^-1/2``, softmax over
    keys, no output projection. BoTNet sizes its tables to one feature-map size; here the
    tables hold offsets -max_rel..max_rel (max_rel = 31) and larger offsets are clipped, so
    it runs at any size and equals BoTNet for H, W <= max_rel + 1.
    Parameters with ``d = C / heads``: ``3*C*C + 2*(2*max_rel + 1)*d``.
    O((HW)^2) time, O(heads * chunk * HW) memory at inference.
    """

    group_args = ("heads",)

    def __init__(self, c1: int, heads: int = 4, max_rel: int = 31):
        super().__init__()
        self.heads = fit_groups(c1, heads)
        self.d = c1 // self.heads
        self.max_rel = max_rel
        self.qkv = nn.Conv2d(c1, 3 * c1, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * max_rel + 1, self.d) * self.d ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * max_rel + 1, self.d) * self.d ** -0.5)

    def _rel(self, table: torch.Tensor, n: int) -> torch.Tensor:
        """(n, n, d): the embedding of offset (key - query), clipped, for query i and key j."""
        i = torch.arange(n, device=table.device)
        idx = (i.view(1, n) - i.view(n, 1)).clamp(-self.max_rel, self.max_rel) + self.max_rel
        return table[idx]

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        m, n = self.heads, h * w
        q, k, v = self.qkv(x).chunk(3, 1)
        with full_precision(x):
            q = _tokens(q.float(), m) * self.d ** -0.5  # (B, m, N, d)
            k, v = _tokens(k.float(), m), _tokens(v.float(), m)
            qg = q.reshape(b, m, h, w, self.d)
            # relative logits: query row y with key row k uses R_h[k - y]; columns likewise
            lh = (qg @ self._rel(self.rel_h.float(), h).transpose(1, 2)).reshape(b, m, n, h)
            lw = (qg.transpose(2, 3) @ self._rel(self.rel_w.float(), w).transpose(1, 2)).transpose(2, 3)
            lw = lw.reshape(b, m, n, w)

            def bias(s: int, e: int) -> torch.Tensor:
                return (lh[:, :, s:e, :, None] + lw[:, :, s:e, None, :]).reshape(b, m, e - s, n)

            y = softmax_attention(q, k, v, 1.0, bias)  # (B, m, N, d)
        return y.transpose(-1, -2).reshape(b, c, h, w).to(x.dtype)


class DoubleAttention(AttentionBlock):
    """Double attention block (Chen et al., "A^2-Nets: Double Attention Networks",
    arXiv:1810.11579).

    Feature gathering: ``G = A softmax_N(B)^T`` (c_m x c_n global descriptors: second-order
    attention pooling of features A by n attention maps B, each softmaxed over positions).
    Feature distribution: ``Z = G softmax_n(V)`` (each position picks a mix of the
    descriptors). A, B, V are 1x1 convs C -> c_m, c_n, c_n; a 1x1 conv c_m -> C restores
    the width and the result is added to the input. c_m = c_n = C / r, r = 4 (biases on).
    Parameters: ``(C*cm + cm) + 2*(C*cn + cn) + (cm*C + C)``. Any size; O(HW) time.
    """

    zero_layers = ("proj",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, r: int = 4, cm: int | None = None, cn: int | None = None):
        super().__init__()
        cm = cm or max(c1 // r, 1)
        cn = cn or max(c1 // r, 1)
        self.a = nn.Conv2d(c1, cm, 1)
        self.b = nn.Conv2d(c1, cn, 1)
        self.v = nn.Conv2d(c1, cn, 1)
        self.proj = nn.Conv2d(cm, c1, 1)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        fa, fb, fv = self.a(x), self.b(x), self.v(x)
        with full_precision(x):
            a = fa.float().reshape(b, fa.shape[1], h * w)
            maps = fb.float().reshape(b, fb.shape[1], h * w).softmax(-1)
            vecs = fv.float().reshape(b, fv.shape[1], h * w).softmax(1)
            z = (a @ maps.transpose(1, 2)) @ vecs  # (B, cm, N)
        return x + self.proj(z.reshape(b, -1, h, w).to(x.dtype))


class CoT(AttentionBlock):
    """Contextual Transformer block (Li et al., "Contextual Transformer Networks for Visual
    Recognition", arXiv:2107.12292).

    Static context ``K1 = ReLU(BN(kxk group conv(x)))`` (k = 3, 4 groups); values
    ``V = BN(1x1 conv(x))``; attention from ``[K1, x]`` by two 1x1 convs (2C -> 2C/r with BN +
    ReLU, r = 4, then -> k*k weights per head, with bias), one head per ``share`` = 8 channels,
    softmax over the k x k window; dynamic context ``K2`` = the attention-weighted sum of V
    over each position's k x k window (local matrix multiplication). Output ``K1 + K2``
    (the paper's fusion; the authors' release fuses with an extra SK-style attention).
    Parameters with ``g`` groups, ``e = 2C // r``, ``m = C / share`` heads:
    ``(9*C*C/g + 2*C) + (C*C + 2*C) + (2*C*e + 2*e) + (e*9*m + 9*m)``. Any size.
    """

    group_args = ("g", "share")

    def __init__(self, c1: int, k: int = 3, g: int = 4, r: int = 4, share: int = 8):
        super().__init__()
        self.k = k
        self.heads = c1 // fit_groups(c1, share)
        e = max(2 * c1 // r, 1)
        self.key = Conv(c1, c1, k, g=fit_groups(c1, g), act=nn.ReLU())
        self.value = Conv(c1, c1, 1, act=False)
        self.embed = nn.Sequential(Conv(2 * c1, e, 1, act=nn.ReLU()), nn.Conv2d(e, k * k * self.heads, 1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kk, m = self.k * self.k, self.heads
        k1 = self.key(x)
        v = nn.functional.pad(self.value(x), [self.k // 2] * 4)
        window = torch.stack([v[:, :, i:i + h, j:j + w] for i in range(self.k) for j in range(self.k)], 2)
        logits = self.embed(torch.cat((k1, x), 1)).reshape(b, m, 1, kk, h, w)
        with full_precision(x):
            att = logits.float().softmax(3)
            k2 = (window.float().reshape(b, m, c // m, kk, h, w) * att).sum(3).reshape(b, c, h, w)
        return k1 + k2.to(k1.dtype)


register("DA", DA, Channels.KEEP, attention=True, aliases=("DANet", "DAModule"))
register("CC", CC, Channels.KEEP, attention=True, aliases=("CrissCrossAttention", "CCNet"))
register("NonLocal", NonLocal, Channels.KEEP, attention=True, aliases=("NonLocalBlock",))
register("MHSA", MHSA, Channels.KEEP, attention=True, aliases=("BoT",))
register("DoubleAttention", DoubleAttention, Channels.KEEP, attention=True, aliases=("A2",))
register("CoT", CoT, Channels.KEEP, attention=True, aliases=("CoTAttention",))
