"""Hyperparameters: the table of valid ranges (utils/hyp.py), hyp files checked by name, and
command-line flags that replace a hyp file's value only when given (issue 22)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import train
from utils.data.dataset import load_hyp
from utils.hyp import HYP_RANGES, HypRange, check_hyp_ranges

# per key: a value that makes no sense (the list and more)
BAD = {"lr0": -0.01, "lrf": 1.5, "momentum": 1.0, "weight_decay": -1e-4, "warmup_epochs": -1,
       "warmup_momentum": 1.2, "warmup_bias_lr": -0.1, "box": -0.05, "cls": -1, "obj": -1, "cls_pw": 0,
       "obj_pw": 0, "iou_t": 0, "anchor_t": 0.5, "anchors": -3, "fl_gamma": -1, "label_smoothing": 1.0,
       "hsv_h": 1.5, "hsv_s": -0.1, "hsv_v": 2, "degrees": 200, "translate": 1.5, "scale": 1.0, "shear": 90,
       "perspective": 0.01, "flipud": 1.5, "fliplr": -0.5, "mosaic": 2, "mixup": 1.1, "copy_paste": -0.1,
       "gate_warmup_epochs": -2, "gate_lr_mult": -1}


def test_range_table():
    assert set(BAD) == set(HYP_RANGES)  # every key of the table has a bad value above
    assert str(HypRange(0, 1, hi_open=True)) == "[0, 1)" and str(HypRange(0, lo_open=True)) == "(0, inf)"
    assert 0.999 in HYP_RANGES["momentum"] and 1.0 not in HYP_RANGES["momentum"]
    assert 1.0 in HYP_RANGES["iou_t"] and 0.0 not in HYP_RANGES["iou_t"] and 1.0 in HYP_RANGES["anchor_t"]
    for f in (train.ROOT / "data" / "hyps").glob("*.yaml"):
        check_hyp_ranges(load_hyp(f))  # the shipped files are valid
    for bad in (math.nan, math.inf, "0.01", True):
        with pytest.raises(ValueError, match="hyp lr0=.* must be a finite number in"):
            check_hyp_ranges({"lr0": bad})


@pytest.mark.parametrize("key", sorted(BAD))
def test_hyp_file_value_out_of_range_named(tmp_path, key):
    f = tmp_path / "my_hyp.yaml"
    f.write_text(yaml.safe_dump({**load_hyp(None), key: BAD[key]}))
    with pytest.raises(ValueError, match=rf"hyp file {f}: hyp {key}={BAD[key]!r} must be a finite number in "
                                         rf"[\[(][-\d.]+, [\w.]+[\])] \("):
        train._checked_hyp(str(f))


def _setup(tmp_path, hyp_file, *flags):
    """train.py's settings step (hyp.yaml is written) on a tiny dataset YAML."""
    data = tmp_path / "d.yaml"
    (tmp_path / "images").mkdir(exist_ok=True)
    data.write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: [a]\n")
    opt = train.parse_opt(["--hyp", str(hyp_file), "--data", str(data), *flags])
    opt.save_dir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    train._setup(opt.hyp, opt, torch.device("cpu"))
    return yaml.safe_load((opt.save_dir / "hyp.yaml").read_text())


def test_label_smoothing_of_hyp_file_survives_unless_flag_given(tmp_path):
    """Issue 22: label_smoothing 0.1 in --hyp stays 0.1 in the run's hyp.yaml; --label-smoothing
    replaces it; a file without the key gets 0.0; a bad flag value names the flag."""
    f = tmp_path / "ls.yaml"
    f.write_text(yaml.safe_dump({**load_hyp(None), "label_smoothing": 0.1}))
    assert _setup(tmp_path, f)["label_smoothing"] == 0.1
    assert _setup(tmp_path, f, "--label-smoothing", "0.2")["label_smoothing"] == 0.2
    assert _setup(tmp_path, f, "--label-smoothing", "0")["label_smoothing"] == 0.0
    assert _setup(tmp_path, train.ROOT / "data/hyps/hyp.scratch-low.yaml")["label_smoothing"] == 0.0
    opt = train.parse_opt(["--label-smoothing", "1.5"])
    with pytest.raises(ValueError, match=r"--label-smoothing 1.5: hyp label_smoothing=1.5 must be .*\[0, 1\)"):
        train._apply_hyp_flags(load_hyp(None), opt, None)


def test_exponent_numbers_in_a_hyp_file_are_numbers(tmp_path):
    """`lr0: 1e-3` (the shipped file's own advice for Adam) was read as the string '1e-3' by YAML 1.1
    rules and refused; a quoted '1e-3' is still text and still refused."""
    from utils.data.dataset import load_hyp
    from utils.hyp import check_hyp_ranges

    f = tmp_path / "hyp.yaml"
    f.write_text("lr0: 1e-3\nweight_decay: 5E-4\nlrf: 1.0e-2\nmomentum: '9e-1'\n")
    hyp = load_hyp(f)
    assert hyp["lr0"] == 0.001 and hyp["weight_decay"] == 0.0005 and hyp["lrf"] == 0.01
    check_hyp_ranges(hyp, ["lr0", "weight_decay", "lrf"])
    with pytest.raises(ValueError, match="hyp momentum='9e-1' must be a finite number"):
        check_hyp_ranges(hyp, ["momentum"])
