"""How do the gates of attention blocks inserted into yolov5n.pt open? One fine-tune per config and gate schedule.

    python benchmarks/gate_study.py                      # 5 configs x 3 candidates + baseline, 8 epochs
    python benchmarks/gate_study.py --epochs 4 --cfg yolov5n_CBAM.yaml --candidates control fade

Fine-tunes ``../shared/weights/yolov5n.pt`` into each attention config on coco128 at 320 px,
batch 16, seed 0, once per candidate way of opening the identity-started gates (the
``gate_*`` hyperparameters, models/gates.py), plus the plain yolov5n.yaml as a reference.
Writes benchmarks/results/gate_study.csv / .md (final mean |gate|, mAP50-95 after every epoch,
seconds) and gate_study.png (every new block's gate against the epoch, one panel per config,
one colour per candidate). Work folder runs/gate_study: an interrupted study resumes, runs
already finished (recorded in runs.jsonl) are not repeated.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from utils.data.dataset import load_hyp  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT.parent / "shared" / "weights" / "yolov5n.pt"
CONFIGS = ["yolov5n_CBAM.yaml", "yolov5n_SE.yaml", "yolov5n_CA.yaml", "yolov5n_GAM.yaml", "yolov5n_C3CBAM.yaml"]
BASELINE = "yolov5n.yaml"
# candidate name -> the gate hyperparameters it sets on top of hyp.scratch-low.yaml
CANDIDATES: dict[str, dict] = {
    # identity start, gate trained at the base lr
    "control": {"gate_schedule": "train", "gate_lr_mult": 1.0, "gate_calibration_images": 0, "gate_zero_start": 0},
    # gates in their own group at 100x lr
    "lr_x100": {"gate_schedule": "train", "gate_lr_mult": 100.0, "gate_calibration_images": 0, "gate_zero_start": 0},
    # faded in over the LR warmup, blocks as initialised (the default before calibration)
    "fade_uncal": {"gate_schedule": "fade", "gate_warmup_epochs": 3.0, "gate_lr_mult": 1.0, "gate_calibration_images": 0,
                   "gate_zero_start": 0},
    # faded in, each block's output scale calibrated on 32 training images first (the default before zero start)
    "fade_calib": {"gate_schedule": "fade", "gate_warmup_epochs": 3.0, "gate_lr_mult": 1.0,
                   "gate_calibration_images": 32, "gate_zero_start": 0},
    # the default: each block's last layer zeroed, then calibrated: the identity at every gate value
    "fade": {"gate_schedule": "fade", "gate_warmup_epochs": 3.0, "gate_lr_mult": 1.0, "gate_calibration_images": 32,
             "gate_zero_start": 1},
}


def _gate_columns(row: dict) -> dict[str, float]:
    return {k[5:]: float(v) for k, v in row.items() if k.startswith("gate/") and v not in (None, "")}


def run_one(cfg: str, cand: str, epochs: int, work: Path, seed: int) -> dict:
    """Fine-tune once; returns the record written to runs.jsonl (per-epoch mAP50-95 and gates)."""
    hyp = {**load_hyp(None), **CANDIDATES.get(cand, {})}
    name = f"{Path(cfg).stem}_{cand}"
    t0 = time.time()
    out = train.run(weights=str(WEIGHTS), cfg=cfg, data="coco128.yaml", hyp=hyp, imgsz=320, batch_size=16,
                    epochs=epochs, seed=seed, workers=2, project=str(work), name=name, exist_ok=True, noplots=True)
    seconds = time.time() - t0
    with open(out["save_dir"] / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    gates = {b: [_gate_columns(r)[b] for r in rows] for b in _gate_columns(rows[0])} if rows else {}
    return {"cfg": cfg, "candidate": cand, "epochs": epochs, "seed": seed, "seconds": round(seconds, 1),
            "train_s": round(out["train_time"], 1), "map": [float(r["metrics/mAP_0.5:0.95"]) for r in rows],
            "final_map": out["metrics"]["map"], "gates": gates}


def table(recs: list[dict]) -> list[dict]:
    """One row per run: final mean |gate| over the new blocks, final mAP50-95, mAP50-95 per epoch, the
    worst epoch's difference to the baseline run (same epoch; '-' without a baseline), seconds."""
    base = next((r["map"] for r in recs if r["candidate"] == "baseline"), None)
    rows = []
    for r in recs:
        final = [abs(v[-1]) for v in r["gates"].values() if v]
        gaps = [a - b for a, b in zip(r["map"], base or [])]
        rows.append({"config": Path(r["cfg"]).stem, "candidate": r["candidate"],
                     "mean abs gate": f"{statistics.fmean(final):.3f}" if final else "-",
                     "mAP50-95": f"{r['final_map']:.3f}",
                     "mAP50-95 per epoch": " ".join(f"{x:.3f}" for x in r["map"]),
                     "worst epoch vs baseline": f"{min(gaps):+.3f}" if gaps and r["candidate"] != "baseline" else "-",
                     "seconds": f"{r['seconds']:.0f}"})
    return rows


def plot(recs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = [c for c in dict.fromkeys(r["cfg"] for r in recs) if any(r["gates"] for r in recs if r["cfg"] == c)]
    cands = list(dict.fromkeys(r["candidate"] for r in recs if r["gates"]))
    colours = {c: f"C{i}" for i, c in enumerate(cands)}
    fig, axes = plt.subplots(1, max(len(cfgs), 1), figsize=(3.6 * max(len(cfgs), 1), 3.4), squeeze=False,
                             sharey=True, tight_layout=True)
    for ax, cfg in zip(axes[0], cfgs):
        for r in (r for r in recs if r["cfg"] == cfg):
            for i, vals in enumerate(r["gates"].values()):
                ax.plot(range(len(vals)), vals, color=colours[r["candidate"]], linewidth=1.5 if len(r["gates"]) == 1 else 0.8,
                        label=r["candidate"] if i == 0 else None)
        ax.set_title(f"{Path(cfg).stem} ({len(r['gates'])} block{'s' * (len(r['gates']) > 1)})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gate (EMA model, end of epoch)")
    axes[0][0].legend(fontsize=8)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", default=CONFIGS, help="attention configs to fine-tune yolov5n.pt into")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                   help="ways of opening the gates (gate_* hyperparameters set on top of hyp.scratch-low.yaml)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per run (the default fade lasts 12.5 on coco128)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--no-baseline", action="store_true", help=f"skip the {BASELINE} reference run")
    p.add_argument("--work", default=str(ROOT / "runs" / "gate_study"),
                   help="work folder: runs and runs.jsonl, from which an interrupted study resumes")
    p.add_argument("--out", default=str(RESULTS / "gate_study"), help="output path stem (.csv, .md, .png)")
    opt = p.parse_args(argv)
    os.environ.setdefault("YOLO_DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    if not WEIGHTS.is_file():
        raise SystemExit(f"gate_study: {WEIGHTS} not found (the official yolov5n.pt is needed)")
    work = Path(opt.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            done[(r["cfg"], r["candidate"], r["epochs"], r["seed"])] = r
    jobs = [] if opt.no_baseline else [(BASELINE, "baseline")]
    jobs += [(c, k) for c in opt.cfg for k in opt.candidates]
    recs = []
    load0 = os.getloadavg()[0]
    for cfg, cand in jobs:
        key = (cfg, cand, opt.epochs, opt.seed)
        if key not in done:
            LOGGER.info(f"gate study: {Path(cfg).stem} / {cand}, {opt.epochs} epochs")
            done[key] = run_one(cfg, cand, opt.epochs, work, opt.seed)
            with open(log, "a") as f:
                f.write(json.dumps(done[key]) + "\n")
        recs.append(done[key])
    rows = table(recs)
    stem = Path(opt.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cand_txt = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in CANDIDATES.items()
                         if k in opt.candidates)
    epochs = f"{opt.epochs} epoch" + "s" * (opt.epochs != 1)
    md = [f"Gate study: yolov5n.pt fine-tuned on coco128 at 320 px, batch 16, {epochs}, seed {opt.seed}, "
          f"hyp.scratch-low.yaml plus the candidate's gate hyperparameters ({cand_txt}). mean |gate| = mean over the "
          "new blocks of |gate| in the final (EMA) model (column mean abs gate): 0 = the identity the block starts "
          "as, 1 = fully let in: the paper's block when it starts from the paper's initialisation, and with zero "
          "start (candidate fade) what its zeroed layers or residual scale have learnt, the identity until they do). "
          "worst epoch vs baseline: the lowest of (mAP50-95 - the baseline run's) over "
          "the epochs.",
          "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r.values()) + " |" for r in rows]
    cmd = " ".join(["python benchmarks/gate_study.py", *(argv if argv is not None else sys.argv[1:])])
    md += ["", f"Command: `{cmd}`. Load average at start / end: {load0:.2f} / {os.getloadavg()[0]:.2f} "
               "(2 CPU cores shared with other jobs: the seconds are comparable within a row only roughly)."]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    plot(recs, stem.with_suffix(".png"))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
