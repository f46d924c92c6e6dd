"""Learning benchmark: yolov5n from scratch on the synthetic shapes dataset, mAP50 against wall time.

    python benchmarks/train_synthetic.py                 # the default recipe below
    python benchmarks/train_synthetic.py --optimizer SGD --lr0 0.01 --epochs 150

The default recipe: ``--img 160 --batch 16 --epochs 80 --optimizer AdamW`` with
hyp.scratch-low.yaml except ``lr0: 0.002`` (twice what that YAML suggests for Adam). With
SGD at lr0 0.01 the same model learns much more slowly on this set (mAP50 0.24 after 60
epochs): YOLOv5's nominal batch of 64 leaves only three optimizer steps per epoch of 200 images.

Generates the dataset (data/synthetic.py: 200 train / 50 val images of 320 px, seed 0) in a
temporary folder, runs ``train.py --weights '' --cfg yolov5n.yaml`` as a fresh process and
timestamps every row of its results.csv as it appears. Writes
benchmarks/results/train_synthetic.{md,csv,png}: mAP50 and mAP50-95 per epoch against the
wall time since the process started (start-up, data scanning, training and the validation
after every epoch all count), the first time mAP50 reached the target and the final figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.synthetic import make_synthetic  # noqa: E402
from utils.logging import LOGGER, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def train_and_watch(args: list[str], csv_path: Path, budget: float, log_path: Path) -> tuple[list[dict], float, int]:
    """Run train.py, stamping each new results.csv row with the elapsed wall time; returns rows, wall, rc."""
    rows: list[dict] = []
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            done = proc.poll() is not None
            if csv_path.is_file():
                with open(csv_path, newline="") as f:
                    got = list(csv.DictReader(f))
                for r in got[len(rows):]:
                    rows.append({"epoch": int(r["epoch"]), "minutes": round((time.perf_counter() - t0) / 60, 2),
                                 "mAP50": round(float(r["metrics/mAP_0.5"]), 4),
                                 "mAP50-95": round(float(r["metrics/mAP_0.5:0.95"]), 4),
                                 "P": round(float(r["metrics/precision"]), 4),
                                 "R": round(float(r["metrics/recall"]), 4)})
            if done:
                break
            if budget and time.perf_counter() - t0 > budget * 1.5:
                proc.kill()
                LOGGER.warning(f"stopped: over 1.5x the {budget:.0f} s budget")
            time.sleep(0.5)
    return rows, time.perf_counter() - t0, proc.returncode


def plot(rows: list[dict], target: float, budget_min: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), tight_layout=True)
    t = [r["minutes"] for r in rows]
    ax.plot(t, [r["mAP50"] for r in rows], marker=".", label="mAP50")
    ax.plot(t, [r["mAP50-95"] for r in rows], marker=".", label="mAP50-95")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target mAP50 {target}")
    ax.axvline(budget_min, color="red", linestyle=":", linewidth=1, label=f"{budget_min:g} min")
    ax.set_xlabel("wall time since start (minutes)")
    ax.set_ylabel("validation metric")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--optimizer", default="AdamW", choices=["SGD", "Adam", "AdamW"])
    p.add_argument("--lr0", type=float, default=0.002, help="overrides lr0 of hyp.scratch-low.yaml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--target", type=float, default=0.5, help="mAP50 to reach")
    p.add_argument("--budget", type=float, default=600, help="seconds allowed to reach the target")
    p.add_argument("--out", default=str(RESULTS / "train_synthetic"))
    p.add_argument("extra", nargs="*", help="more train.py flags, after --")
    opt = p.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "synthetic", n_train=opt.n_train, n_val=opt.n_val, imgsz=320, seed=0)
        project = Path(tmp) / "runs"
        hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
        hyp["lr0"] = opt.lr0
        hyp_file = Path(tmp) / "hyp.yaml"
        hyp_file.write_text(yaml.safe_dump(hyp, sort_keys=False))
        args = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--weights", "", "--cfg", "yolov5n.yaml",
                "--img", str(opt.imgsz), "--batch-size", str(opt.batch), "--epochs", str(opt.epochs), "--workers",
                str(opt.workers), "--project", str(project), "--noplots", "--optimizer", opt.optimizer,
                "--hyp", str(hyp_file), *opt.extra]
        log_path = Path(tempfile.gettempdir()) / f"{Path(opt.out).name}.log"  # train.py's own output
        Path(opt.out).parent.mkdir(parents=True, exist_ok=True)
        rows, wall, rc = train_and_watch(args, project / "exp" / "results.csv", opt.budget, log_path)
    if not rows:
        raise SystemExit(f"train.py produced no results (exit code {rc}); see {log_path}")
    hit = next((r for r in rows if r["mAP50"] >= opt.target), None)
    best = max(rows, key=lambda r: r["mAP50"])
    cmd = (f"train.py --weights '' --cfg yolov5n.yaml --data synthetic ({opt.n_train}/{opt.n_val} images) "
           f"--img {opt.imgsz} --batch {opt.batch} --epochs {opt.epochs} --optimizer {opt.optimizer}, "
           f"hyp.scratch-low with lr0={opt.lr0}")
    verdict = (f"mAP50 {hit['mAP50']:.3f} >= {opt.target} at epoch {hit['epoch']}, {hit['minutes']:.1f} min"
               if hit else f"mAP50 never reached {opt.target} (best {best['mAP50']:.3f})")
    within = bool(hit and hit["minutes"] * 60 <= opt.budget)
    note = (f"`{cmd}`, CPU ({os.cpu_count()} cores), wall time from process start (validation after every epoch "
            f"included). Result: {verdict}; {'within' if within else 'NOT within'} {opt.budget / 60:g} min. "
            f"Final epoch: mAP50 {rows[-1]['mAP50']:.3f}, mAP50-95 {rows[-1]['mAP50-95']:.3f} after "
            f"{wall / 60:.1f} min. 1-min load average at start {load:.2f}.")
    write_results(rows, opt.out, note=note)
    title = (f"yolov5n from scratch on synthetic shapes ({opt.n_train} train / {opt.n_val} val images)\n"
             f"--img {opt.imgsz} --batch {opt.batch} --epochs {opt.epochs} --optimizer {opt.optimizer} (lr0 {opt.lr0})")
    plot(rows, opt.target, opt.budget / 60, Path(opt.out).with_suffix(".png"), title)
    LOGGER.info(note)
    return {"rows": rows, "hit": hit, "within": within, "wall": wall, "rc": rc}


if __name__ == "__main__":
    main()
