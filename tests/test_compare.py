"""compare.py on two configs with a tiny budget: every output file and column, intervals and verdicts, resume."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import pytest

import compare
from data.synthetic import make_synthetic
from tests.logcapture import LogLines

CFGS = ["yolov5n.yaml", "yolov5n_SE.yaml"]
TINY = dict(imgsz=64, epochs=1, seeds=2, batch_size=4, workers=0, runs=2, threads=1)
COLUMNS = ["config", "params", "Δparams", "GFLOPs", "CPU ms", "peak MB", "seeds", "mAP50", "mAP50-95", "gate",
           "Δ mAP50 95% CI", "Δ mAP50-95 95% CI", "verdict", "verdict mAP50"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, imgsz=64, seed=0)


@pytest.fixture(scope="module")
def compared(synth, tmp_path_factory):
    project = tmp_path_factory.mktemp("compare")
    out = compare.run(CFGS, data=str(synth), **TINY, project=str(project), name="tiny")
    return out, project / "tiny"


def test_every_output_file_and_column(compared):
    out, d = compared
    for name in ("results.csv", "results.md", "runs.jsonl", "map_vs_latency.png", "map_vs_params.png",
                 "training_curves.png", "delta_ci.png"):
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    for png in ("map_vs_latency.png", "map_vs_params.png", "training_curves.png", "delta_ci.png"):
        im = cv2.imread(str(d / png))
        assert im is not None and im.shape[0] > 300 and im.shape[1] > 500, png

    rows = list(csv.DictReader(open(d / "results.csv", encoding="utf-8")))
    assert [r["config"] for r in rows] == ["yolov5n", "yolov5n_SE"]
    assert list(rows[0]) == COLUMNS
    base, se = rows
    # the synthetic set has 3 classes: the cost is measured for the model that is trained
    from models.yolo import DetectionModel

    for row, cfg in zip(rows, CFGS):
        assert int(row["params"]) == sum(p.numel() for p in DetectionModel(cfg, nc=3).parameters())
        assert float(row["GFLOPs"]) > 0 and float(row["CPU ms"]) > 0 and float(row["peak MB"]) >= 0
        assert row["seeds"] == "2"
        for col in ("mAP50", "mAP50-95"):
            mean, std = (float(v) for v in row[col].split(" ± "))
            assert 0 <= mean <= 1 and std >= 0
    assert int(se["params"]) > int(base["params"]) and float(se["GFLOPs"]) >= float(base["GFLOPs"])
    assert base["Δparams"] == "+0.00%" and se["Δparams"].startswith("+")
    # from scratch the blocks are the paper's (gate starts at 1); the baseline has no gate
    assert base["gate"] == "-" and abs(float(se["gate"]) - 1) < 0.05
    assert base["Δ mAP50-95 95% CI"] == base["Δ mAP50 95% CI"] == "baseline"
    for col in ("Δ mAP50 95% CI", "Δ mAP50-95 95% CI"):  # "+0.012 [-0.010, +0.030]"
        m = re.fullmatch(r"([+-]\d\.\d{3}) \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", se[col])
        assert m, se[col]
        assert float(m.group(2)) <= float(m.group(3))
    assert se["verdict"].split(" (")[0] in ("better", "worse", "no detectable difference")
    for runs in out["acc"].values():  # each training run's wall and CPU time are kept (the study sums them)
        assert all(r["train_s"] > 0 and r["cpu_s"] > 0 for r in runs)

    md = (d / "results.md").read_text()
    assert "| config |" in md and "yolov5n_SE" in md
    assert "paired bootstrap" in md and "last.pt" in md and "within noise" not in md  # the note says what was used
    assert out["markdown"] in md

    recs = [json.loads(line) for line in (d / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["kind"] for r in recs) == ["cost"] * 2 + ["eval"] * 4 + ["train"] * 4
    for r in recs:
        if r["kind"] == "train":
            assert Path(r["result"]["results_csv"]).is_file()
        if r["kind"] == "eval":  # the final weights, never best.pt
            assert r["cfg"].endswith("last.pt") and Path(r["result"]["stats"]).is_file()


def _forbid(monkeypatch, *names: str) -> None:
    """Make each named compare function fail the test if it is called (work that must be skipped)."""
    for name in names:
        def boom(*a, _name=name, **k):
            raise AssertionError(f"{_name} called: the run should have been skipped")

        monkeypatch.setattr(compare, name, boom)


def test_rerun_skips_everything(compared, synth, monkeypatch):
    _, d = compared
    _forbid(monkeypatch, "measure_cost", "train_once", "evaluate")
    before = (d / "runs.jsonl").read_text()
    out = compare.run(CFGS, data=str(synth), **TINY, project=str(d.parent), name="tiny")
    assert (d / "runs.jsonl").read_text() == before
    assert [r["config"] for r in out["rows"]] == ["yolov5n", "yolov5n_SE"]


def test_report_trains_nothing_and_names_what_is_missing(compared, synth, monkeypatch):
    _, d = compared
    _forbid(monkeypatch, "train_once", "evaluate")
    out = compare.run([*CFGS, "yolov5n_CA.yaml"], data=str(synth), **TINY, project=str(d.parent), name="tiny",
                      report=True)
    assert [r["seeds"] for r in out["rows"]] == [2, 2, 0]
    assert out["rows"][1]["Δ mAP50-95 95% CI"] != "-" and out["rows"][2]["verdict"] == "-"
    assert "Not trained yet" in (d / "results.md").read_text() and "yolov5n_CA seed 1" in (d / "results.md").read_text()
    assert compare.parse_opt(["--cfg", "a.yaml", "--report"]).report
    assert compare.parse_opt(["--cfg", "a.yaml", "--half"]).half  # README promises the flag


def test_interrupted_run_resumes_where_it_stopped(synth, tmp_path, monkeypatch):
    """Stop during the third training run (and leave a torn line): the rerun trains only what is missing."""
    calls: list[tuple[str, int]] = []
    real_train = compare.train_once
    settings = dict(TINY, epochs=1, seeds=2)

    def fake_cost(cfg, *a, **k):
        return {"params": 1000 + len(cfg), "gflops": 1.0, "cpu_ms": 1.0, "gpu_ms": None, "peak_mem_mb": 1.0}

    def interrupted(cfg, seed, opt, root, **k):
        calls.append((cfg, seed))
        if len(calls) == 3:
            with open(tmp_path / "exp" / "runs.jsonl", "a") as f:
                f.write('{"key": "half-writ')  # killed while appending
            raise KeyboardInterrupt
        return real_train(cfg, seed, opt, root, **k)

    monkeypatch.setattr(compare, "measure_cost", fake_cost)
    monkeypatch.setattr(compare, "train_once", interrupted)
    monkeypatch.setattr(compare, "_evaluate", lambda *a, **k: {"map50": 0.5, "map": 0.3})
    with pytest.raises(KeyboardInterrupt):
        compare.run(CFGS, data=str(synth), **settings, project=str(tmp_path), name="exp")
    assert calls == [("yolov5n.yaml", 0), ("yolov5n.yaml", 1), ("yolov5n_SE.yaml", 0)]

    calls.clear()
    monkeypatch.setattr(compare, "train_once", lambda cfg, seed, opt, root, **k: calls.append((cfg, seed)) or
                        {"map50": 0.5, "map": 0.3, "results_csv": "", "train_s": 0.0})
    out = compare.run(CFGS, data=str(synth), **settings, project=str(tmp_path), name="exp")
    assert calls == [("yolov5n_SE.yaml", 0), ("yolov5n_SE.yaml", 1)]
    assert [r["seeds"] for r in out["rows"]] == [2, 2]
    calls.clear()
    compare.run(CFGS, data=str(synth), **settings, project=str(tmp_path), name="exp")
    assert calls == []  # the records written after the torn line are readable


def test_a_run_killed_mid_training_resumes_from_its_last_checkpoint(synth, tmp_path, monkeypatch):
    """A session that ends during a training run loses only the epoch in progress: the next call of
    train_once with the same settings resumes the run's last.pt; other settings train afresh."""
    import argparse

    import train

    opt = argparse.Namespace(data=str(synth), weights="", imgsz=64, epochs=3, batch_size=4, hyp=None, workers=0,
                             device="cpu", no_identity_start=False, noval=False, name="exp")
    real = train._append_csv
    monkeypatch.setattr(train, "_append_csv", lambda path, row: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed right after epoch 0's checkpoint
        compare.train_once("yolov5n.yaml", 0, opt, tmp_path)
    monkeypatch.setattr(train, "_append_csv", real)
    run = tmp_path / "yolov5n_seed0"
    assert json.loads((run / "compare_run.json").read_text())["epochs"] == 3
    with LogLines() as log:
        res = compare.train_once("yolov5n.yaml", 0, opt, tmp_path)
    assert "yolov5n_seed0: resuming the interrupted run at epoch 1" in "\n".join(log.lines)
    assert res["resumed_at"] == 1 and res["train_s"] > 0
    with open(res["results_csv"], newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    with LogLines() as log:  # finished but, say, killed before its record was written: taken as it is
        kept = compare.train_once("yolov5n.yaml", 0, opt, tmp_path)
    assert "finished training but was not recorded" in log.text
    assert kept["rebuilt"] and kept["results_csv"] == res["results_csv"]
    assert kept["train_s"] == pytest.approx(res["train_s"], abs=0.1)  # the checkpoint's cumulative loop time
    again = compare.train_once("yolov5n.yaml", 0, argparse.Namespace(**{**vars(opt), "epochs": 1}), tmp_path)
    assert "resumed_at" not in again  # other settings: trained afresh, in a folder of its own
    assert Path(again["results_csv"]).parent.name.startswith("yolov5n_seed0_")
    with open(again["results_csv"], newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0]


def test_changed_settings_or_config_are_measured_again(synth, tmp_path, monkeypatch):
    n = {"cost": 0}

    def fake_cost(cfg, *a, **k):
        n["cost"] += 1
        return {"params": 1, "gflops": 1.0, "cpu_ms": 1.0, "gpu_ms": None, "peak_mem_mb": 1.0}

    monkeypatch.setattr(compare, "measure_cost", fake_cost)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(Path("models/yolov5n.yaml").read_text())
    compare.run([str(cfg)], imgsz=64, project=str(tmp_path), name="c")
    compare.run([str(cfg)], imgsz=64, project=str(tmp_path), name="c")
    assert n["cost"] == 1
    compare.run([str(cfg)], imgsz=96, project=str(tmp_path), name="c")  # other image size
    assert n["cost"] == 2
    cfg.write_text(cfg.read_text().replace("width_multiple: 0.25", "width_multiple: 0.125"))  # edited YAML
    compare.run([str(cfg)], imgsz=64, project=str(tmp_path), name="c")
    assert n["cost"] == 3


def test_difference_columns_come_from_the_intervals():
    import numpy as np

    from utils.stats import Difference

    cost = {c: {"params": 100, "gflops": 1.0, "cpu_ms": 1.0, "peak_mem_mb": 1.0} for c in ("a", "b", "c")}
    acc = {"a": [{"map50": 0.5, "map": 0.30}, {"map50": 0.5, "map": 0.32}],
           "b": [{"map50": 0.5, "map": 0.32}, {"map50": 0.5, "map": 0.34}],
           "c": [{"map50": 0.6, "map": 0.40}, {"map50": 0.6, "map": 0.41}]}

    def diff(m, d, lo, hi):
        return Difference(m, d, lo, hi, 0.01, 0.028)

    diffs = {"b": {"mAP50": diff("mAP50", 0.0, -0.02, 0.02), "mAP50-95": diff("mAP50-95", 0.02, -0.004, 0.041)},
             "c": {"mAP50": diff("mAP50", 0.1, 0.07, 0.13), "mAP50-95": diff("mAP50-95", -0.095, -0.12, -0.07)}}
    rows = compare.summarise(["a", "b", "c"], cost, acc, diffs=diffs)
    assert rows[0]["Δ mAP50-95 95% CI"] == "baseline" and rows[0]["verdict"] == "-"
    assert rows[1]["Δ mAP50-95 95% CI"] == "+0.020 [-0.004, +0.041]"
    assert rows[1]["verdict"] == "no detectable difference (±0.028)"  # the interval holds 0
    assert rows[2]["verdict"] == "worse" and rows[2]["verdict mAP50"] == "better"
    assert rows[1]["mAP50-95"] == "0.330 ± 0.014"
    assert not np.isnan(float(rows[2]["Δ mAP50 95% CI"].split()[0]))
    trained = compare.summarise(["a", "b", "c"], cost, acc, diffs=diffs, trained=True)  # no seed term: 1 seed each
    assert trained[2]["verdict"] == "worse [1 seed each: these weights, not the config]"


def test_the_note_says_whether_the_training_seed_is_in_the_intervals():
    from utils.stats import Difference

    def diffs(sd, df):
        return {"b": {m: Difference(m, 0.0, -0.01, 0.01, 0.005, 0.014, seed_sd=sd, seed_df=df) for m in ("mAP50", "mAP50-95")}}

    pooled = compare.seed_term_note(diffs(0.0243, 3), trained=True)
    assert "sd 0.024, 3 df" in pooled and "pooled" in pooled
    assert "identical" in compare.seed_term_note(diffs(0.0, 2), trained=True)  # sd 0 from 2+ seeds is said
    assert "val images only" in compare.seed_term_note(diffs(0.0, 0), trained=True)  # one seed per row
    assert "these model files" in compare.seed_term_note(diffs(0.0, 0), trained=False)  # checkpoints compared
    assert compare.seed_term_note({}, trained=True) == ""



def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert compare.main(["--cfg", "models/nothing_*.yaml"]) == 2
    assert "matches no file" in capsys.readouterr().err
    assert compare.main(["--cfg", "yolov5n.yaml", "--epochs", "1", "--project", str(tmp_path)]) == 2
    assert "need --data" in capsys.readouterr().err


def test_peak_memory_is_the_models_own_not_the_parents():
    """The cost worker is spawned from a process that may have held gigabytes (a training run
    before it); Linux carries ru_maxrss across fork+exec, so it must not be what is reported."""
    import torch

    big = torch.ones(100_000_000)  # 400 MB touched, then freed: the parent's peak stays high
    del big
    res = compare.measure_cost("yolov5n.yaml", 64, 1, 1, nc=3)
    assert 0 <= res["peak_mem_mb"] < 100
    assert res["params"] == 1767976  # yolov5n with a 3-class head


def test_mean_gate_reads_how_far_blocks_opened(tmp_path):
    from models.checkpoint import model_record, save_checkpoint
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n_CBAM.yaml", nc=3)
    for name, p in model.named_parameters():
        if name.endswith(".gate"):
            p.data.fill_(-0.25)  # the sign does not matter: how far from the identity
    save_checkpoint({"model": model_record(model)}, tmp_path / "cbam.pt")
    save_checkpoint({"model": model_record(DetectionModel("yolov5n.yaml", nc=3))}, tmp_path / "base.pt")
    assert compare.mean_gate(tmp_path / "cbam.pt") == 0.25
    assert compare.mean_gate(tmp_path / "base.pt") is None
    assert compare.mean_gate(tmp_path / "missing.pt") is None
    cc = DetectionModel("yolov5n_CC.yaml", nc=3)  # gate 1, the paper's gamma: 0 at init, here 0.5
    cc.model[9].gamma.data.fill_(0.5)
    save_checkpoint({"model": model_record(cc)}, tmp_path / "cc.pt")
    assert compare.mean_gate(tmp_path / "cc.pt") == 0.5  # the opening, as train.py logs it


# ------------------------------------------------------------------ issue 13: progress, slow configs, plots
def _fake_cost(cpu_ms):
    return {"params": 1_000_000, "gflops": 1.0, "cpu_ms": cpu_ms, "gpu_ms": None, "peak_mem_mb": 10.0}


def test_cost_progress_estimate_and_slow_flag(tmp_path, monkeypatch):
    slow = {"yolov5n_SE.yaml": 2500.0}
    monkeypatch.setattr(compare, "measure_cost", lambda c, *a, **k: _fake_cost(slow.get(c, 40.0)))
    cfgs = ["yolov5n.yaml", "yolov5n_SE.yaml", "yolov5n_CBAM.yaml"]
    with LogLines() as log:
        compare.run(cfgs, imgsz=64, project=str(tmp_path), name="c")
    text = "\n".join(log.lines)
    assert "[1/3] yolov5n: measuring cost at 64" in text
    assert "[2/3, about 0 s left] yolov5n_SE" in text  # the fake measurements take no time
    assert "[3/3, about" in text and "left] yolov5n_CBAM" in text
    flagged = [ln for ln in log.lines if "slow" in ln]
    assert len(flagged) == 1 and "yolov5n_SE: 2.5 s per forward pass at 64" in flagged[0]
    with LogLines() as log:  # a rerun: every measurement skipped, still counted
        compare.run(cfgs, imgsz=64, project=str(tmp_path), name="c")
    assert "[3/3] yolov5n_CBAM: cost already measured, skipped" in "\n".join(log.lines)


def test_help_example_glob_matches_files():
    import glob
    import re

    pats = re.findall(r"'([^']*\*[^']*)'", compare.__doc__)
    assert pats
    for p in pats:
        assert glob.glob(str(compare.ROOT / p)), p


def test_plots_show_true_values_and_separate_labels(tmp_path, monkeypatch):
    """Three configs 2.7e-6 apart in mAP, of one latency and size: one spot on the plots; one epoch each."""
    import matplotlib.figure

    figs = {}
    real_save = matplotlib.figure.Figure.savefig

    def keep(self, fname, *a, **k):
        figs[Path(fname).name] = self
        return real_save(self, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    cfgs = ["yolov5n.yaml", "yolov5n_SE.yaml", "yolov5n_CBAM.yaml"]
    cost, acc = {}, {}
    for k, c in enumerate(cfgs):
        cost[c] = _fake_cost(40.0)
        csv_path = tmp_path / f"{k}.csv"
        csv_path.write_text(f"epoch,train/box_loss,metrics/mAP_0.5:0.95\n0,0.1,{0.1776 + 2.7e-6 * k}\n")
        acc[c] = [{"map": 0.1776 + 2.7e-6 * k, "map50": 0.3, "results_csv": str(csv_path)}]
    compare.plot([], cost, acc, cfgs, tmp_path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for name in ("map_vs_latency.png", "map_vs_params.png"):
        ax = figs[name].axes[0]
        FigureCanvasAgg(figs[name]).draw()  # pyplot's close() detached the figure's canvas
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_major_formatter().get_offset() == "", name  # no "1e-6 + 1.776e-1"
        lo, hi = ax.get_ylim()
        assert hi - lo > 100 * 2.7e-6 * 2  # the tiny difference does not fill the axis
        renderer = figs[name].canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == 3
        for i in range(3):
            for j in range(i + 1, 3):
                assert not boxes[i].overlaps(boxes[j]), (name, ax.texts[i].get_text(), ax.texts[j].get_text())
    curves = figs["training_curves.png"].axes
    for ax in curves:
        assert ax.get_xlim() == (-0.5, 0.5)
        assert [t for t in ax.get_xticks() if -0.5 <= t <= 0.5] == [0]  # epoch 0 only, no -0.4 ... 0.4
        assert ax.get_lines() and all(line.get_marker() == "o" for line in ax.get_lines())


# ------------------------------------------------------------------ issue 14 QA: model files, same stems, nc, batch
@pytest.fixture(scope="module")
def two_class_batch4_onnx(tmp_path_factory) -> Path:
    """A 2-class yolov5n exported fixed at 4x3x64x64 (a model file whose classes differ from `synth`'s 3)."""
    import export
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n.yaml", nc=2).eval().fuse()
    return export.export_model(model, tmp_path_factory.mktemp("b4") / "best", ("onnx",), imgsz=(64, 64),
                               batch_size=4)["onnx"]


@pytest.mark.parametrize("name", ["best.pt", "best.onnx", "best.torchscript", "best.xml", "best_openvino_model",
                                  "yolov5n_NonLocal.onnx"])  # the last one is named like a shipped config
def test_training_a_model_file_is_refused_before_any_work(name, synth, tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise AssertionError("measured before refusing")

    monkeypatch.setattr(compare, "measure_cost", boom)
    monkeypatch.setattr(compare, "train_once", boom)
    f = tmp_path / "x" / name
    f.parent.mkdir()
    f.mkdir() if name.endswith("_openvino_model") else f.write_bytes(b"model")
    rc = compare.main(["--cfg", "yolov5n.yaml", str(f), "--epochs", "1", "--data", str(synth),
                       "--project", str(tmp_path / "proj")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(f) in err[0] and "model file" in err[0] and "evaluates model files" in err[0] and "without --epochs" in err[0]
    assert "--cfg" in err[0] and "--weights" in err[0] and ".yaml" not in err[0] and "not found" not in err[0]
    assert not (tmp_path / "proj").exists()


def test_cost_of_a_model_file_still_measured(two_class_batch4_onnx, tmp_path):
    out = compare.run([str(two_class_batch4_onnx)], imgsz=64, runs=1, threads=1, nc=2, project=str(tmp_path), name="c")
    assert [r["config"] for r in out["rows"]] == ["best.onnx"] and out["rows"][0]["params"] > 0
    assert out["rows"][0]["timed at"] == "64x64, batch 4 (fixed)"
    # issue 14 QA 4: the note must not say "batch 1" of a row timed on a batch of 4
    md = (tmp_path / "c" / "results.md").read_text()
    assert "'timed at' entry other than 64x64 are fixed-shape exports" in md
    assert "CPU ms is one forward pass of the whole batch of N images" in md


def test_cost_note_without_fixed_exports_says_nothing_of_them():
    rows = [{"config": "a", "timed at": "64x64"}, {"config": "b"}]
    note = compare.cost_note(rows, 64, 5, 2)
    assert "batch 1, 2 threads" in note and "median of 5" in note and "timed at" not in note
    rect = compare.cost_note([{"timed at": "64x64"}, {"timed at": "96x64"}], 64, 5, 2)
    assert "timed at that size instead." in rect and "whole batch" not in rect


def test_class_count_error_names_where_the_count_came_from(two_class_batch4_onnx, synth, tmp_path, capsys):
    f = str(two_class_batch4_onnx)
    with pytest.raises(ValueError) as e:
        compare._runner(f, 64, 3, compare.nc_source(None, str(synth)))
    msg = str(e.value)
    assert f"has 2 classes, but the dataset {synth} (--data) has 3" in msg and "--nc" not in msg
    assert "leave out --data" in msg
    with pytest.raises(ValueError, match="has 2 classes, but --nc has 5: .* leave out --nc"):
        compare._runner(f, 64, 5, compare.nc_source(5, str(synth)))
    # end to end: the user gave --data only
    assert compare.main(["--cfg", f, "--data", str(synth), "--imgsz", "64", "--runs", "1",
                         "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the dataset" in err and "(--data) has 3" in err and "not --nc" not in err
    assert "cost measurement failed" not in err and "ValueError" not in err  # the user's input, said once
    with pytest.raises(ValueError, match=r"has 2 classes, but --nc has 1: .* a model of 1 class;"):
        compare._runner(f, 64, 1, "--nc")
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit):
            compare.parse_opt(["--cfg", f, "--nc", bad])
        assert f"{bad}: must be at least 1" in capsys.readouterr().err


def _two_same_stems(tmp_path: Path) -> list[str]:
    text = Path("models/yolov5n.yaml").read_text()
    for folder, extra in (("A", ""), ("B", "\n# another file of the same name\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "my.yaml").write_text(text + extra)
    return [str(tmp_path / "A" / "my.yaml"), str(tmp_path / "B" / "my.yaml")]


def test_configs_of_one_stem_train_into_their_own_runs(synth, tmp_path, monkeypatch):
    cfgs = _two_same_stems(tmp_path)
    monkeypatch.setattr(compare, "measure_cost", lambda c, *a, **k: _fake_cost(10.0))
    settings = dict(TINY, seeds=1)
    out = compare.run(cfgs, data=str(synth), **settings, project=str(tmp_path), name="same")
    assert [r["config"] for r in out["rows"]] == ["A/my", "B/my"]
    recs = [json.loads(ln) for ln in (tmp_path / "same" / "runs.jsonl").read_text().splitlines()]
    csvs = {r["cfg"]: Path(r["result"]["results_csv"]) for r in recs if r["kind"] == "train"}
    assert csvs[cfgs[0]].parent.name == "A_my_seed0" and csvs[cfgs[1]].parent.name == "B_my_seed0"
    for cfg, path in csvs.items():  # each run folder holds its own config's run
        assert path.is_file()
        assert yaml_cfg_of(path.parent) == cfg
    rows = list(csv.DictReader(open(tmp_path / "same" / "results.csv", encoding="utf-8")))
    assert [r["config"] for r in rows] == ["A/my", "B/my"]

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(compare, "train_once", boom)  # a rerun finds both runs under the same names
    again = compare.run(cfgs, data=str(synth), **settings, project=str(tmp_path), name="same")
    assert [r["config"] for r in again["rows"]] == ["A/my", "B/my"]


def yaml_cfg_of(run_dir: Path) -> str:
    import yaml

    return yaml.safe_load((run_dir / "opt.yaml").read_text())["cfg"]


def test_row_names_tell_apart_files_of_one_name(tmp_path):
    for d in ("x/A", "y/A", "m1", "m2"):
        (tmp_path / d).mkdir(parents=True)
    for d in ("x/A", "y/A"):
        (tmp_path / d / "my.yaml").write_text("nc: 1\n")
    deep = [str(tmp_path / "x/A/my.yaml"), str(tmp_path / "y/A/my.yaml")]
    assert list(compare.row_names(["yolov5n.yaml", *deep]).values()) == ["yolov5n", "x/A/my", "y/A/my"]
    files = [str(tmp_path / "m1/best.onnx"), str(tmp_path / "m2/best.onnx"), str(tmp_path / "m1/best.pt")]
    assert list(compare.row_names(files).values()) == ["m1/best.onnx", "m2/best.onnx", "best.pt"]
    # one file named twice (two spellings): told apart by position; stable across calls
    twice = [deep[0], str(tmp_path / "x/A/../A/my.yaml")]
    assert list(compare.row_names(twice).values()) == ["my#1", "my#2"]
    assert compare.row_names(twice) == compare.row_names(twice)


def test_checkpoints_compared_without_training(weights_n, datasets_dir, tmp_path, monkeypatch):
    """compare.py --cfg a.pt b.pt --data coco128.yaml: each checkpoint evaluated on the val split, the leak
    warning (coco128's val images are its train images), and the interval columns: yolov5n.pt against a copy
    of itself is Δ = 0 exactly, against a copy whose Detect weights carry noise (about -0.03 mAP50-95) worse."""
    import shutil

    import torch

    from models.checkpoint import load_checkpoint, save_checkpoint
    from utils.data import overlap

    monkeypatch.setattr(overlap, "_WARNED", set())
    same = tmp_path / "same" / "yolov5n.pt"
    same.parent.mkdir()
    shutil.copy(weights_n, same)
    rec = load_checkpoint(weights_n)["model"]
    g = torch.Generator().manual_seed(0)
    sd = {k: v + 0.065 * v.float().std() * torch.randn(v.shape, generator=g)
          if k.startswith("model.24.m") and k.endswith("weight") else v for k, v in rec["state_dict"].items()}
    noisy = save_checkpoint({"model": {**rec, "state_dict": sd}}, tmp_path / "noisy.pt")
    with LogLines() as log:
        rc = compare.main(["--cfg", str(weights_n), str(same), str(noisy), "--data", "coco128.yaml", "--imgsz", "256",
                           "--runs", "1", "--threads", "1", "--bootstrap", "300", "--workers", "0",
                           "--project", str(tmp_path), "--name", "ck"])
    assert rc == 0
    assert "128 of 128 val images of coco128.yaml are also train images" in log.text
    rows = list(csv.DictReader(open(tmp_path / "ck" / "results.csv", encoding="utf-8")))
    assert [r["config"] for r in rows] == [f"{weights_n.parent.name}/yolov5n.pt", "same/yolov5n.pt", "noisy.pt"]
    base, copy, bad = rows
    assert base["verdict"] == "-" and base["Δ mAP50-95 95% CI"] == "baseline"
    assert copy["Δ mAP50-95 95% CI"] == "+0.000 [+0.000, +0.000]"
    assert copy["verdict"] == "no detectable difference (identical on every resample)"
    d, lo, hi = (float(x) for x in re.findall(r"[+-]\d\.\d{3}", bad["Δ mAP50-95 95% CI"]))
    assert -0.06 < d < -0.015 and hi < 0 and bad["verdict"] == "worse", bad
    note = (tmp_path / "ck" / "results.md").read_text()
    assert "each model file evaluated on the val split of coco128.yaml (128 images)" in note
    assert "the val images only: a verdict is about these model files" in note
    assert not (tmp_path / "ck" / "training_curves.png").exists()  # nothing was trained: no empty figure


# --- requests refused before any work; notes on what a table cannot show -------------------------


@pytest.mark.parametrize("cfgs, kwargs, error, match", [
    (["yolov5n.yaml", "yolov5n_SE.yaml", "yolov5n.yaml"], {}, ValueError, "lists yolov5n.yaml twice"),
    (["missing_dir/a.pt", "b.pt"], {"data": "x.yaml"}, FileNotFoundError, "model file missing_dir/a.pt not found"),
    (CFGS, {"bootstrap": 10}, ValueError, "--bootstrap 10: at least 200"),
    (CFGS, {"report": True}, ValueError, "--report prints the training runs finished so far"),
])
def test_bad_requests_are_refused_before_any_work(cfgs, kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        compare.run(cfgs, project=str(tmp_path), name="x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_the_same_file_under_two_spellings_is_refused(tmp_path, monkeypatch):
    (tmp_path / "a.pt").write_bytes(b"0")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"lists a.pt and ./a.pt twice"):
        compare.run(["a.pt", "./a.pt"], data="d.yaml", project=str(tmp_path), name="x")
    assert compare.expand_cfgs([str(tmp_path / "*.pt"), str(tmp_path / "a.pt")]) == [str(tmp_path / "a.pt")] * 2


def test_notes_for_unmatched_controls_mixed_shapes_and_busy_cores(caplog):
    names = {c: c.split(".")[0] for c in ("b.yaml", "s.yaml", "s_control.yaml", "c.yaml", "c_control.yaml")}
    cost = {"b.yaml": {"params": 1000}, "s.yaml": {"params": 1001}, "s_control.yaml": {"params": 2537},
            "c.yaml": {"params": 1500}, "c_control.yaml": {"params": 1520}}
    note = compare._control_mismatch_note(list(names), cost, names)
    assert "s_control adds 1,537 parameters against 1" in note and "c_control" not in note
    shapes = {"a.pt": {"dynamic": True}, "a.onnx": {"dynamic": False}}
    assert "a (fixed-shape export) validated on square letterboxed images" in compare._preprocessing_note(
        ["a.pt", "a.onnx"], shapes, {"a.pt": "a.pt", "a.onnx": "a"})
    assert compare._preprocessing_note(["a.onnx"], {"a.onnx": {"dynamic": False}}, {"a.onnx": "a"}) == ""
    busy = compare.cost_note([], 64, 20, 2, {"base": 0.3, "cbam": 5.2})
    assert "CPU ms of cbam measured while other work kept the CPU busy (1-min load average up to 5.2" in busy
    assert "busy" not in compare.cost_note([], 64, 20, 2, {"base": 0.3})


def test_console_table_writes_large_latencies_in_full():
    from utils.logging import table

    out = table([{"config": "x", "CPU ms": 1234.6, "mAP50": 0.51234}])
    assert "1235" in out and "e+03" not in out and "0.512" in out


def test_a_run_with_other_settings_never_takes_another_runs_folder(tmp_path):
    """A run folder holding a run with other settings (another image size, or no record at all) is left
    alone: the new run gets the name with its settings' hash, and the same settings always the same name."""
    plan = {"cfg": "yolov5n.yaml", "seed": 0, "imgsz": 256, "epochs": 30}
    assert compare.run_name(tmp_path, "yolov5n_seed0", plan) == "yolov5n_seed0"  # nothing there yet
    run = tmp_path / "yolov5n_seed0"
    (run / "weights").mkdir(parents=True)
    (run / "compare_run.json").write_text(json.dumps(plan))
    assert compare.run_name(tmp_path, "yolov5n_seed0", dict(plan)) == "yolov5n_seed0"  # its own run: resumable
    other = compare.run_name(tmp_path, "yolov5n_seed0", {**plan, "imgsz": 640})
    assert re.fullmatch(r"yolov5n_seed0_[0-9a-f]{8}", other)
    assert compare.run_name(tmp_path, "yolov5n_seed0", {**plan, "imgsz": 640}) == other
    (run / "compare_run.json").unlink()  # weights without a record: someone else's run
    assert compare.run_name(tmp_path, "yolov5n_seed0", plan) != "yolov5n_seed0"
