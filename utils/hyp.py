"""The valid range of every numeric hyperparameter, in one table, and the one check against it.

``train.py`` checks each hyp file (and the values command-line flags put into it) with
:func:`check_hyp_ranges` before anything runs, so a value that makes no sense (a negative
learning rate, a momentum of 1, a flip probability of 2) stops the run with one line that
names the file and the key, instead of training a broken model. Keys a file leaves out are
not checked here (missing keys are the caller's concern).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class HypRange:
    """An interval of allowed values: ``lo``/``hi`` (``math.inf`` for open-ended), each end
    included unless ``lo_open``/``hi_open``; `why` says in a few words what the key is."""

    lo: float
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def __contains__(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open or self.hi == math.inf else v <= self.hi
        return above and below

    def __str__(self) -> str:
        hi = "inf" if self.hi == math.inf else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {hi}{')' if self.hi_open or self.hi == math.inf else ']'}"


_PROB = HypRange(0.0, 1.0, why="a probability")
_GAIN = HypRange(0.0, why="a loss gain")

# key -> allowed values (keys as in data/hyps/hyp.scratch-*.yaml)
HYP_RANGES: dict[str, HypRange] = {
    "lr0": HypRange(0.0, lo_open=True, why="initial learning rate"),
    "lrf": HypRange(0.0, 1.0, why="final learning rate as a fraction of lr0"),
    "momentum": HypRange(0.0, 1.0, hi_open=True, why="SGD momentum / Adam beta1"),
    "weight_decay": HypRange(0.0, why="weight decay"),
    "warmup_epochs": HypRange(0.0, why="warmup length in epochs"),
    "warmup_momentum": HypRange(0.0, 1.0, hi_open=True, why="momentum at the start of warmup"),
    "warmup_bias_lr": HypRange(0.0, why="bias learning rate at the start of warmup"),
    "box": _GAIN,
    "cls": _GAIN,
    "obj": _GAIN,
    "cls_pw": HypRange(0.0, lo_open=True, why="BCE positive weight"),
    "obj_pw": HypRange(0.0, lo_open=True, why="BCE positive weight"),
    "iou_t": HypRange(0.0, 1.0, lo_open=True, why="an IoU threshold"),
    "anchor_t": HypRange(1.0, why="anchor width/height ratio limit"),
    "anchors": HypRange(0.0, why="anchors per output layer, rounded, computed by AutoAnchor (0 = the model's)"),
    "fl_gamma": HypRange(0.0, why="focal loss gamma"),
    "label_smoothing": HypRange(0.0, 1.0, hi_open=True, why="label smoothing epsilon"),
    "hsv_h": HypRange(0.0, 1.0, why="hue jitter fraction"),
    "hsv_s": HypRange(0.0, 1.0, why="saturation jitter fraction"),
    "hsv_v": HypRange(0.0, 1.0, why="value jitter fraction"),
    "degrees": HypRange(0.0, 180.0, why="rotation, +/- degrees"),
    "translate": HypRange(0.0, 1.0, why="translation, +/- fraction of the image"),
    "scale": HypRange(0.0, 1.0, hi_open=True, why="zoom gain +/-; 1 or more allows zero or negative size"),
    "shear": HypRange(0.0, 90.0, hi_open=True, why="shear, +/- degrees"),
    "perspective": HypRange(0.0, 0.001, why="perspective, +/- fraction; beyond 0.001 a 640-px image folds"),
    "flipud": _PROB,
    "fliplr": _PROB,
    "mosaic": _PROB,
    "mixup": _PROB,
    "copy_paste": _PROB,
    "gate_warmup_epochs": HypRange(0.0, why="gate fade length in epochs"),
    "gate_lr_mult": HypRange(0.0, why="gate learning-rate multiplier"),
}


def check_hyp_ranges(hyp: dict, keys: list[str] | None = None) -> None:
    """Check the values of `hyp` (of `keys`, default all keys in both `hyp` and the table)
    against :data:`HYP_RANGES`. Raises ValueError ``hyp <key>=<value> must be a finite number
    in <range> (<what the key is>)`` for the first bad one; strings and booleans are not numbers."""
    for k in keys if keys is not None else [k for k in hyp if k in HYP_RANGES]:
        if k not in hyp:
            continue
        v, r = hyp[k], HYP_RANGES[k]
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not number or v not in r:
            raise ValueError(f"hyp {k}={v!r} must be a finite number in {r} ({r.why})")


def hyp_anchor_count(hyp: dict) -> int:
    """The ``anchors`` hyperparameter as a count per output layer: rounded (evolution proposes
    fractions), 0 when absent or below 0.5 (the model's own anchors)."""
    v = hyp.get("anchors") or 0
    return max(int(round(float(v))), 0)
