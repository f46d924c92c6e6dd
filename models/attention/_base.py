"""Shared machinery of the attention blocks: the identity-start gate, fp32 attention, group counts.

Identity start
--------------
Every block derives from :class:`AttentionBlock`, which owns one scalar parameter ``gate``
and returns ``x + gate * (f(x) - x)`` where ``f`` is the block as its paper defines it.
``gate`` is created at construction and initialised to 1, so a freshly built block *is* the
paper's block; :meth:`AttentionBlock.identity_start` sets it to 0, which makes the block the
identity while ``gate`` still receives a gradient (``dL/dgate = <dL/dout, f(x) - x>``), so a
block inserted into a pretrained network starts as a no-op and is faded in by training
(ReZero-style). Because the parameter always exists, a checkpoint (YAML + state dict) rebuilds
the same module tree whether or not identity start was used; the gate's value travels in the
state dict. State dicts written without a gate (other YOLOv5 forks) load as gate = 1.

Blocks whose paper already has a zero-initialised residual scale (DANet's alpha/beta,
CCNet's gamma, the non-local block's last batch-norm scale) start as the identity anyway when
built. Their ``identity_start`` sets those scales to 1 and the gate to 0, like every other
block, so that one gate schedule fades all blocks in (zeroing both would deadlock training:
each factor's gradient is proportional to the other one; and a zero scale left to the
optimizer stays near 0 in a fine-tune, as a zero gate does).

Parameter counts therefore are "paper formula + 1" for every block (see the tests).

Insertion start (train.py's default for blocks new to a pretrained network): :meth:`AttentionBlock.zero_start`
zeroes the layers that make ``f(x)`` a multiple of ``x``, or, for a block without such layers, switches
it to the residual form ``x + gate * a * f(x)`` with a trainable ``a`` started at 0 (one more
parameter, the ``residual_scale`` state-dict entry); :meth:`AttentionBlock.calibrate` then sets a fixed
per-channel output scale. A block is then the identity at every gate value and learns from there.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

# State-dict entries an attention block carries only after an insertion start (calibrate(),
# zero_start()); a freshly built block has none, and it loads a state dict either way.
OPTIONAL_ENTRIES = ("out_scale", "residual_scale")


class AttentionBlock(nn.Module):
    """Base class: a shape-preserving block ``f`` mixed with its input by a scalar ``gate``.

    Subclasses implement :meth:`attend` (the paper's block, returning a tensor of the input's
    shape and dtype) and never override :meth:`forward`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.ones(1))
        # per-channel scale of f's output, set by calibrate() on insertion into a pretrained
        # network; None (no state-dict entry) = the paper's block
        self.register_buffer("out_scale", None)
        # ReZero scale of the residual form that zero_start() gives blocks without zero_layers;
        # None (no state-dict entry) = the mixed form x + gate * (f(x) - x)
        self.register_parameter("residual_scale", None)

    # Options validated by check_args: a reduction ratio divides the width (hidden width C // r,
    # so 1 <= r < C), a group count splits it (1 <= g <= C). Names absent from __init__ are ignored.
    ratio_args: tuple[str, ...] = ("r",)
    group_args: tuple[str, ...] = ()

    @classmethod
    def check_args(cls, c1: int, *args) -> list[str]:
        """Validate a YAML's options for this block on `c1` input channels (``cls(c1, *args)``).

        Raises ValueError saying what is wrong: more options than ``__init__`` takes, a
        non-integer for an ``int`` option, a reduction ratio >= `c1` (a hidden width of 1)
        or < 1, a group count > `c1`. Returns notes on usable but unusual values (a hidden
        width below 4 from a ratio other than the default).
        """
        sig = inspect.signature(cls.__init__)
        names = list(sig.parameters)[2:]  # after self, c1
        try:
            bound = sig.bind(None, c1, *args)
        except TypeError:
            raise ValueError(f"{cls.__name__} takes at most {len(names)} option(s) ({', '.join(names)}), "
                             f"got {len(args)}") from None
        notes = []
        for name in names[:len(args)]:
            v, p = bound.arguments[name], sig.parameters[name]
            if v is None:
                continue
            if str(p.annotation).startswith("int") and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"option {name}={v!r} must be an integer (default {p.default})")
            if name in cls.ratio_args and not 1 <= v < c1:
                raise ValueError(f"option {name}={v} is a reduction ratio (hidden width {c1} // {name}): it must be "
                                 f"1..{c1 - 1} for this layer's {c1} channels (default {p.default})")
            if name in cls.group_args and not 1 <= v <= c1:
                raise ValueError(f"option {name}={v} is a group count: it must be 1..{c1} for this layer's "
                                 f"{c1} channels (default {p.default})")
            if name in cls.ratio_args and v != p.default and c1 // v < 4:
                notes.append(f"reduction ratio {name}={v} leaves a hidden width of {c1 // v} of {c1} channels "
                             f"(default {p.default})")
        return notes

    def attend(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attend(x)
        if y.dtype != x.dtype:  # e.g. a LayerNorm or fp32 section under autocast
            y = y.to(x.dtype)
        if self.out_scale is not None:
            y = y * self.out_scale.to(x.dtype).view(1, -1, 1, 1)
        if self.residual_scale is not None:
            return x + (self.gate * self.residual_scale).to(x.dtype) * y
        return x + self.gate.to(x.dtype) * (y - x)

    @torch.no_grad()
    def identity_start(self) -> AttentionBlock:
        """Make the block the identity map (for insertion into a pretrained network)."""
        self.gate.zero_()
        return self

    # Layers that :meth:`zero_start` zeroes: the last layer before each attention map's sigmoid
    # (the map becomes the constant sigmoid(0) = 0.5) or the last layer of each residual branch
    # (the branch adds 0). Empty for blocks whose own weights cannot make f a multiple of x: those
    # get the residual form instead (see zero_start).
    zero_layers: tuple[str, ...] = ()
    # Of those, layers whose map multiplies x with no sigmoid after it: their bias starts at 1 (map 1).
    unit_bias_layers: tuple[str, ...] = ()

    @torch.no_grad()
    def zero_start(self) -> bool:
        """Make the block the identity at every gate value while it still learns (for insertion
        into a pretrained network; called before :meth:`calibrate` and before the optimizer is built).

        A block with :attr:`zero_layers` gets their weights and biases zeroed (for a ``Conv`` with
        batch norm: the norm's scale and shift), so that ``f(x)`` is a per-channel constant multiple
        of `x` (or `x` itself) and :meth:`calibrate` then makes it exactly `x`. The zeroed layer still
        gets gradient (its input is not zero) once the gate is above 0, as in zero-initialised
        residual branches (Goyal et al., arXiv:1706.02677, zero gamma; the non-local block's own
        zero BN, arXiv:1711.07971).

        A block whose own weights cannot make ``f(x)`` a multiple of `x` (its output is new features,
        shuffled channels, or it has no weights: SK, CoT, MHSA, ShuffleAttention, SimAM, NAM, SGE)
        switches to the residual form ``x + gate * a * f(x)`` with a new trainable scalar
        ``a = residual_scale`` started at 0 (ReZero: Bachlechner et al., "ReZero is All You Need",
        arXiv:2003.04887, which starts this scalar at 0). That is how SK, CoT, MHSA and
        ShuffleAttention sit in their papers, inside a residual bottleneck; ``a`` gets the gradient
        ``gate * <dL/dout, f(x)>``, which is not 0. The form travels in the state dict (the
        ``residual_scale`` entry). As for zeroed layers, :meth:`opening` stays the gate: how far the schedule
        has let the block in, which after a zero start is what the block has learnt, not the paper's block.
        Returns True (every block gets one of the two).
        """
        if not self.zero_layers:
            self.residual_scale = nn.Parameter(torch.zeros(1, dtype=self.gate.dtype, device=self.gate.device))
            return True
        for name in self.zero_layers:
            zero_layer(self.get_submodule(name))
        for name in self.unit_bias_layers:
            self.get_submodule(name).bias.fill_(1.0)
        return True

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Data-dependent start for a block inserted into a pretrained network (LSUV-style).

        `x` (B, C, H, W) is the block's input on a calibration batch, taken from the pretrained
        network. Batch norms inside the block first get the batch's statistics as running
        statistics (a fresh batch norm holds mean 0 / variance 1, unrelated to its input); then
        ``out_scale`` (C,) is set so that ``out_scale * f(x)`` has the per-channel root mean
        square of `x`: when the gate opens, the layers after the block see features of the size
        they were trained on (a fresh CBAM would otherwise shrink them about 4x). Channels whose
        output is ~0 on the batch keep scale 1. The gate is not touched (at gate 0 the block
        stays the identity exactly). Returns the scale; raises ValueError for a non-4D or
        non-finite input.
        """
        if x.ndim != 4 or not bool(torch.isfinite(x).all()):
            raise ValueError(f"{type(self).__name__}.calibrate needs a finite (B, C, H, W) input, got "
                             f"shape {tuple(x.shape)}")
        was_training = self.training
        self.out_scale = None
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one batch -> exactly its statistics
            self.train()
            self.attend(x)
            for m, mom in zip(norms, momenta):
                m.momentum = mom
        self.eval()
        y = self.attend(x).float()
        self.train(was_training)
        rms_x = x.float().pow(2).mean((0, 2, 3)).sqrt()
        rms_y = y.pow(2).mean((0, 2, 3)).sqrt()
        ok = rms_y > eps * rms_x.clamp_min(eps)
        scale = torch.where(ok, rms_x / rms_y.clamp_min(1e-30), torch.ones_like(rms_x))
        self.out_scale = scale.to(self.gate.dtype)
        return self.out_scale

    @torch.no_grad()
    def opening(self) -> float:
        """How far the block takes part: 0 = the identity, 1 = the paper's block (for logging).

        The gate's value (signed, as trained). Blocks with their own residual scales (DA, CC,
        NonLocal) return ``gate * mean |scale|`` instead, which reads 0 both for the paper's
        init (scale 0, gate 1) and for identity start (scale 1, gate 0); those scales are
        trained without a bound, so the value can pass 1.
        """
        return float(self.gate.detach().float().mean())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A calibrated block's output scale travels in the state dict; a state dict with this
        # block's weights but no scale gives the paper's block (one without them leaves it alone).
        # The same holds for the residual form's scale (zero_start of a block without zero layers).
        mine = any(k.startswith(prefix) for k in state_dict)
        scale = state_dict.get(prefix + "out_scale")
        if scale is not None:
            self.out_scale = torch.empty(scale.shape, dtype=self.gate.dtype, device=self.gate.device)
        elif mine:
            self.out_scale = None
        residual = state_dict.get(prefix + "residual_scale")
        if residual is not None and self.residual_scale is None:
            self.residual_scale = nn.Parameter(torch.empty(residual.shape, dtype=self.gate.dtype,
                                                           device=self.gate.device))
        elif residual is None and mine:
            self.residual_scale = None
        # Weights from code without the gate: the paper form, gate = 1.
        if prefix + "gate" not in state_dict:
            state_dict[prefix + "gate"] = torch.ones_like(self.gate)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d for pooled (B, C, 1, 1) descriptors (BAM's channel branch, SK's fuse layer).

    Such a batch norm has only the batch to take statistics from; for a single image in
    training mode (a model built with a batch-1 forward, a last batch of one image) there are
    none, so it normalises with the running statistics and leaves them unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


def identity_start(model: nn.Module, missing: Iterable[str] | None = None) -> int:
    """Call :meth:`AttentionBlock.identity_start` on the attention blocks of `model`; returns how many.

    With `missing` (the missing keys reported by ``model.load_state_dict(pretrained, strict=False)``),
    only blocks that received none of their weights are touched: the blocks new to the
    pretrained network start as the identity, blocks that were loaded keep their weights.
    """
    missing = None if missing is None else set(missing)
    n = 0
    for name, m in model.named_modules():
        if not isinstance(m, AttentionBlock):
            continue
        if missing is not None:
            keys = [f"{name}.{k}" if name else k for k, _ in m.named_parameters()]
            if not all(k in missing or k.endswith(".gate") or k == "gate" for k in keys):
                continue
        m.identity_start()
        n += 1
    return n


@contextlib.contextmanager
def full_precision(x: torch.Tensor) -> Iterator[None]:
    """Disable autocast on `x`'s device: attention maps overflow in fp16 (cast operands with .float())."""
    if not torch.amp.is_autocast_available(x.device.type):  # e.g. the meta device
        yield
        return
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield


def fit_groups(c: int, groups: int, multiple: int = 1) -> int:
    """The largest g <= `groups` such that `c` is divisible by g * `multiple` (at least 1).

    Lets a block's paper group count (e.g. 32 or 64) adapt to width-scaled channel counts.
    """
    for g in range(min(groups, c // multiple), 0, -1):
        if c % (g * multiple) == 0:
            return g
    if c % multiple:
        raise ValueError(f"{c} channels cannot be split into groups of a multiple of {multiple}")
    return 1


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0,
                      bias: Callable[[int, int], torch.Tensor] | None = None,
                      max_elements: int = 1 << 25) -> torch.Tensor:
    """``softmax(q @ k^T * scale + bias) @ v`` in fp32, chunked over queries to bound memory.

    q: (B, M, Nq, D), k: (B, M, Nk, D), v: (B, M, Nk, Dv) -> (B, M, Nq, Dv) in fp32.
    `bias(start, end)` returns the additive logits for queries ``start:end``
    (broadcastable to (B, M, end - start, Nk)). The logits of at most `max_elements` entries
    exist at once, so global attention at high resolution needs O(N) extra memory at inference
    (training still stores every chunk's softmax for the backward pass). Explicit matmuls (not
    `scaled_dot_product_attention`) keep the products visible to FLOP counters and ONNX.
    """
    with full_precision(q):
        q, k, v = q.float(), k.float(), v.float()
        b, m, n, _ = q.shape
        chunk = max(1, max_elements // max(1, b * m * k.shape[2]))
        kt = k.transpose(-1, -2)
        outs = []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            logits = (q[:, :, s:e] @ kt) * scale
            if bias is not None:
                logits = logits + bias(s, e)
            outs.append(logits.softmax(-1) @ v)
        return outs[0] if len(outs) == 1 else torch.cat(outs, 2)


def odd_kernel(c: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size: the odd integer nearest above |log2(c) / gamma + b / gamma|."""
    t = int(abs(math.log2(c) / gamma + b / gamma))
    return t if t % 2 else t + 1


@torch.no_grad()
def zero_layer(m: nn.Module) -> None:
    """Zero the affine parameters of `m`; for a conv followed by a batch norm (``m.bn``), the norm's
    (so the layer outputs 0 whatever its input); for a fused one, its conv's."""
    target = getattr(m, "bn", None)
    if not isinstance(target, nn.Module):
        target = getattr(m, "conv", m) if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) else m
    params = [getattr(target, n, None) for n in ("weight", "bias")]
    if not any(isinstance(q, torch.Tensor) for q in params):
        raise TypeError(f"zero_layer: {type(m).__name__} has no weight or bias to zero")
    for q in params:
        if isinstance(q, torch.Tensor):
            q.zero_()
