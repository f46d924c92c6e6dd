"""Exponential moving average of a model's weights and buffers (the model YOLOv5 evaluates and saves).

The decay ramps up with the number of updates, ``decay * (1 - exp(-updates / tau))``, so
the average follows the model closely early in training and settles later. Every floating
point entry of the state dict is averaged, buffers (batch-norm statistics, anchors)
included; integer buffers (``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from utils.torch_utils import de_parallel

# attributes copied from the model to the EMA copy after each update / on request
EMA_ATTRS = ("yaml", "yaml_file", "hyp", "names", "stride", "class_weights")


class ModelEMA:
    """A frozen, eval-mode copy of `model` kept as a moving average of it."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(de_parallel(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.updates = int(updates)
        self.decay_max = float(decay)
        self.tau = float(tau)

    def decay(self, updates: int | None = None) -> float:
        n = self.updates if updates is None else updates
        return self.decay_max * (1 - math.exp(-n / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        msd = de_parallel(model).state_dict()
        for k, v in self.ema.state_dict().items():
            src = msd[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(src)

    def update_attr(self, model: nn.Module, include: tuple[str, ...] = EMA_ATTRS) -> None:
        m = de_parallel(model)
        for k in include:
            if hasattr(m, k) and not isinstance(getattr(type(m), k, None), property):
                setattr(self.ema, k, getattr(m, k))
