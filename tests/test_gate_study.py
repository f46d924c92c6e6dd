"""benchmarks/gate_study.py without training: outputs, table figures, resume (run_one stubbed)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gate_study  # noqa: E402


def _fake(cfg, cand, epochs, work, seed):
    n = 3 if "C3" in cfg else 1
    g = {"control": [0.0, 0.001, 0.002], "lr_x100": [0.0, 0.05, 0.1], "fade": [0.3, 0.7, 1.0]}.get(cand, [])
    gates = {f"model.{i}": [(-1) ** i * x for x in g] for i in range(n)} if "_" in Path(cfg).stem and g else {}
    return {"cfg": cfg, "candidate": cand, "epochs": epochs, "seed": seed, "seconds": 12.0, "train_s": 10.0,
            "map": ([0.2, 0.18, 0.22] if cand == "fade" else [0.2, 0.21, 0.22])[:epochs], "final_map": 0.22,
            "gates": gates}


def test_outputs_and_resume(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(gate_study, "WEIGHTS", tmp_path / "w.pt")
    (tmp_path / "w.pt").write_bytes(b"x")
    monkeypatch.setattr(gate_study, "run_one", lambda *a: calls.append(a[:2]) or _fake(*a))
    args = ["--epochs", "3", "--cfg", "yolov5n_CBAM.yaml", "yolov5n_C3CBAM.yaml", "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "out" / "gs")]
    assert gate_study.main(args) == 0
    assert len(calls) == 11  # baseline + 2 configs x 5 candidates
    for suffix in (".csv", ".md", ".png"):
        assert (tmp_path / "out" / f"gs{suffix}").is_file()
    rows = list(csv.DictReader(open(tmp_path / "out" / "gs.csv", encoding="utf-8")))
    by = {(r["config"], r["candidate"]): r for r in rows}
    assert by[("yolov5n", "baseline")]["mean abs gate"] == "-"
    assert by[("yolov5n_C3CBAM", "fade")]["mean abs gate"] == "1.000"  # |gate| of blocks with either sign
    assert by[("yolov5n_CBAM", "lr_x100")]["mAP50-95 per epoch"] == "0.200 0.210 0.220"
    assert by[("yolov5n_CBAM", "fade")]["worst epoch vs baseline"] == "-0.030"  # epoch 1: 0.18 against 0.21
    assert by[("yolov5n_CBAM", "control")]["worst epoch vs baseline"] == "+0.000"
    assert by[("yolov5n", "baseline")]["worst epoch vs baseline"] == "-"
    assert gate_study.main(args) == 0 and len(calls) == 11  # resumed: nothing trained again


def test_missing_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(gate_study, "WEIGHTS", tmp_path / "none.pt")
    with pytest.raises(SystemExit, match="none.pt not found"):
        gate_study.main(["--work", str(tmp_path)])
