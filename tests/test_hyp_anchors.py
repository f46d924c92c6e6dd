"""The `anchors` hyperparameter (N anchors per output layer, computed by AutoAnchor): fine-tuning
with the weights' count and with another count, from scratch, and the refusals under
--noautoanchor, --evolve and --resume. QA found any `anchors: N` crashed training with
"cost matrix is infeasible" after numpy divide-by-zero warnings (log of a new/0 anchor ratio)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
from data.synthetic import make_synthetic
from models.checkpoint import CheckpointError, load_checkpoint
from tests.logcapture import LogLines
from utils.data.dataset import load_hyp
from utils.hyp import hyp_anchor_count

FAST = dict(imgsz=64, batch_size=4, workers=0, device="cpu", epochs=1, noplots=True, noval=True)
YOLOV5N_ANCHORS = 3  # per output layer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """8 train / 4 val images of 64 px, 3 classes."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, imgsz=64, seed=0)


def _hyp_file(tmp_path: Path, n: float) -> Path:
    f = tmp_path / f"hyp_anchors{n}.yaml"
    f.write_text(yaml.safe_dump({**load_hyp(None), "anchors": n}))
    return f


def _train(**kw) -> tuple[dict, str, list[str]]:
    """train.run(**kw): its result, the log text and the numpy divide-by-zero warnings raised."""
    with LogLines() as log, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = train.run(**{**FAST, **kw})
    zero = [str(w.message) for w in caught if "divide by zero" in str(w.message) or "invalid value" in str(w.message)]
    return out, log.text, zero


def _anchors(ckpt: Path) -> torch.Tensor:
    sd = load_checkpoint(ckpt)["model"]["state_dict"]
    return next(v for k, v in sd.items() if k.endswith(".anchors")).float()


def _usable(a: torch.Tensor) -> bool:
    return bool(torch.isfinite(a).all() and (a > 0).all())


def test_hyp_anchor_count_rounds_and_zero_means_the_models():
    assert hyp_anchor_count({}) == 0 and hyp_anchor_count({"anchors": 0}) == 0
    assert hyp_anchor_count({"anchors": 0.4}) == 0  # evolution proposes fractions
    assert hyp_anchor_count({"anchors": 3}) == 3 and hyp_anchor_count({"anchors": 3.7}) == 4


def test_anchors_3_finetunes_with_computed_anchors(synth, weights_n, tmp_path):
    hyp = _hyp_file(tmp_path, 3)
    out, log, zero = _train(data=str(synth), weights=str(weights_n), hyp=str(hyp), project=str(tmp_path / "runs"))
    assert not zero, zero
    assert f"hyp file {hyp}: anchors: 3 equals the anchor count of yolov5n.pt: AutoAnchor replaces its anchors" in log
    assert "the model trains with the 3 anchors per output layer computed from the labels" in log
    assert "output convolutions start new" not in log  # same count: the pretrained head is transferred whole
    a = _anchors(out["last"])
    assert a.shape == (3, YOLOV5N_ANCHORS, 2) and _usable(a)
    assert not torch.allclose(a, _anchors(weights_n))  # computed, not the checkpoint's
    assert np.isfinite(out["results"]).all()


def test_anchors_3_with_noautoanchor_keeps_the_checkpoints(synth, weights_n, tmp_path):
    hyp = _hyp_file(tmp_path, 3)
    out, log, zero = _train(data=str(synth), weights=str(weights_n), hyp=str(hyp), project=str(tmp_path / "runs"),
                            noautoanchor=True)
    assert not zero, zero
    assert "with --noautoanchor the run trains with yolov5n.pt's anchors" in log
    assert torch.equal(_anchors(out["last"]), _anchors(weights_n))


def test_anchors_4_finetune_starts_a_new_head_conv(synth, weights_n, tmp_path):
    hyp = _hyp_file(tmp_path, 4)
    out, log, zero = _train(data=str(synth), weights=str(weights_n), hyp=str(hyp), project=str(tmp_path / "runs"))
    assert not zero, zero
    assert "Detect layer 24 has 4 anchors per output layer, yolov5n.pt has 3: the head's output convolutions start new" in log
    assert f"hyp file {hyp}: anchors: 4: AutoAnchor computes the 4 anchors per output layer from the labels" in log
    a = _anchors(out["last"])
    assert a.shape == (3, 4, 2) and _usable(a)
    assert np.isfinite(out["results"]).all()


def test_anchors_4_finetune_with_noautoanchor_is_refused_in_one_line(synth, weights_n, tmp_path, capsys):
    hyp, project = _hyp_file(tmp_path, 4), tmp_path / "runs"
    assert train.cli(["--data", str(synth), "--weights", str(weights_n), "--hyp", str(hyp), "--noautoanchor",
                      "--img", "64", "--epochs", "1", "--device", "cpu", "--workers", "0", "--project", str(project)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "ERROR" in ln]
    assert len(err) == 1, err
    assert f"hyp file {hyp}: anchors: 4: yolov5n.pt has 3 anchors per output layer, not 4" in err[0]
    assert "drop --noautoanchor" in err[0] and "cost matrix" not in err[0]
    assert not project.exists() or not any(project.rglob("results.csv"))


def test_anchors_2_from_scratch(synth, tmp_path):
    hyp = _hyp_file(tmp_path, 2)
    out, log, zero = _train(data=str(synth), weights="", cfg="yolov5n.yaml", hyp=str(hyp), project=str(tmp_path / "runs"))
    assert not zero, zero
    assert "the model's 2 anchors per output layer are unset" in log
    a = _anchors(out["last"])
    assert a.shape == (3, 2, 2) and _usable(a)
    assert np.isfinite(out["results"]).all()
    with pytest.raises(ValueError, match=r"anchors: 2: a model trained from scratch has no anchors yet.*--noautoanchor"):
        train.run(**{**FAST, "data": str(synth), "weights": "", "cfg": "yolov5n.yaml", "hyp": str(hyp),
                     "project": str(tmp_path / "runs2"), "noautoanchor": True})


def test_cfg_with_an_anchor_count_and_noautoanchor_is_refused(synth, tmp_path):
    cfg = tmp_path / "count.yaml"
    d = yaml.safe_load((train.ROOT / "models" / "yolov5n.yaml").read_text())
    cfg.write_text(yaml.safe_dump({**d, "anchors": 3}))
    with pytest.raises(ValueError) as e:
        train.run(**{**FAST, "data": str(synth), "weights": "", "cfg": str(cfg), "project": str(tmp_path / "runs"),
                     "noautoanchor": True})
    msg = str(e.value)
    assert "\n" not in msg and f"{cfg}: anchors: 3 is an anchor count without sizes" in msg and "--noautoanchor" in msg


def test_evolve_searching_anchors_with_noautoanchor_is_refused_before_any_work(synth, tmp_path):
    hyp, project = _hyp_file(tmp_path, 3), tmp_path / "runs"
    with pytest.raises(ValueError, match=rf"hyp file {hyp}: key anchors is searched by --evolve \(2-10 .*--noautoanchor"):
        train.run(**{**FAST, "data": str(synth), "weights": "", "cfg": "yolov5n.yaml", "hyp": str(hyp),
                     "project": str(project), "noautoanchor": True, "evolve": 2})
    assert not project.exists()


def test_resume_of_a_model_with_unset_anchors_is_refused():
    model = train.DetectionModel("yolov5n.yaml", nc=3, anchors=3)  # zeros, as a --noautoanchor run of old left them
    run = train._Run(opt=argparse.Namespace(noautoanchor=False, cfg=""), device=torch.device("cpu"), save_dir=Path("."),
                     epochs=2, batch_size=4, weights="runs/exp/weights/last.pt", resume=True, plots=False,
                     main_proc=True, hyp_cfg={})
    with pytest.raises(CheckpointError, match=r"last.pt: its anchors are unset \(zeros\), so it cannot be resumed"):
        train._plan_anchors(run, model, 0)
    model.model[-1].anchors[:] = 1.0
    assert train._plan_anchors(run, model, 0) == ""  # set anchors: resumed as saved
