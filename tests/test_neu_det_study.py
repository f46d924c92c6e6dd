"""benchmarks/neu_det_study.py: its rows, --skip, and the baseline-curve figure the README quotes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import neu_det_study  # noqa: E402


def test_rows_in_order_with_the_control_written(tmp_path):
    cfgs = neu_det_study.study_configs("n", False, tmp_path)
    assert cfgs[0] == "yolov5n.yaml" and cfgs[1] == "yolov5n_CBAM.yaml"
    assert Path(cfgs[2]).name == "yolov5n_CBAM_control.yaml" and Path(cfgs[2]).is_file()
    assert cfgs[3:] == ["yolov5n_C3CBAM.yaml", "yolov5n_CA.yaml"]
    full = neu_det_study.study_configs("s", True, tmp_path)
    assert len(full) == 9 and full[0] == "yolov5s.yaml" and Path(full[-1]).name == "yolov5s_C3CBAM_control.yaml"


def test_skip_leaves_rows_out_and_refuses_the_baseline(tmp_path):
    cfgs = neu_det_study.study_configs("n", False, tmp_path, skip=("C3CBAM", "control:CBAM"))
    assert cfgs == ["yolov5n.yaml", "yolov5n_CBAM.yaml", "yolov5n_CA.yaml"]
    with pytest.raises(ValueError, match="--skip base: not a skippable row; choose from CBAM control:CBAM C3CBAM CA"):
        neu_det_study.study_configs("n", False, tmp_path, skip=("base",))
    with pytest.raises(ValueError, match="--skip GAM"):  # a --full row is unknown without --full
        neu_det_study.study_configs("n", False, tmp_path, skip=("GAM",))
    assert neu_det_study.main(["--skip", "XYZ", "--out", str(tmp_path)]) == 2


def _curve(path: Path, map50: list[float], map5095: list[float]) -> str:
    head = "epoch,train/box_loss,metrics/mAP_0.5,metrics/mAP_0.5:0.95\n"
    rows = "".join(f"{i},0.1,{a},{b}\n" for i, (a, b) in enumerate(zip(map50, map5095)))
    path.write_text(head + rows)
    return str(path)


def test_baseline_rise_compares_the_last_five_epochs_with_the_five_before(tmp_path):
    up = [0.1] * 5 + [0.5] * 5  # window means 0.1 -> 0.5: +0.4
    a = _curve(tmp_path / "a.csv", [0.0 + 1e-3] + up, [0.2] + [0.2] * 5 + [0.3] * 5)
    flat = [0.6, 0.7, 0.6, 0.7, 0.65] * 2  # swings of 0.1 between epochs, no trend: +0.0
    # (the last epoch minus 5 epochs back would say -0.05 or +0.05 depending on where it stops)
    b = _curve(tmp_path / "b.csv", flat, [0.3] * 10)
    rise = neu_det_study.baseline_rise([a, b, str(tmp_path / "missing.csv")])
    assert rise == pytest.approx(((0.4 + 0.0) / 2, (0.1 + 0.0) / 2, 2))  # the missing file is not counted
    zero_first = _curve(tmp_path / "z.csv", [0.0] + up, [0.0] + [0.2] * 5 + [0.3] * 5)  # epoch 0 not validated
    assert neu_det_study.baseline_rise([zero_first]) == pytest.approx((0.4, 0.1, 1))  # only the last 10 epochs count
    assert neu_det_study.baseline_rise([_curve(tmp_path / "u.csv", [0.0] * 10, [0.0] * 10)]) is None
    short = _curve(tmp_path / "s.csv", [0.1] * 9, [0.1] * 9)  # fewer than 2 windows: no figure
    assert neu_det_study.baseline_rise([short]) is None


def test_time_note_sums_loop_and_cpu_time_and_estimates_what_was_not_measured():
    runs = [{"train_s": 3600, "cpu_s": 5400}, {"train_s": 1800, "cpu_s": 1800}]
    loop = "2 training runs took 1.50 h of training-loop time (validation and setup not counted)"
    assert neu_det_study.time_note(runs) == loop + " and 2.00 h of CPU time in all (the process and its data workers)"
    mixed = runs + [{"train_s": 7200}]  # measured: 5400 and 1800 s, median 3600 s: 1 h estimated for the other
    loop3 = "3 training runs took 3.50 h of training-loop time (validation and setup not counted)"
    assert neu_det_study.time_note(mixed) == loop3 + (
        "; CPU time 2.00 h measured on 2 run(s), plus about 1.00 h estimated for the other 1 (recorded before CPU "
        "time was kept, or resumed after an interruption) at the measured runs' median of 1.00 h a run (every run "
        "does the same work): about 3.00 h of CPU time in all")
    assert neu_det_study.time_note([{"train_s": 36}]).endswith("0.01 h of training-loop time (validation and setup "
                                                              "not counted); CPU time not recorded")
    resumed = neu_det_study.time_note(runs[:1] + [{"train_s": 1800, "cpu_s": 600, "resumed_at": 12}])
    assert "about 1.50 h estimated for the other 1" in resumed  # its partial 600 s is not taken as the whole


def test_skip_leaves_the_results_files_as_they_were(tmp_path, monkeypatch):
    """With --skip the table would lack the skipped rows: the files already written stay as they were."""
    (tmp_path / "neu_det_study.md").write_text("every row")
    seen = {}
    monkeypatch.chdir(neu_det_study.ROOT)  # main() moves into its root: back where it was afterwards
    monkeypatch.setattr(neu_det_study, "ROOT", tmp_path)  # its work folder (the controls' YAMLs) under tmp_path
    monkeypatch.setattr(neu_det_study.compare, "run", lambda cfgs, **kw: seen.setdefault("cfgs", cfgs) and {})
    assert neu_det_study.main(["--skip", "CA", "--report", "--out", str(tmp_path), "--name", "t_skip"]) == 0
    assert not any("CA" in c for c in seen["cfgs"][1:] if "CBAM" not in c)
    assert (tmp_path / "neu_det_study.md").read_text() == "every row"
    assert (tmp_path / "runs" / "study" / "t_skip" / "controls").is_dir()
