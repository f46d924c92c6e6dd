"""Model EMA: decay ramp, buffers averaged, integer buffers copied, frozen copy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from utils.ema import ModelEMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU())


def test_decay_ramp():
    ema = ModelEMA(_net(), decay=0.9999, tau=2000)
    assert ema.decay(0) == 0.0
    assert ema.decay(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    assert ema.decay(2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema.decay(10**6) == pytest.approx(0.9999)


def test_update_averages_params_and_buffers():
    net = _net()
    ema = ModelEMA(net, updates=5)
    old = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()
    net(torch.rand(2, 3, 8, 8))  # changes BN running stats and num_batches_tracked
    ema.update(net)
    assert ema.updates == 6
    d = ema.decay()
    new = net.state_dict()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, d * old[k] + (1 - d) * new[k], atol=1e-6), k
        else:
            assert torch.equal(v, new[k]), k
    assert all(not p.requires_grad for p in ema.ema.parameters())
    assert not ema.ema.training


def test_ema_of_ddp_like_wrapper_and_attrs():
    net = _net()
    net.names = ["a"]
    net.hyp = {"lr0": 0.01}
    ema = ModelEMA(net)
    net.names = ["b"]
    ema.update_attr(net)
    assert ema.ema.names == ["b"] and ema.ema.hyp == {"lr0": 0.01}
    # the copy is independent of the model
    with torch.no_grad():
        next(net.parameters()).zero_()
    assert next(ema.ema.parameters()).abs().sum() > 0
