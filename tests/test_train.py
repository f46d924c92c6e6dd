"""train.py end to end on tiny synthetic data: outputs, checkpoints, resume after SIGKILL, bad input, NaN."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data.synthetic import make_synthetic
from models.checkpoint import CheckpointError, load_checkpoint, load_model
from tests.logcapture import LogLines
from utils.data.dataset_config import DatasetNotFoundError

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(imgsz=128, batch_size=4, workers=0, device="cpu", exist_ok=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """8 train / 4 val images of 128 px, 3 classes."""
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, imgsz=128, seed=0)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(synth, tmp_path_factory):
    """Two epochs from scratch at --img 120 (rounded to 128), plots on."""
    project = tmp_path_factory.mktemp("runs")
    with LogLines() as log:
        out = train.run(data=str(synth), weights="", cfg="yolov5n.yaml", epochs=2, project=str(project),
                        **{**FAST, "imgsz": 120})
    return out, log.text


def test_run_outputs(tiny_run):
    out, log = tiny_run
    d = out["save_dir"]
    for f in ("hyp.yaml", "opt.yaml", "results.csv", "results.png", "labels.jpg", "train_batch0.jpg",
              "train_batch1.jpg", "train_batch2.jpg", "weights/last.pt", "weights/best.pt", "confusion_matrix.png",
              "PR_curve.png"):
        assert (d / f).is_file(), f
    rows = _rows(d / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert list(rows[0]) == train.CSV_KEYS
    assert len(out["results"]) == 7
    assert out["metrics"]["map50"] == out["results"][2] and out["train_time"] > 0
    assert "--img-size 120 must be a multiple of the max stride 32; updating to 128" in log
    assert "Starting training for 2 epochs" in log


def test_checkpoints_plain_and_loadable(tiny_run):
    out, _ = tiny_run
    for f in (out["last"], out["best"]):
        ck = torch.load(f, weights_only=True)  # plain data only
        assert ck["model"]["yaml"]["nc"] == 3 and ck["model"]["names"] == ["circle", "square", "triangle"]
        assert isinstance(ck["opt"]["save_dir"], str) and ck["opt"]["epochs"] == 2
        assert "optimizer" not in ck  # finished runs are stripped
        m = load_model(f)
        assert m.names == ["circle", "square", "triangle"]
        with torch.no_grad():
            y = m(torch.zeros(1, 3, 128, 128))[0]
        assert y.shape[-1] == 8


def test_bad_input(synth, tmp_path):
    p = dict(project=str(tmp_path), epochs=1, **FAST)
    with pytest.raises(DatasetNotFoundError, match="missing_dataset"):
        train.run(data={"path": str(tmp_path / "missing_dataset"), "train": "images", "val": "images",
                        "names": ["a"]}, weights="", cfg="yolov5n.yaml", **p)
    with pytest.raises(FileNotFoundError, match="yolov5n_NoSuchBlock"):
        train.run(data=str(synth), weights="", cfg="yolov5n_NoSuchBlock.yaml", **p)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        train.run(data=str(synth), weights=str(junk), **p)
    with pytest.raises(ValueError, match="batch-size must be a positive integer"):
        train.run(data=str(synth), weights="", cfg="yolov5n.yaml", **{**p, "batch_size": 0})
    # the command line turns these into one clear line and exit code 1
    assert train.cli(["--data", str(synth), "--weights", str(junk), "--project", str(tmp_path),
                      "--device", "cpu", "--epochs", "1"]) == 1


def test_nan_loss_stops_and_keeps_last(synth, tmp_path, monkeypatch):
    real = train.ComputeLoss

    class NanAfterFirstEpoch(real):
        calls = 0

        def __call__(self, preds, targets):
            loss, items = super().__call__(preds, targets)
            if preds[0].requires_grad:  # training batches only
                NanAfterFirstEpoch.calls += 1
                if NanAfterFirstEpoch.calls > 2:  # 8 images / batch 4 = 2 batches per epoch
                    loss = loss * float("nan")
            return loss, items

    monkeypatch.setattr(train, "ComputeLoss", NanAfterFirstEpoch)
    with pytest.raises(train.TrainingError, match="loss is nan at epoch 1, batch 0") as e:
        train.run(data=str(synth), weights="", cfg="yolov5n.yaml", epochs=3, project=str(tmp_path), noplots=True,
                  **FAST)
    assert "last.pt keeps the weights of the last completed epoch" in str(e.value)
    last = tmp_path / "exp" / "weights" / "last.pt"
    ck = torch.load(last, weights_only=True)
    assert ck["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["model"]["state_dict"].values() if v.is_floating_point())


def _cli_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sigkill_during_epoch_then_resume(synth, tmp_path):
    """Kill -9 in the second epoch; `--resume` finishes; every epoch once in results.csv; last.pt always readable."""
    project = tmp_path / "runs"
    args = [sys.executable, str(ROOT / "train.py"), "--data", str(synth), "--weights", "", "--cfg", "yolov5n.yaml",
            "--img", "128", "--batch-size", "2", "--epochs", "3", "--workers", "0", "--device", "cpu", "--noplots",
            "--project", str(project)]
    last = project / "exp" / "weights" / "last.pt"
    bad: list[str] = []
    stop_watch = threading.Event()

    def watch():  # open last.pt whenever it is there, as a user or a crash would
        while not stop_watch.is_set():
            if last.exists():
                try:
                    torch.load(last, weights_only=True)
                except Exception as e:  # noqa: BLE001
                    bad.append(repr(e))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    log_file = tmp_path / "first.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_cli_env(tmp_path))
        deadline = time.time() + 240
        killed = False
        while time.time() < deadline and proc.poll() is None:
            text = log_file.read_text(errors="replace")
            if "epoch 0:" in text and "1/2" in text.split("epoch 0:")[-1]:  # a batch of epoch 1 has run
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
        proc.wait(timeout=30)
    assert killed, log_file.read_text()[-2000:]
    assert [int(r["epoch"]) for r in _rows(project / "exp" / "results.csv")] == [0]
    assert load_checkpoint(last)["epoch"] == 0
    with open(project / "exp" / "results.csv", "a") as f:  # as if a kill had cut a row short
        f.write("1,0.0812,0.03")

    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "--project", str(project),
                        "--workers", "0", "--device", "cpu"], capture_output=True, text=True, timeout=300,
                       env=_cli_env(tmp_path))
    stop_watch.set()
    watcher.join(timeout=5)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Resuming from" in r.stderr and "at epoch 1/2" in r.stderr
    rows = _rows(project / "exp" / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # the warmup/schedule continued: LR of the last batch of each epoch (4 batches, all in warmup)
    hyp = train.load_hyp(None)
    lf = train.lr_lambda(3, hyp["lrf"])
    for r_ in rows:
        e = int(r_["epoch"])
        ni = 4 * e + 3
        assert float(r_["x/lr1"]) == pytest.approx(np.interp(ni, [0, 100], [0, hyp["lr0"] * lf(e)]))
        assert float(r_["x/lr0"]) == pytest.approx(np.interp(ni, [0, 100], [hyp["warmup_bias_lr"], hyp["lr0"] * lf(e)]))
    assert not bad, bad[:3]
    assert not (project / "exp2").exists()


def _finetune_into_cbam(tiny_run, project: Path, **flags) -> tuple[dict, dict, str]:
    """`train.py --weights <tiny run's last.pt> --cfg yolov5n_CBAM.yaml --freeze 10 --noval` plus
    `flags`; returns the run's result, the source state dict and the log text."""
    out, _ = tiny_run
    src = load_checkpoint(out["last"])
    with LogLines() as log:
        res = train.run(data=src["opt"]["data"], weights=str(out["last"]), cfg="yolov5n_CBAM.yaml",
                        project=str(project), freeze=[10], noval=True, noplots=True, **FAST, **flags)
    return res, src["model"]["state_dict"], log.text


def test_finetune_into_attention_config_with_options(tiny_run, tmp_path):
    """--weights <our last.pt> --cfg yolov5n_CBAM.yaml --freeze 10 and many flags at once."""
    res, src, text = _finetune_into_cbam(tiny_run, tmp_path, epochs=2, rect=True, single_cls=True,
                                         optimizer="AdamW", cos_lr=True, multi_scale=True, label_smoothing=0.1,
                                         cache="ram", save_period=1)
    # single-cls changes the head's shape: all but Detect's 3 convs (weight + bias) transfer
    n = len(src)
    assert f"Transferred {n - 6}/{n} items from last.pt" in text
    assert "Identity start for 1 new attention block(s): model.9" in text
    d = res["save_dir"]
    assert (d / "weights" / "epoch0.pt").is_file() and (d / "weights" / "epoch1.pt").is_file()
    rows = _rows(d / "results.csv")
    assert float(rows[0]["metrics/mAP_0.5"]) == 0.0  # --noval: only the final epoch is validated
    # frozen backbone (layers 0-8 of the source = 0-8 here) did not move; the head did
    ck = load_checkpoint(d / "weights" / "epoch1.pt")["model"]["state_dict"]
    assert torch.equal(ck["model.0.conv.weight"], src["model.0.conv.weight"])
    assert torch.equal(ck["model.8.cv1.conv.weight"], src["model.8.cv1.conv.weight"])
    assert not torch.equal(ck["model.11.conv.weight"], src["model.10.conv.weight"])
    # --freeze 10 counts the weights' layers: their SPPF (9) is layer 10 here and is frozen too
    assert "--freeze counts the layers of last.pt: its layers 0-9 are layers 0-8, 10 of yolov5n_CBAM.yaml" in text
    assert "Freezing layers 0-8, 10:" in text
    assert torch.equal(ck["model.10.cv2.conv.weight"], src["model.9.cv2.conv.weight"])
    assert load_checkpoint(d / "weights" / "epoch1.pt")["frozen_layers"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    # the inserted block (layer 9 < 10) is new, so it is trained, not frozen; it started closed and the
    # default fade (over 100 batches) set it to 3/100 at the last batch (index 3), untouched by AdamW
    assert "model.9" in text.split("Not freezing new layers:")[1].splitlines()[0]
    assert ck["model.9.gate"].item() == pytest.approx(0.03)
    assert 0 < float(rows[-1]["gate/model.9"]) <= 0.03  # logged: the EMA's gate


def test_freeze_indices_follow_the_transfer_pairing():
    """Pretrained layers moved by an insertion are frozen where they went; replaced ones are named."""
    with LogLines() as log:
        assert train._map_frozen_layers([0, 1, 2], {0: 0, 1: 1, 2: 2}, "a.pt", "b.yaml", 3) == [0, 1, 2]
    assert not log.lines  # same numbering: nothing to say
    with LogLines() as log:
        out = train._map_frozen_layers(list(range(10)), {i: i + (i >= 4) for i in range(10) if i != 8}, "w.pt",
                                       "c.yaml", 25)
    assert out == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    assert "its layers 0-9 are layers 0-3, 5-8, 10 of c.yaml" in log.text
    assert "layer(s) 8 of w.pt have no counterpart in c.yaml" in log.text
    assert "ignored" not in log.text
    # --freeze 30 on weights with 25 layers: the indices past the last are named as such, not as "replaced"
    with LogLines() as log:
        out = train._map_frozen_layers(list(range(30)), {i: i + (i >= 10) for i in range(25)}, "w.pt", "c.yaml", 25)
    assert out == list(range(10)) + list(range(11, 26))
    assert "w.pt has layers 0-24; 25-29 ignored" in log.text and "no counterpart" not in log.text
    assert train._freeze_layers([10]) == list(range(10)) and train._freeze_layers([0]) == []
    assert train._freeze_layers([3, 1]) == [1, 3]


def test_no_identity_start_keeps_the_papers_block_and_still_thaws_it(tiny_run, tmp_path):
    res, src, text = _finetune_into_cbam(tiny_run, tmp_path, epochs=1, no_identity_start=True)
    assert "1 new attention block(s) start as in their papers (no identity start): model.9" in text
    assert "Identity start" not in text
    assert "model.9" in text.split("Not freezing new layers:")[1].splitlines()[0]
    ck = load_checkpoint(res["last"])
    sd = ck["model"]["state_dict"]
    assert abs(sd["model.9.gate"].item() - 1) < 0.5  # started open (1), not closed (0)
    assert torch.equal(sd["model.8.cv1.conv.weight"], src["model.8.cv1.conv.weight"])  # frozen
    assert ck["opt"]["no_identity_start"] is True


def test_resume_after_interrupt_between_checkpoint_and_log(tiny_run, tmp_path, monkeypatch):
    """Interrupted right after epoch 0's checkpoint (before its results.csv row): resume restores the row,
    keeps the inserted block trainable inside the frozen range (same optimizer groups) and finishes."""
    out, _ = tiny_run
    data = load_checkpoint(out["last"])["opt"]["data"]
    real = train._append_csv

    def interrupt(path, row):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_append_csv", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.run(data=data, weights=str(out["last"]), cfg="yolov5n_CBAM.yaml", epochs=2, project=str(tmp_path),
                  freeze=[10], noplots=True, **FAST)
    last = tmp_path / "exp" / "weights" / "last.pt"
    ck = load_checkpoint(last)
    assert ck["epoch"] == 0 and ck["new_blocks"] == ["model.9."]
    assert not (tmp_path / "exp" / "results.csv").exists()
    monkeypatch.setattr(train, "_append_csv", real)
    # --workers / --device follow the command only when given: a bare --resume keeps the run's (not the default 8)
    assert ck["opt"]["workers"] != 8 and train._prepare_resume(train.parse_opt(["--resume", str(last)])).workers == \
        ck["opt"]["workers"]
    assert train._prepare_resume(train.parse_opt(["--resume", str(last), "--workers", "3"])).workers == 3
    assert train._prepare_resume(train.parse_opt(["--resume", str(last), "--workers", "8"])).workers == 8  # given
    with LogLines() as log:  # options given with --resume are not used: said in one line, not silently
        res = train.run(resume=str(last), workers=0, device="cpu", epochs=5, label_smoothing=0.3)
    assert res["save_dir"] == tmp_path / "exp"
    warned = [ln for ln in log.lines if "--resume continues" in ln]
    assert len(warned) == 1 and "--epochs 5 (the run has 2)" in warned[0] and "--label-smoothing 0.3" in warned[0]
    assert "--device" not in warned[0] and "--workers" not in warned[0]
    rows = _rows(tmp_path / "exp" / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[0]["train/box_loss"]) == pytest.approx(ck["results"]["train/box_loss"])


# ------------------------------------------------------------------ issue 13
def test_multi_scale_sizes_respect_the_floor():
    from utils.torch_utils import multi_scale_resize, multi_scale_sizes

    assert multi_scale_sizes(64, 32) == [64, 96]  # 0.5 x 64 = 32 would leave a 1x1 last feature map
    assert multi_scale_sizes(640, 32) == list(range(320, 961, 32))
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        for shape in ((1, 3, 64, 64), (2, 3, 64, 128)):  # square and rectangular batches
            out = multi_scale_resize(torch.rand(shape), 64, 32)
            assert min(out.shape[2:]) >= 64 and all(s % 32 == 0 for s in out.shape[2:])
            seen.add(tuple(out.shape[2:]))
    assert len(seen) > 2  # it does vary


def test_img_floor_message_names_the_rule(tmp_path):
    from utils.cli import check_img_size

    with LogLines() as log:
        assert check_img_size(32, 32, floor=64) == 64
        assert check_img_size(70, 32, floor=64) == 96
    assert "--img-size 32 must be at least 64 (2 x max stride 32" in log.text
    assert "multiple of the max stride 32, updating" not in log.text and "--img-size 32 must be a multiple" not in log.text
    assert "--img-size 70 must be a multiple of the max stride 32; updating to 96" in log.text


def test_error_inside_the_model_names_layer_and_shape():
    from models.yolo import DetectionModel, ModelConfigError

    m = DetectionModel("yolov5n.yaml", nc=3).train()
    with pytest.raises(ModelConfigError, match=r"yolov5n\.yaml: layer \d+ \(.+\) fails on input of shape "
                                               r"\(1, 128, 2, 2\) \(from -1, in training\).*Expected more than 1 value"):
        m(torch.rand(1, 3, 32, 32))  # the last feature map is 1x1: batch norm fails on a batch of 1


def test_tiny_multi_scale_run_with_batch_1(tmp_path):
    data = make_synthetic(tmp_path / "s3", n_train=3, n_val=1, imgsz=64, seed=1)
    out = train.run(data=str(data), weights="", cfg="yolov5n.yaml", epochs=1, imgsz=64, batch_size=1,
                    multi_scale=True, workers=0, device="cpu", project=str(tmp_path / "runs"), noplots=True)
    assert out["last"].is_file()


@pytest.mark.parametrize("name", ["best.onnx", "yolov5n_NonLocal.onnx", "best_openvino_model", "best.pt"])
def test_model_file_as_cfg_is_refused_before_any_work(name, synth, tmp_path, capsys):
    """issue 14 QA: `--cfg yolov5n_NonLocal.onnx` trained the shipped YAML of that name from scratch."""
    f = tmp_path / name
    f.mkdir() if name.endswith("_openvino_model") else f.write_bytes(b"model")
    project = tmp_path / "runs"
    assert train.cli(["--data", str(synth), "--cfg", str(f), "--weights", "", "--project", str(project),
                      "--device", "cpu", "--epochs", "1"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "ERROR" in ln]
    assert len(err) == 1 and f"--cfg {f} is a model file" in err[0] and "--weights" in err[0]
    assert not project.exists()


def test_failed_run_leaves_no_run_folder_and_checkpoints_follow_umask(synth, tiny_run, tmp_path):
    project = tmp_path / "runs"
    assert train.cli(["--data", str(synth), "--weights", str(tmp_path / "missing.pt"), "--project", str(project),
                      "--device", "cpu", "--epochs", "1"]) == 1
    assert train.cli(["--data", str(tmp_path / "nope.yaml"), "--cfg", "yolov5n.yaml", "--weights", "",
                      "--project", str(project), "--device", "cpu", "--epochs", "1"]) == 1
    assert not project.exists() or not list(project.iterdir())
    from models.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_run[0]["last"])
    old = os.umask(0o022)
    try:
        f = save_checkpoint(ckpt, tmp_path / "w" / "last.pt")
        assert f.stat().st_mode & 0o777 == 0o644  # like any file the user creates, not 0600
        os.umask(0o077)
        g = save_checkpoint(ckpt, tmp_path / "w" / "best.pt")
        assert g.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_resume_of_a_finished_run_is_refused_before_resuming(tiny_run, capsys):
    out, _ = tiny_run
    with LogLines() as log:
        assert train.cli(["--resume", str(out["last"]), "--device", "cpu"]) == 1
    assert "Resuming" not in log.text
    assert "finished run" in log.text and "nothing to resume" in log.text


def test_results_plot_of_one_epoch_reads_true(tmp_path, monkeypatch):
    import matplotlib.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from utils.train_plots import plot_results

    figs = []
    real_save = matplotlib.figure.Figure.savefig
    def keep(self, *a, **k):
        figs.append(self)
        return real_save(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,train/box_loss,x/lr0\n0,0.1776027,0.00999973\n")
    assert plot_results(csv_path).is_file()
    fig = figs[0]
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes[:2]:
        assert ax.get_xlim() == (-0.5, 0.5) and ax.yaxis.get_major_formatter().get_offset() == ""
        assert ax.get_lines()[0].get_marker() == "."


def test_results_plot_small_learning_rate_is_readable(tmp_path, monkeypatch):
    """One epoch, lr 1e-4: the y axis hugs the value (not -0.04..0.04) and its labels are not all "0.00"."""
    import matplotlib.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from utils.train_plots import plot_results

    figs = []
    real_save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: (figs.append(self), real_save(self, *a, **k)))
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,x/lr0,x/lr1,x/lr2\n0,0.0001,2.5e-05,0.0001\n")
    assert plot_results(csv_path).is_file()
    fig = figs[0]
    FigureCanvasAgg(fig).draw()
    for ax, v in zip(fig.axes, (1e-4, 2.5e-5, 1e-4)):
        lo, hi = ax.get_ylim()
        assert lo <= v <= hi and v / 2 <= lo and hi <= 2 * v, (ax.get_title(), lo, hi)
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        scale = ax.yaxis.get_major_formatter().get_offset()  # e.g. "1e−4"
        assert len(set(labels)) > 1 and scale, (labels, scale)


def test_exist_ok_into_an_earlier_runs_folder_starts_a_fresh_log(synth, tmp_path):
    """A run restarted from scratch with exist_ok into the folder of an interrupted one used to append
    its epochs to the old results.csv (epochs 0..7, then 0, 1, ...): the old log is set aside, not lost."""
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    (run_dir / "results.csv").write_text("epoch,x\n0,1\n1,2\n2,3\n")
    with LogLines() as log:
        out = train.run(data=str(synth), weights="", cfg="yolov5n.yaml", epochs=1, project=str(tmp_path), name="exp",
                        **{**FAST, "exist_ok": True, "imgsz": 64})
    rows = _rows(out["save_dir"] / "results.csv")
    assert [r["epoch"].strip() for r in rows] == ["0"]
    assert (run_dir / "results.prev.csv").read_text() == "epoch,x\n0,1\n1,2\n2,3\n"
    assert any("already held a results.csv from an earlier run (--exist-ok): moved to results.prev.csv" in ln
               for ln in log.lines)
