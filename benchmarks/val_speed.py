"""End-to-end wall time of `val.py` on coco128 at 640, batch 32, against the reference.

    YOLO_DATASETS_DIR=../shared/datasets python benchmarks/val_speed.py            # 3 runs
    python benchmarks/val_speed.py --runs 5 --weights ../shared/weights/yolov5n.pt

Each run is a fresh `python val.py ...` process (imports, model loading, dataset scan from
its cache, validation, plots), timed from launch to exit. The table in
benchmarks/results/val_speed.md gives every run, with the per-image times val.py prints
and the machine's load average around it (other processes on a 2-core machine slow every
figure down, so a run on a busy machine says little).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.logging import LOGGER, markdown_table, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# upstream YOLOv5 val.py, yolov5n on coco128, 640, batch 32, this machine type (issue 3)
REFERENCE = {"wall s": 16.6, "pre-process ms": 3.6, "inference ms": 69.2, "NMS ms": 5.8}
SPEED = re.compile(r"Speed: ([\d.]+)ms pre-process, ([\d.]+)ms inference, ([\d.]+)ms NMS")
ALL = re.compile(r"^\s*all\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", re.M)


def one_run(args: list[str], env: dict) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "val.py"), *args], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    if p.returncode:
        raise SystemExit(f"val.py failed ({p.returncode}):\n{out[-3000:]}")
    s, a = SPEED.search(out), ALL.search(out)
    if not s or not a:
        raise SystemExit(f"could not find the speed line or the 'all' row in val.py's output:\n{out[-3000:]}")
    return {"wall s": round(wall, 1), "pre-process ms": float(s.group(1)), "inference ms": float(s.group(2)),
            "NMS ms": float(s.group(3)), "mAP50": float(a.group(5)), "mAP50-95": float(a.group(6)),
            "load before": round(load, 2), "load after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "weights" / "yolov5n.pt"))
    ap.add_argument("--data", default="coco128.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "val_speed"))
    ap.add_argument("--datasets", default=os.getenv("YOLO_DATASETS_DIR") or str(ROOT.parent / "shared" / "datasets"))
    opt = ap.parse_args(argv)

    env = {**os.environ, "YOLO_DATASETS_DIR": str(Path(opt.datasets).resolve())}
    project = Path(tempfile.mkdtemp(prefix="val_speed_"))
    args = ["--weights", opt.weights, "--data", opt.data, "--img", "640", "--batch", "32",
            "--project", str(project), "--name", "val_speed", "--exist-ok"]
    LOGGER.info(f"warm-up run (fills the OS file cache and the label cache): val.py {' '.join(args)}")
    one_run(args, env)
    rows = []
    for i in range(opt.runs):
        row = {"run": str(i + 1), **one_run(args, env)}
        LOGGER.info(str(row))
        rows.append(row)

    med = {k: round(statistics.median(r[k] for r in rows), 1) for k in REFERENCE}
    rows.append({"run": "median", **med, "mAP50": rows[0]["mAP50"], "mAP50-95": rows[0]["mAP50-95"],
                 "load before": "", "load after": ""})
    rows.append({"run": "reference", **REFERENCE, "mAP50": 0.560, "mAP50-95": 0.361, "load before": "",
                 "load after": ""})
    verdict = "no slower than" if med["wall s"] <= REFERENCE["wall s"] else "SLOWER than"
    import torch

    note = (f"`val.py --weights yolov5n.pt --data coco128.yaml --img 640 --batch 32` (plots on), "
            f"{opt.runs} timed runs after one warm-up, each a fresh process; wall time from launch to exit. "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs. "
            f"Per-image times are val.py's own Speed line. Median wall time {med['wall s']} s: "
            f"{verdict} the reference's {REFERENCE['wall s']} s (upstream YOLOv5 on this machine type). "
            f"'load' is the 1-minute load average before and after each run: above ~0.5 other "
            f"processes were competing for the 2 cores.")
    write_results(rows, opt.out, note=note)
    LOGGER.info(markdown_table(rows))
    shutil.rmtree(project, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
