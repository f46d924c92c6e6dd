"""Gates of attention blocks inserted into pretrained weights: schedules (models/gates.py) and train.py's use of them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

import train
from data.synthetic import make_synthetic
from models.checkpoint import load_checkpoint, model_record, save_checkpoint
from models.gates import GATE_HYP_DEFAULTS, MIN_FADE_BATCHES, FadeIn, faded_gates, gate_hyp, make_gate_schedule
from models.transfer import load_pretrained
from models.yolo import DetectionModel
from tests.logcapture import LogLines
from utils.data.dataset import load_hyp
from utils.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

# 8 train images at 64 px, batch 2: 4 batches (= 1 optimizer step each, accumulation starts at 1) per epoch
TINY = dict(imgsz=64, batch_size=2, workers=0, device="cpu", noplots=True, noautoanchor=True)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=2, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def base_pt(tmp_path_factory) -> Path:
    """A yolov5n checkpoint (3 classes, random weights) to fine-tune from: stands in for yolov5n.pt."""
    torch.manual_seed(0)
    m = DetectionModel("yolov5n.yaml", nc=3)
    f = tmp_path_factory.mktemp("w") / "base.pt"
    save_checkpoint({"model": model_record(m), "epoch": -1}, f)
    return f


def _finetune(synth: Path, base_pt: Path, project: Path, cfg: str = "yolov5n_CBAM.yaml", **kw) -> tuple[dict, str]:
    with LogLines() as log:
        out = train.run(data=str(synth), weights=str(base_pt), cfg=cfg, project=str(project), **{**TINY, **kw})
    return out, "\n".join(log.lines)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- the schedules themselves


def test_fade_values_and_gradients():
    gate = torch.nn.Parameter(torch.zeros(1))
    s = FadeIn({"b": gate}, batches_per_epoch=50, hyp={"gate_warmup_epochs": 3.0})
    assert s.n == 150
    for ni, want in ((0, 0.0), (75, 0.5), (150, 1.0), (151, 1.0)):
        assert s.value(ni) == want
    s.before_batch(30)
    assert gate.item() == pytest.approx(0.2)
    gate.grad = torch.ones(1)
    s.after_backward(30)
    assert gate.grad is None  # not trained while faded in: no step, no momentum, no weight decay
    s.before_batch(150)
    gate.grad = torch.ones(1)
    s.after_backward(150)
    assert gate.item() == 1.0 and gate.grad is not None  # from here on an ordinary parameter
    with torch.no_grad():
        gate.fill_(0.9)  # as an optimizer would
    s.before_batch(151)
    assert gate.item() == pytest.approx(0.9)  # the schedule no longer touches it
    # short epochs: the fade lasts at least as long as train.py's LR warmup (100 batches)
    assert FadeIn({}, 4, {"gate_warmup_epochs": 3.0}).n == MIN_FADE_BATCHES
    assert FadeIn({}, 4, {"gate_warmup_epochs": 0}).value(0) == 1.0  # 0: open at once


def test_gate_hyp_defaults_and_bad_values():
    old = {k: v for k, v in load_hyp(None).items() if not k.startswith("gate_")}  # a hyp file from before
    assert {k: gate_hyp(old)[k] for k in GATE_HYP_DEFAULTS} == GATE_HYP_DEFAULTS
    assert GATE_HYP_DEFAULTS["gate_schedule"] == "fade"
    for f in (Path(train.ROOT) / "data" / "hyps").glob("*.yaml"):  # every shipped file sets the keys
        assert all(k in load_hyp(f) for k in GATE_HYP_DEFAULTS), f
    with pytest.raises(ValueError, match="gate_schedule='open'.*fade, train"):
        gate_hyp({"gate_schedule": "open"})
    with pytest.raises(ValueError, match="gate_lr_mult"):
        gate_hyp({"gate_lr_mult": -1})
    assert GATE_HYP_DEFAULTS["gate_calibration_images"] == 32 and gate_hyp({"gate_calibration_images": 8.0})[
        "gate_calibration_images"] == 8
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="gate_calibration_images=.*whole number >= 0"):
            gate_hyp({"gate_calibration_images": bad})
    for bad in (float("nan"), float("inf"), "3"):  # YAML's .nan / .inf / a quoted number
        with pytest.raises(ValueError, match="gate_warmup_epochs.*finite number"):
            gate_hyp({"gate_warmup_epochs": bad})
    assert type(make_gate_schedule({"gate_schedule": "train"}, {}, 4)).__name__ == "GateSchedule"


def test_hyp_file_checked_by_name(tmp_path):
    """A misspelt key warns (did you mean ...) instead of silently leaving the default in force;
    a bad gate value or a missing key is an error naming the hyp file."""
    import yaml

    base = load_hyp(None)
    f = tmp_path / "my_hyp.yaml"
    f.write_text(yaml.safe_dump({**{k: v for k, v in base.items() if k != "gate_schedule"}, "gate_schedul": "train"}))
    with LogLines() as log:
        cfg = train._checked_hyp(str(f))
    assert f"hyp file {f}: unknown hyperparameter 'gate_schedul' is ignored (did you mean 'gate_schedule'?)" in log.text
    assert cfg["gate_schedule"] == "fade"  # the default, as the warning says
    f.write_text(yaml.safe_dump({**base, "gate_warmup_epochs": -2}))
    with pytest.raises(ValueError, match=f"hyp file {f}: hyp gate_warmup_epochs=-2 must be a finite number"):
        train._checked_hyp(str(f))
    f.write_text(yaml.safe_dump({k: v for k, v in base.items() if k not in ("lr0", "box")}))
    with pytest.raises(ValueError, match=f"hyp file {f}: missing hyperparameter.s. box, lr0"):
        train._checked_hyp(str(f))
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        train._checked_hyp(str(f))
    with LogLines() as log:
        assert train._checked_hyp(None)["gate_schedule"] == "fade" and not log.lines  # the shipped file: silent


def test_lr_multiplier_puts_gates_in_their_own_group():
    torch.manual_seed(0)
    m = DetectionModel("yolov5n_CBAM.yaml")
    gates = faded_gates(m, ["model.9"])
    assert list(gates) == ["model.9"] and faded_gates(m, []) == {}
    assert len(build_optimizer(m, "SGD", 0.01, gates=gates.values()).param_groups) == 3  # x1: as before
    opt = build_optimizer(m, "SGD", 0.01, gates=gates.values(), gate_lr_mult=100)
    assert len(opt.param_groups) == 4
    g = opt.param_groups[3]
    assert g["params"] == [m.model[9].gate] and g["lr"] == pytest.approx(1.0) and g["weight_decay"] == 0
    assert all(p is not m.model[9].gate for grp in opt.param_groups[:3] for p in grp["params"])
    with pytest.raises(KeyError, match="model.99"):
        faded_gates(m, ["model.99"])


@pytest.mark.parametrize("cfg", ["yolov5n_CC.yaml", "yolov5n_DA.yaml", "yolov5n_NonLocal.yaml"])
def test_blocks_with_their_own_zero_scale_are_faded_and_logged(cfg):
    """DA / CC / NonLocal: the paper inits their residual scales to 0 (gate 1); identity start sets the
    scales to 1 and the gate to 0 like any block, so the fade drives them; the logged opening is gate x scale."""
    from models.attention._base import identity_start
    from models.gates import attention_gates

    torch.manual_seed(0)
    m = DetectionModel(cfg, nc=3)
    block = m.model[9]
    scales = [p for n, p in block.named_parameters() if n in ("alpha", "beta", "gamma", "w.bn.weight")]
    assert scales and all(float(p.detach().abs().max()) == 0 for p in scales) and block.gate.item() == 1.0
    assert attention_gates(m)["model.9"] == 0.0  # the paper's init is the identity and reads 0
    with torch.no_grad():  # as training would move them
        for p in block.parameters():
            if p is not block.gate:
                p.add_(0.25)
    assert attention_gates(m)["model.9"] > 0.2
    identity_start(m)
    assert block.gate.item() == 0.0 and all(torch.equal(p, torch.ones_like(p)) for p in scales)
    assert attention_gates(m)["model.9"] == 0.0
    c = next(mod for mod in block.modules() if isinstance(mod, torch.nn.Conv2d)).in_channels
    x = torch.randn(2, c, 4, 4)
    assert torch.equal(block(x), x)  # 0 does mean identity
    assert list(faded_gates(m, ["model.9"])) == ["model.9"]  # driven by the schedule like every block
    with torch.no_grad():
        block.gate.fill_(0.5)
        for p in scales:
            p.fill_(0.5)
    assert attention_gates(m)["model.9"] == pytest.approx(0.25)  # gate x mean |scale|
    block(x).sum().backward()
    assert block.gate.grad.abs().item() > 0 and all(p.grad.abs().sum() > 0 for p in scales)  # no deadlock


# ---- train.py


def test_default_fine_tune_opens_the_gate_and_trains_the_block(synth, base_pt, tmp_path):
    """Default hyperparameters, 2 epochs x 4 batches of 2 images at 64 px (8 optimizer steps).

    Threshold: the gate must reach 0.07 (= 7/100, the fade's value at the last batch, index 7;
    the fade lasts max(3 epochs, 100 batches)). Before the fade, the optimizer alone moved an
    identity-started gate by less than 0.001 in 12 epochs of coco128, so any regrouping of
    parameters that stops the gate from opening fails here by two orders of magnitude.
    The block's own weights must move too (their gradient is proportional to the gate).
    """
    out, log = _finetune(synth, base_pt, tmp_path, epochs=2, save_period=1)
    assert "Identity start for 1 new attention block(s): model.9" in log
    assert "Zero start for 1 of 1 new block(s) (hyp gate_zero_start)" in log
    assert "Calibrated 1 new block(s) on 8 training images (hyp gate_calibration_images)" in log  # min(32, 8)
    assert "Gates of model.9: faded in from 0 to 1 over 100 batches (25 epochs)" in log  # 4 batches per epoch
    assert ("the fade of the blocks' gates lasts 100 batches (25 epochs) but training stops after 8 (2 epochs): "
            "the blocks end part-way, gate 0.07") in log
    assert "Train for at least 25 epochs" in log
    ep1 = load_checkpoint(out["save_dir"] / "weights" / "epoch1.pt")
    sd = ep1["model"]["state_dict"]
    assert sd["model.9.gate"].item() == pytest.approx(0.07) and sd["model.9.gate"].item() >= 0.07 - 1e-6
    fresh = DetectionModel("yolov5n_CBAM.yaml", nc=3)
    load_pretrained(load_checkpoint(base_pt)["model"], fresh)
    w0 = fresh.state_dict()["model.9.spatial.weight"]
    assert (sd["model.9.spatial.weight"] - w0).abs().max() > 1e-5  # the block learned
    assert sd["model.9.spatial.weight"].abs().max() > 0  # its zero-started layer moved off 0 (gate <= 0.07, EMA: little)
    scale = sd["model.9.out_scale"]  # the calibrated output scale travels in the checkpoint
    # CBAM multiplies by two sigmoid maps < 1: every channel's scale > 1, ~4 on average when fresh
    assert scale.shape == (256,) and bool((scale > 1).all()) and scale.mean() > 2
    assert torch.equal(ep1["ema"]["state_dict"]["model.9.out_scale"], scale)  # fixed: not trained, same in the EMA
    assert ep1["identity_blocks"] == ["model.9"]
    # logged per epoch: a column per new block (the EMA model's gate) and a line
    rows = _rows(out["save_dir"] / "results.csv")
    assert list(rows[0]) == train.CSV_KEYS + ["gate/model.9"]
    assert 0 < float(rows[0]["gate/model.9"]) < float(rows[1]["gate/model.9"]) <= 0.07
    assert "epoch 1 gates: model.9=0.0" in log


def test_resume_continues_the_fade(synth, base_pt, tmp_path):
    """Stopped after epoch 0 and resumed: the gate follows the schedule to the same value as without the stop."""
    out, _ = _finetune(synth, base_pt, tmp_path / "a", epochs=3, save_period=1)
    full = load_checkpoint(out["save_dir"] / "weights" / "epoch2.pt")["model"]["state_dict"]["model.9.gate"].item()
    assert full == pytest.approx(11 / 100)
    stopped = tmp_path / "b" / "exp" / "weights"
    stopped.mkdir(parents=True)
    shutil.copy(out["save_dir"] / "weights" / "epoch0.pt", stopped / "last.pt")
    with LogLines() as log:
        res = train.run(resume=str(stopped / "last.pt"), device="cpu", workers=0)
    assert "Gates of model.9: faded in" in "\n".join(log.lines)
    assert load_checkpoint(res["last"])["model"]["state_dict"]["model.9.gate"].item() != 0  # sanity
    gate = float(_rows(res["save_dir"] / "results.csv")[-1]["gate/model.9"])
    full_ema = float(_rows(out["save_dir"] / "results.csv")[-1]["gate/model.9"])
    assert gate == pytest.approx(full_ema, abs=1e-4)
    assert "Calibrated" not in "\n".join(log.lines)  # the resumed run keeps the checkpoint's scale
    scale = load_checkpoint(res["last"])["model"]["state_dict"]["model.9.out_scale"]
    assert torch.equal(scale, load_checkpoint(out["save_dir"] / "weights" / "epoch0.pt")["model"]["state_dict"]
                       ["model.9.out_scale"])


def test_residual_form_is_trained_resumed_and_fine_tuned_on(synth, base_pt, tmp_path):
    """SK has no layer to zero: its zero start is x + gate * a * f(x) with a trainable a = 0. a must be in
    the optimizer (it is created before it), move, survive resume, and carry over to a further fine-tune."""
    out, log = _finetune(synth, base_pt, tmp_path / "a", cfg="yolov5n_SK.yaml", epochs=2, save_period=1)
    assert "(1 in the residual form x + gate * a * f(x), a = 0: model.9)" in log
    ep0 = load_checkpoint(out["save_dir"] / "weights" / "epoch0.pt")
    a0 = ep0["model"]["state_dict"]["model.9.residual_scale"]
    a1 = load_checkpoint(out["last"])["model"]["state_dict"]["model.9.residual_scale"]
    assert a0.shape == (1,) and a0.item() != 0 and a1.item() != a0.item()  # trained from 0
    assert "model.9.residual_scale" in ep0["ema"]["state_dict"]
    stopped = tmp_path / "b" / "exp" / "weights"
    stopped.mkdir(parents=True)
    shutil.copy(out["save_dir"] / "weights" / "epoch0.pt", stopped / "last.pt")
    res = train.run(resume=str(stopped / "last.pt"), device="cpu", workers=0)  # the optimizer state fits
    assert load_checkpoint(res["last"])["model"]["state_dict"]["model.9.residual_scale"].item() != a0.item()
    with LogLines() as lg:
        on = train.run(data=str(synth), weights=str(out["last"]), cfg="yolov5n_SK.yaml", project=str(tmp_path / "c"),
                       epochs=1, **TINY)
    assert "Identity start" not in "\n".join(lg.lines)  # the block came with its weights and its form
    sd = load_checkpoint(on["last"])["model"]["state_dict"]
    assert "model.9.residual_scale" in sd and sd["model.9.residual_scale"].item() != a1.item()


def test_fine_tuning_on_from_a_part_way_fade_continues_it(synth, base_pt, tmp_path):
    """A 2-epoch run ends at gate 0.07 of a 100-batch fade (and warns). Fine-tuning on from its last.pt
    (--weights) keeps the block's weights and fades the gate on from 0.07 to 1, instead of leaving it
    at 0.07 as an ordinary parameter that hardly moves; resuming that run keeps the start."""
    first, log = _finetune(synth, base_pt, tmp_path / "a", epochs=2)
    assert "fine-tune on from this run's last.pt (--weights; the fade continues from where it ended)" in log
    ck = load_checkpoint(first["last"])
    assert ck["fading_blocks"] == ["model.9"] and ck["fade_start"] == {}
    g0 = (ck.get("ema") or ck["model"])["state_dict"]["model.9.gate"].item()  # the weights a fine-tune takes
    assert 0.05 < g0 <= 0.07  # the EMA lags the fade's 0.07
    out, log = _finetune(synth, first["last"], tmp_path / "b", epochs=2, save_period=1)
    assert "Identity start" not in log and "Zero start" not in log  # the block keeps what it learnt
    assert f"model.9 (gate {g0:.2f}) of last.pt ended part-way through its fade: the fade continues from there" in log
    assert f"faded in from 0 (model.9 from {g0:.2f}: continuing an earlier run's fade) to 1 over 100 batches" in log
    assert f"the blocks end part-way, gate {g0 + (1 - g0) * 7 / 100:.2f}." in log  # from where this fade began
    for extra, why in (({"no_identity_start": True}, "--no-identity-start"),
                       ({"hyp": {**load_hyp(None), "gate_schedule": "train"}}, "hyp gate_schedule: train")):
        _, lg = _finetune(synth, first["last"], tmp_path / why.replace(" ", "_"), epochs=1, noval=True, **extra)
        assert (f"model.9 (gate {g0:.2f}) of last.pt ended part-way through its fade; with {why} it stays there" in lg
                and "the fade continues" not in lg), why
    ep0 = load_checkpoint(out["save_dir"] / "weights" / "epoch0.pt")
    gate = ep0["model"]["state_dict"]["model.9.gate"].item()
    assert gate == pytest.approx(g0 + (1 - g0) * 3 / 100, abs=1e-5)  # batch 3 of the new fade
    assert ep0["fade_start"] == {"model.9": pytest.approx(g0)} and ep0["fading_blocks"] == ["model.9"]
    assert list(_rows(out["save_dir"] / "results.csv")[0])[-1] == "gate/model.9"
    stopped = tmp_path / "c" / "exp" / "weights"
    stopped.mkdir(parents=True)
    shutil.copy(out["save_dir"] / "weights" / "epoch0.pt", stopped / "last.pt")
    res = train.run(resume=str(stopped / "last.pt"), device="cpu", workers=0)
    resumed = load_checkpoint(res["last"])["model"]["state_dict"]["model.9.gate"].item()
    uninterrupted = load_checkpoint(out["last"])["model"]["state_dict"]["model.9.gate"].item()
    assert resumed == pytest.approx(uninterrupted, abs=1e-5) and resumed > gate  # as without the stop


def test_no_identity_start_and_scratch_untouched(synth, base_pt, tmp_path):
    out, log = _finetune(synth, base_pt, tmp_path / "a", epochs=1, no_identity_start=True)
    assert "Gates of" not in log  # no schedule: the paper's block (gate 1), trained as any weight
    assert "Calibrated" not in log and "model.9.out_scale" not in load_checkpoint(out["last"])["model"]["state_dict"]
    gate = float(_rows(out["save_dir"] / "results.csv")[-1]["gate/model.9"])
    assert 0.9 < gate < 1.1
    with LogLines() as lg:
        out = train.run(data=str(synth), weights="", cfg="yolov5n_CBAM.yaml", project=str(tmp_path / "b"),
                        epochs=1, **TINY)
    assert "Gates of" not in "\n".join(lg.lines)
    assert list(_rows(out["save_dir"] / "results.csv")[0]) == train.CSV_KEYS  # no new blocks to log
    assert load_checkpoint(out["last"])["model"]["state_dict"]["model.9.gate"].item() == pytest.approx(1, abs=0.05)
