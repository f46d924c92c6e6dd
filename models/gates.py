"""How the gates of attention blocks inserted into a pretrained network open during fine-tuning.

A block given an *identity start* (:meth:`models.attention._base.AttentionBlock.identity_start`)
computes ``x + gate * (f(x) - x)`` with ``gate = 0``: the fine-tune starts from exactly the
pretrained network. Left to the optimizer, that gate hardly moves (fine-tuning yolov5n.pt into
yolov5n_CBAM on coco128 for 40 epochs ends near 0.002; the gradient of ``f``'s own weights is
proportional to the gate, so they do not learn either). The hyperparameter ``gate_schedule``
picks what happens instead, from :data:`GATE_SCHEDULES`:

``fade`` (default)
    The gate is *set*, not learned, on a schedule: it rises linearly from 0 at the first batch
    to 1 after ``gate_warmup_epochs`` epochs of batches (at least 100 batches, like the learning
    rate warmup, which it matches by default); meanwhile its gradient is dropped
    (``grad = None``: no optimizer step, no momentum, no weight decay), while ``f``'s weights
    learn through the growing gate. After the fade the gate is an ordinary trainable
    parameter (no weight decay) starting from 1, the paper's block. The ramp is a fixed
    function of the global batch index, so ``--resume`` continues it where it stopped.
    Related: ReZero (Bachlechner et al., "ReZero is All You Need: Fast Convergence at Large
    Depth", arXiv:2003.04887) *learns* a zero-initialised residual scale, LayerScale (Touvron
    et al., "Going deeper with Image Transformers" (CaiT), arXiv:2103.17239) learns a small
    per-channel one (1e-5 ... 0.1); both train from scratch, where the loss pulls them open.
    In a converged pretrained network it does not, hence the schedule.
``train``
    The gate is an ordinary trainable parameter from 0 (the behaviour before this module; the
    control in benchmarks/gate_study.py). With ``gate_lr_mult`` != 1 the gates get their own
    optimizer group at ``lr0 * gate_lr_mult``.

Before the fade, each identity-started block is *calibrated* (``gate_calibration_images``,
default 32; 0 turns it off): on that many training images, unaugmented, its output gets a fixed
per-channel scale that gives it the root mean square of its input, and batch norms inside it
take the batch's statistics (:func:`models.transfer.calibrate_new_blocks`), so the layers after
the block see features of the size they were trained on while the gate opens. A freshly
initialised CBAM, for example, multiplies its input by two sigmoid maps near 0.5 and would
shrink them about 4x. The gate is untouched: the first batch still runs the pretrained network.

First, with ``gate_zero_start: 1`` (default), each block's last layer before its attention
map's sigmoid, or at the end of its residual branch, starts at zero
(:meth:`AttentionBlock.zero_start`): ``f(x)`` is then a per-channel constant times ``x``, which
calibration turns into ``x`` exactly, so the network is the pretrained one at *every* gate value
and the block learns its maps from there (the zeroed layer gets gradient as soon as the gate is
above 0). Chosen by measurement (models/attention/README.md): calibration alone left a block at
full gate up to 0.27 mAP50-95 below yolov5n.pt, seven CBAMs in C3 0.068. SK, CoT, MHSA,
ShuffleAttention, SimAM, NAM and SGE have no such layer (their output replaces or permutes the
features, or their maps come from ``x`` itself) and get the residual form ``x + gate * a * f(x)``
with a trainable ``a`` started at 0 instead (ReZero, arXiv:2003.04887). Under
``gate_schedule: train`` zero start is skipped (with a log line): a zero layer behind a zero
trained gate would never move.

Blocks whose paper has its own zero-initialised residual scale (DA, CC, NonLocal) get those
scales set to 1 by identity start and are faded in by their gate like every other block;
what is logged for them (``gate/<block>`` in results.csv) is the gate times those scales
(:meth:`AttentionBlock.opening`). Neither is anything done for models trained
from scratch or with ``--no-identity-start`` (their gates start at 1 and are trained).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from models.attention._base import AttentionBlock
from utils.hyp import check_hyp_ranges

# Hyperparameters this module reads, with the values used when a hyp file lacks them (older files).
# Like the learning-rate warmup (train.py), the fade lasts at least this many batches.
MIN_FADE_BATCHES = 100
GATE_HYP_DEFAULTS: dict = {"gate_schedule": "fade", "gate_warmup_epochs": 3.0, "gate_lr_mult": 1.0,
                           "gate_calibration_images": 32, "gate_zero_start": 1}


def gate_hyp(hyp: dict) -> dict:
    """`hyp` with the gate keys filled in from :data:`GATE_HYP_DEFAULTS`; raises ValueError on bad values."""
    out = {**GATE_HYP_DEFAULTS, **{k: hyp[k] for k in GATE_HYP_DEFAULTS if k in hyp}}
    if out["gate_schedule"] not in GATE_SCHEDULES:
        raise ValueError(f"hyp gate_schedule={out['gate_schedule']!r} is unknown; choose one of "
                         f"{', '.join(GATE_SCHEDULES)}")
    check_hyp_ranges(out, ["gate_warmup_epochs", "gate_lr_mult"])  # the ranges' table: utils/hyp.py
    n = out["gate_calibration_images"]
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or n < 0:
        raise ValueError(f"hyp gate_calibration_images={n!r} must be a whole number >= 0 (0 = no calibration)")
    out["gate_calibration_images"] = int(n)
    z = out["gate_zero_start"]
    if isinstance(z, bool):
        z = int(z)
    if z not in (0, 1):
        raise ValueError(f"hyp gate_zero_start={z!r} must be 1 (new blocks start as the identity at full gate) or 0")
    out["gate_zero_start"] = int(z)
    return out


def faded_gates(model: nn.Module, blocks: list[str]) -> dict[str, nn.Parameter]:
    """``{block name: gate}`` for the blocks among `blocks` whose identity start closes the gate.

    `blocks` are module names (``model.9``, ``model.2.cbam``) as in ``TransferResult.identity``.
    Raises KeyError naming a block that is not in `model`.
    """
    modules = dict(model.named_modules())
    out: dict[str, nn.Parameter] = {}
    for b in blocks:
        if b not in modules:
            raise KeyError(f"attention block {b!r} is not in the model; the checkpoint does not fit its YAML")
        if isinstance(modules[b], AttentionBlock):
            out[b] = modules[b].gate
    return out


def attention_gates(model: nn.Module) -> dict[str, float]:
    """``{module path: opening}`` of every attention block in `model` (DDP-wrapped or not).

    The opening (:meth:`AttentionBlock.opening`) is the gate, or for DA / CC / NonLocal the gate
    times their own zero-initialised residual scale: 0 means the block is the identity.
    """
    from utils.torch_utils import de_parallel

    return {name: m.opening() for name, m in de_parallel(model).named_modules() if isinstance(m, AttentionBlock)}


def block_gates(model: nn.Module, blocks: list[str]) -> dict[str, float]:
    """``{block name: gate value}`` of those of `blocks` that are attention blocks (for logging)."""
    gates = attention_gates(model)
    return {b: gates[b] for b in blocks if b in gates}


class GateSchedule:
    """Base schedule (``train``): the gates are left to the optimizer. Subclasses drive them.

    Train loop contract: :meth:`before_batch` before each forward pass, with the global batch
    index ``ni = epoch * batches_per_epoch + i``; :meth:`after_backward` after each backward
    pass (before the optimizer step).
    """

    def __init__(self, gates: dict[str, nn.Parameter], batches_per_epoch: int, hyp: dict,
                 start: dict[str, float] | None = None) -> None:
        self.gates = gates
        self.nb = int(batches_per_epoch)
        self.hyp = gate_hyp(hyp)
        # where each gate's fade starts: 0 for a new block, the gate reached by an earlier run
        # whose fade ended part-way (train.py: fine-tuning on from its last.pt)
        self.start = {b: float((start or {}).get(b, 0.0)) for b in gates}

    def fading(self, batches_done: int) -> list[str]:
        """The blocks whose gates are still to be opened by the schedule after `batches_done` batches."""
        return []

    def before_batch(self, ni: int) -> None:
        """Set the gates for batch `ni` (nothing for ``train``)."""

    def after_backward(self, ni: int) -> None:
        """Adjust the gates' gradients of batch `ni` (nothing for ``train``)."""

    def describe(self) -> str:
        return f"trained by the optimizer from their values (lr x{self.hyp['gate_lr_mult']:g})"

    def unfinished(self, total_batches: int) -> str | None:
        """A warning when the schedule cannot finish in `total_batches` (never for ``train``)."""
        return None


class FadeIn(GateSchedule):
    """``fade``: gate = min(1, ni / n), not trained while it rises; a trainable parameter from 1 afterwards.

    n = max(``gate_warmup_epochs`` * batches per epoch, 100) batches: with the default
    ``gate_warmup_epochs`` = ``warmup_epochs`` = 3 the gate rises exactly while the learning
    rate warms up (train.py's warmup has the same length), so the block's weights learn as the
    gate lets them in. ``gate_warmup_epochs: 0`` opens the gates at the first batch.
    """

    def __init__(self, gates: dict[str, nn.Parameter], batches_per_epoch: int, hyp: dict,
                 start: dict[str, float] | None = None) -> None:
        super().__init__(gates, batches_per_epoch, hyp, start)
        k = float(self.hyp["gate_warmup_epochs"])
        self.n = max(round(k * self.nb), MIN_FADE_BATCHES) if k > 0 else 0

    def value(self, ni: int, block: str | None = None) -> float:
        """The gate at batch `ni`: from its start (0 for a new block) at the first batch to 1 from batch n on."""
        t = 1.0 if ni >= self.n else ni / self.n
        s = self.start.get(block, 0.0) if block is not None else 0.0
        return s + (1.0 - s) * t

    def fading(self, batches_done: int) -> list[str]:
        return list(self.gates) if batches_done < self.n else []

    def before_batch(self, ni: int) -> None:
        if ni <= self.n:  # afterwards the optimizer owns the gate
            with torch.no_grad():
                for b, g in self.gates.items():
                    g.fill_(self.value(ni, b))

    def after_backward(self, ni: int) -> None:
        if ni < self.n:
            for g in self.gates.values():
                g.grad = None

    def describe(self) -> str:
        begun = [f"{b} from {s:.2f}" for b, s in self.start.items() if s]
        frm = "0" + (f" ({', '.join(begun)}: continuing an earlier run's fade)" if begun else "")
        return (f"faded in from {frm} to 1 over {self.n} batches ({self.n / max(self.nb, 1):.3g} epochs), "
                f"then trained (lr x{self.hyp['gate_lr_mult']:g})")

    def unfinished(self, total_batches: int) -> str | None:
        """A warning when training stops (after `total_batches`) before the fade ends, else None."""
        if total_batches >= self.n:
            return None
        ends = sorted({round(self.value(total_batches - 1, b), 2) for b in self.gates} or {self.value(total_batches - 1)})
        gate = f"gate {ends[0]:.2f}" if len(ends) == 1 else f"gates {ends[0]:.2f}-{ends[-1]:.2f}"
        return (f"the fade of the blocks' gates lasts {self.n} batches ({self.n / max(self.nb, 1):.3g} epochs) but "
                f"training stops after {total_batches} ({total_batches / max(self.nb, 1):.3g} epochs): the blocks end "
                f"part-way, {gate}. Train for at least "
                f"{math.ceil(self.n / max(self.nb, 1))} epochs, fine-tune on from this run's last.pt (--weights; "
                f"the fade continues from where it ended), or lower hyp gate_warmup_epochs (0 opens the gates at "
                f"once; any value > 0 lasts at least {MIN_FADE_BATCHES} batches)")


GATE_SCHEDULES: dict[str, Callable[..., GateSchedule]] = {"fade": FadeIn, "train": GateSchedule}


def make_gate_schedule(hyp: dict, gates: dict[str, nn.Parameter], batches_per_epoch: int,
                       start: dict[str, float] | None = None) -> GateSchedule:
    """The schedule named by ``hyp['gate_schedule']`` (default ``fade``) for `gates`; `start`: the
    gates whose fade begins part-way (``{block: gate}``, others start at 0)."""
    return GATE_SCHEDULES[gate_hyp(hyp)["gate_schedule"]](gates, batches_per_epoch, hyp, start)
