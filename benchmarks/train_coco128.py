"""Fine-tuning benchmark: yolov5n on coco128 at 320 for 3 epochs, as a fresh `train.py` process.

    python benchmarks/train_coco128.py                       # ../shared/weights/yolov5n.pt
    python benchmarks/train_coco128.py --cfg yolov5n_CBAM.yaml

Runs ``train.py --weights ../shared/weights/yolov5n.pt --data coco128.yaml --img 320 --batch 16
--epochs 3`` and records the seconds of training per epoch (from the log), the wall time of
the whole process and the final P, R, mAP50, mAP50-95 (the validation of best.pt), next to
the upstream YOLOv5 reference measured on this machine. Writes
benchmarks/results/train_coco128.{md,csv}. The load average is recorded: other processes on
the machine slow every figure down.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.logging import LOGGER, table, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"
REFERENCE = {"run": "upstream YOLOv5 (reference)", "train s/epoch": 4.5, "wall s": 36, "P": 0.468, "R": 0.393,
             "mAP50": 0.411, "mAP50-95": 0.238}
ROW = re.compile(r"^\s+all\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def run_once(weights: str, cfg: str, epochs: int, imgsz: int, batch: int, project: Path, extra: list[str]) -> dict:
    args = [sys.executable, str(ROOT / "train.py"), "--weights", weights, "--data", "coco128.yaml", "--img",
            str(imgsz), "--batch", str(batch), "--epochs", str(epochs), "--project", str(project), *extra]
    if cfg:
        args += ["--cfg", cfg]
    env = dict(os.environ)
    env.setdefault("YOLO_DATASETS_DIR", str(SHARED / "datasets"))
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    log = r.stdout + r.stderr
    if r.returncode:
        raise RuntimeError(f"train.py failed ({r.returncode}):\n{log[-3000:]}")
    epoch_s = [float(x) for x in re.findall(r"^epoch \d+: ([\d.]+)s training", log, re.M)]
    rows = [ROW.match(line) for line in log.splitlines()]
    last = [m for m in rows if m][-1]  # the final validation of best.pt
    p, rr, m50, m = (float(last.group(i)) for i in (3, 4, 5, 6))
    return {"train s/epoch": round(sum(epoch_s) / len(epoch_s), 1), "epoch s": epoch_s, "wall s": round(wall, 1),
            "P": p, "R": rr, "mAP50": m50, "mAP50-95": m, "log": log}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(SHARED / "weights" / "yolov5n.pt"))
    p.add_argument("--cfg", default="")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per --seed (results vary with it)")
    p.add_argument("--out", default=str(RESULTS / "train_coco128"))
    p.add_argument("extra", nargs="*", help="more train.py flags, after --")
    opt = p.parse_args(argv)
    load = os.getloadavg()[0]
    rows = [dict(REFERENCE)]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in opt.seeds:
            res = run_once(opt.weights, opt.cfg, opt.epochs, opt.imgsz, opt.batch, Path(tmp) / f"s{seed}",
                           [*opt.extra, "--seed", str(seed)])
            name = "ours" + (f" ({opt.cfg})" if opt.cfg else "") + f", seed {seed}"
            row = {"run": name, **{k: res[k] for k in ("train s/epoch", "wall s", "P", "R", "mAP50", "mAP50-95")}}
            rows.append(row)
            LOGGER.info(f"{row}  (epochs: {res['epoch s']})")
        if len(opt.seeds) > 1:
            mean = {k: round(sum(r[k] for r in rows[1:]) / len(opt.seeds), 3)
                    for k in ("train s/epoch", "wall s", "P", "R", "mAP50", "mAP50-95")}
            rows.append({"run": f"ours, mean of {len(opt.seeds)} seeds", **mean})
    LOGGER.info(table(rows))
    write_results(rows, opt.out, note=(
        f"`train.py --weights {Path(opt.weights).name} --data coco128.yaml --img {opt.imgsz} --batch {opt.batch} "
        f"--epochs {opt.epochs}`{' --cfg ' + opt.cfg if opt.cfg else ''} on this machine (CPU, "
        f"{os.cpu_count()} cores), a fresh process per run. `train s/epoch`: mean seconds of the training loop per "
        f"epoch (8 batches), `wall s`: the whole process (start-up, val after each epoch, final val of best.pt). "
        f"P/R/mAP: final validation at {opt.imgsz}. 1-min load average at start {load:.2f}."))
    return rows


if __name__ == "__main__":
    main()
