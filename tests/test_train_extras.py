"""train.py: TensorBoard event files, --image-weights, --quad, and --evolve in two processes at once
(on SQLite and on PostgreSQL)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from data.synthetic import make_synthetic
from utils.data import sampling

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(imgsz=64, batch_size=4, workers=0, device="cpu", weights="", noautoanchor=True)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """The train tests' tiny set: 8 train / 4 val images, 3 classes (generated here at 64 px)."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, imgsz=64, seed=0)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_gates_and_mosaic(synth, tmp_path):
    out = train.run(data=str(synth), cfg="yolov5n_CBAM.yaml", epochs=2, project=str(tmp_path), noplots=True, **FAST)
    d = out["save_dir"]
    assert list(d.glob("events.out.tfevents.*"))
    acc = _events(d)
    tags = set(acc.Tags()["scalars"])
    assert set(train.CSV_KEYS) - {"epoch"} <= tags
    rows = _rows(d / "results.csv")
    for k in ("train/box_loss", "metrics/mAP_0.5:0.95", "metrics/precision", "x/lr0", "val/obj_loss"):
        ev = acc.Scalars(k)
        assert [e.step for e in ev] == [0, 1]
        np.testing.assert_allclose([e.value for e in ev], [float(r[k]) for r in rows], rtol=1e-5, atol=1e-7)
    gates = sorted(t for t in tags if t.startswith("gates/"))
    model = train.DetectionModel("yolov5n_CBAM.yaml", nc=3)
    n_blocks = sum(type(m).__name__ == "CBAM" for m in model.modules())
    assert len(gates) == n_blocks >= 1
    assert all(len(acc.Scalars(g)) == 2 for g in gates)
    # from scratch the gates start at 1 (paper form) and move with training
    assert [acc.Scalars(g)[0].value for g in gates] != [1.0] * len(gates)
    img = acc.Images("train/mosaic")
    assert len(img) == 1 and (img[0].width, img[0].height) == (64, 64)


def test_image_weights_resample_each_epoch(synth, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    real = sampling.WeightedImageSampler.set_weights

    def spy(self, w):
        seen.append(np.asarray(w, dtype=np.float64).copy())
        real(self, w)

    monkeypatch.setattr(sampling.WeightedImageSampler, "set_weights", spy)
    out = train.run(data=str(synth), cfg="yolov5n.yaml", epochs=2, project=str(tmp_path), noplots=True,
                    image_weights=True, **FAST)
    assert len(seen) == 2  # once per epoch
    from utils.data.dataset import YoloDataset

    labels = YoloDataset(str(Path(synth).parent / "images" / "train"), 64).labels
    np.testing.assert_allclose(seen[0], sampling.image_weights(labels, 3, np.zeros(3)))  # no mAP yet
    assert out["results"] and len(out["maps"]) == 3
    with pytest.raises(ValueError, match="not supported with DDP"):
        from utils.data.dataset import create_dataloader

        create_dataloader(str(Path(synth).parent / "images" / "train"), 64, 4, 32, image_weights=True, rank=0)


def test_quad_trains_on_double_size(synth, tmp_path):
    out = train.run(data=str(synth), cfg="yolov5n.yaml", epochs=1, project=str(tmp_path), noplots=True,
                    quad=True, **FAST)
    img = _events(out["save_dir"]).Images("train/mosaic")
    assert (img[0].width, img[0].height) == (128, 128)  # 4 images of 64 px -> one of 128 px
    rows = _rows(out["save_dir"] / "results.csv")
    assert len(rows) == 1 and np.isfinite(float(rows[0]["train/box_loss"]))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_evolve_two_processes_share_one_study(database, synth, tmp_path, request):
    """2 processes, one study (SQLite, or a PostgreSQL server started for the tests), 4 trials in
    all: 4 COMPLETE, distinct, none run twice or lost."""
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}" if database == "sqlite" else request.getfixturevalue("pg_url")
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(synth), "--weights", "", "--cfg", "yolov5n.yaml",
           "--img", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
           "--noautoanchor", "--evolve", "4", "--evolve-storage", url, "--project", str(tmp_path), "--name", "ev",
           "--exist-ok"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    study = optuna.load_study(study_name="evolve", storage=url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    assert all(sum(f"trial {t.number} ->" in x for x in logs) == 1 for t in complete)  # each trained once
    d = tmp_path / "ev"
    rows = _rows(d / "evolve.csv")
    assert sorted(int(float(r["trial"])) for r in rows) == sorted(t.number for t in complete)
    assert (d / "hyp_evolve.yaml").is_file() and (d / "evolve.png").is_file()
    assert all((d / f"trial{t.number}" / "results.csv").is_file() for t in complete)
