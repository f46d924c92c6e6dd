"""Optimizer groups, LR schedules, warmup, gradient accumulation, early stopping."""

from __future__ import annotations

import pytest
import torch

from models.yolo import DetectionModel
from utils.optim import EarlyStopping, accumulate_steps, build_optimizer, lr_lambda, param_groups, warmup

HYP = dict(lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0,
           warmup_momentum=0.8, warmup_bias_lr=0.1)


@pytest.fixture(scope="module")
def model():
    return DetectionModel("yolov5n.yaml")


def test_param_groups_yolov5n(model):
    biases, decay, no_decay = param_groups(model)
    # the group sizes YOLOv5 reports for yolov5n
    assert (len(no_decay), len(decay), len(biases)) == (57, 60, 60)
    total = sum(p.numel() for g in (biases, decay, no_decay) for p in g)
    assert total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_build_optimizer(model, name):
    opt = build_optimizer(model, name, lr=0.01, momentum=0.937, decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    if name == "SGD":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.937
    else:
        assert opt.param_groups[0]["betas"] == (0.937, 0.999)


def test_unknown_optimizer(model):
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "RMSprop")


def test_frozen_params_left_out(model):
    for p in model.model[0].parameters():
        p.requires_grad_(False)
    try:
        n = sum(len(g) for g in param_groups(model))
    finally:
        for p in model.model[0].parameters():
            p.requires_grad_(True)
    assert n == 177 - 3


def test_schedules():
    lin, cos = lr_lambda(10, 0.01), lr_lambda(10, 0.01, cos=True)
    assert lin(0) == pytest.approx(1.0) and lin(10) == pytest.approx(0.01) and lin(5) == pytest.approx(0.505)
    assert cos(0) == pytest.approx(1.0) and cos(10) == pytest.approx(0.01) and cos(5) == pytest.approx(0.505)
    assert cos(2) > lin(2)  # cosine stays high longer


def test_warmup_and_accumulate(model):
    opt = build_optimizer(model, "SGD", lr=HYP["lr0"], momentum=HYP["momentum"])
    lf = lr_lambda(10, HYP["lrf"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lf)
    assert all(g["initial_lr"] == 0.01 for g in opt.param_groups)
    warmup(opt, 0, 100, 0, lf, HYP)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.0, 0.0])
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.8)
    warmup(opt, 50, 100, 0, lf, HYP)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.055, 0.005, 0.005])
    warmup(opt, 100, 100, 1, lf, HYP)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * lf(1)] * 3)
    assert opt.param_groups[2]["momentum"] == pytest.approx(0.937)
    del sched
    assert accumulate_steps(0, 100, 16) == 1
    assert accumulate_steps(100, 100, 16) == 4
    assert accumulate_steps(10**4, 100, 16) == 4
    assert accumulate_steps(10**4, 100, 128) == 1


def test_early_stopping():
    es = EarlyStopping(patience=3)
    assert not es(0, 0.1)
    assert not es(1, 0.2)
    assert not es(2, 0.1) and not es(3, 0.1)
    assert es(4, 0.15)  # 3 epochs since the best (epoch 1)
    never = EarlyStopping(patience=0)
    assert not any(never(e, 0.0 if e else 1.0) for e in range(50))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_only_bias_free_layers_trainable(model, name):
    """--freeze over every pretrained layer leaves only an inserted block, whose weights have no biases
    (CBAM's): the optimizer is built with an empty bias group and steps, instead of 'empty parameter list'."""
    flags = [p.requires_grad for p in model.parameters()]
    conv = model.model[0].conv  # a bias-free convolution stands for the new block
    try:
        for p in model.parameters():
            p.requires_grad = False
        conv.weight.requires_grad = True
        opt = build_optimizer(model, name, lr=0.1)
        assert [len(g["params"]) for g in opt.param_groups] == [0, 1, 0]
        before = conv.weight.detach().clone()
        conv.weight.grad = torch.ones_like(conv.weight)
        opt.step()
        assert not torch.equal(conv.weight, before)
        conv.weight.requires_grad = False
        with pytest.raises(ValueError, match="nothing to train: every parameter of the model is frozen"):
            build_optimizer(model, name)
    finally:
        conv.weight.grad = None
        for p, f in zip(model.parameters(), flags):
            p.requires_grad = f
