"""Optimizer parameter groups, learning-rate schedules, warmup and early stopping for train.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from utils.logging import LOGGER

NBS = 64  # nominal batch size: gradients are accumulated up to it, weight decay is tuned for it

_NORMS = tuple(v for k, v in vars(nn).items() if isinstance(v, type) and "Norm" in k)


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (biases, weights with decay, weights without decay).

    Norm-layer weights and other 0/1-dimensional tensors (scales, gates) get no weight decay;
    so do biases, which also get their own warmup learning rate.
    """
    biases, decay, no_decay = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                biases.append(p)
            elif isinstance(module, _NORMS) or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return biases, decay, no_decay


def build_optimizer(model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937,
                    decay: float = 5e-4, gates: Iterable[nn.Parameter] = (),
                    gate_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD (Nesterov) / Adam / AdamW with three groups: [0] biases, [1] decayed weights, [2] the rest.

    `momentum` is SGD's momentum or Adam's beta1. Group 0 is the one warmed up from
    ``warmup_bias_lr``. With `gate_lr_mult` != 1, the trainable parameters in `gates` (the
    gates of inserted attention blocks, see models/gates.py) leave group 2 for a fourth group
    [3] at ``lr * gate_lr_mult`` without weight decay.
    """
    biases, weights, no_decay = param_groups(model)
    own = {id(p) for p in gates if p.requires_grad} if gate_lr_mult != 1 else set()
    gate_group = [p for p in no_decay if id(p) in own]
    no_decay = [p for p in no_decay if id(p) not in own]
    if not (biases or weights or no_decay or gate_group):
        raise ValueError("nothing to train: every parameter of the model is frozen (a --freeze that covers all "
                         "its layers?)")
    first = [{"params": biases}]  # a list of groups: the bias group may be empty (bias-free new blocks)
    if name == "Adam":
        opt = torch.optim.Adam(first, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        opt = torch.optim.AdamW(first, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    elif name == "SGD":
        opt = torch.optim.SGD(first, lr=lr, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose SGD, Adam or AdamW")
    opt.add_param_group({"params": weights, "weight_decay": decay})
    opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    if gate_group:
        opt.add_param_group({"params": gate_group, "weight_decay": 0.0, "lr": lr * gate_lr_mult})
    LOGGER.info(f"optimizer: {name}(lr={lr}) with parameter groups {len(no_decay)} weight(decay=0.0), "
                f"{len(weights)} weight(decay={decay}), {len(biases)} bias"
                + (f", {len(gate_group)} gate(lr x{gate_lr_mult:g}, decay=0.0)" if gate_group else ""))
    return opt


def lr_lambda(epochs: int, lrf: float, cos: bool = False) -> Callable[[int], float]:
    """Epoch -> LR multiplier going from 1 to `lrf` over `epochs`, linearly or along a half cosine."""
    if cos:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def warmup(optimizer: torch.optim.Optimizer, ni: int, nw: int, epoch: int, lf: Callable[[int], float],
           hyp: dict) -> None:
    """Set LR and momentum for iteration `ni` of `nw` warmup iterations.

    Bias LR falls from ``warmup_bias_lr``; the other groups rise from 0; both end at
    ``initial_lr * lf(epoch)``. Momentum (or Adam's beta1 is left alone) rises from
    ``warmup_momentum`` to ``momentum``.
    """
    xi = [0, nw]
    for j, g in enumerate(optimizer.param_groups):
        start = hyp["warmup_bias_lr"] if j == 0 else 0.0
        g["lr"] = float(np.interp(ni, xi, [start, g["initial_lr"] * lf(epoch)]))
        if "momentum" in g:
            g["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))


def accumulate_steps(ni: int, nw: int, batch_size: int, nbs: int = NBS) -> int:
    """Batches per optimizer step: 1 at the start of warmup, nbs / batch_size after it."""
    target = max(round(nbs / batch_size), 1)
    if ni <= nw:
        return max(1, int(np.interp(ni, [0, nw], [1, nbs / batch_size]).round()))
    return target


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs."""

    def __init__(self, patience: int = 30):
        self.best_fitness = 0.0
        self.best_epoch = 0
        self.patience = patience or float("inf")

    def __call__(self, epoch: int, fitness: float) -> bool:
        if fitness >= self.best_fitness:
            self.best_epoch, self.best_fitness = epoch, fitness
        stop = (epoch - self.best_epoch) >= self.patience
        if stop:
            LOGGER.info(f"Stopping training early: no improvement in the last {self.patience} epochs "
                        f"(best epoch {self.best_epoch}). Change --patience to train longer (0 = never stop).")
        return stop
