"""Does attention help yolov5n on coco128? The README's comparison, reproducible in one command.

    python benchmarks/compare_attention.py --noval         # 12 runs of 30 epochs: about 1 h on 2 free CPU cores
    python benchmarks/compare_attention.py --epochs 5 --seeds 3

Runs `compare.py` on the yolov5n baseline and attention configs (a block before SPPF, and
CBAM inside every C3), each fine-tuned from ``../shared/weights/yolov5n.pt`` on coco128 at
320 px with the same hyperparameters, epochs, batch size and seeds; the new blocks start as
identity and are faded in over the warmup (hyp gate_schedule, see models/attention/README.md):
30 epochs, so that the blocks take part in most of the training. Latency is the median of fused forward passes at
320, batch 1, 2 threads. Copies results.{csv,md} and the three plots to
benchmarks/results/compare_yolov5n_coco128* ; the work folder is runs/compare/<name>, so an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compare  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT.parent / "shared" / "weights" / "yolov5n.pt"
CONFIGS = ["yolov5n.yaml", "yolov5n_CBAM.yaml", "yolov5n_SE.yaml", "yolov5n_CA.yaml", "yolov5n_GAM.yaml",
           "yolov5n_C3CBAM.yaml"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", default=CONFIGS)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--name", default="yolov5n_coco128")
    p.add_argument("--noval", action="store_true", help="validate each run after its final epoch only (faster)")
    opt = p.parse_args(argv)
    os.environ.setdefault("YOLO_DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    load0 = os.getloadavg()[0]
    out = compare.run(opt.cfg, data="coco128.yaml", weights=str(WEIGHTS), imgsz=opt.imgsz, epochs=opt.epochs,
                      seeds=opt.seeds, batch_size=opt.batch_size, runs=opt.runs, threads=2, workers=2,
                      project=str(ROOT / "runs" / "compare"), name=opt.name, noval=opt.noval)
    load1 = os.getloadavg()[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"compare_{opt.name}"
    for src in ("results.csv", "results.md", "map_vs_latency.png", "map_vs_params.png", "training_curves.png"):
        suffix = "" if src.startswith("results") else "_" + Path(src).stem
        shutil.copy(out["dir"] / src, RESULTS / f"{stem}{suffix}{Path(src).suffix}")
    md = RESULTS / f"{stem}.md"
    flags = f"epochs {opt.epochs}, seeds {opt.seeds}" + (", --noval" if opt.noval else "")
    if opt.cfg != CONFIGS:
        flags += ", --cfg " + " ".join(opt.cfg)
    md.write_text(md.read_text().rstrip() + f"\n\nCommand: `python benchmarks/compare_attention.py` ({flags}). "
                  f"Load average at start / end: {load0:.2f} / {load1:.2f}.\n")
    LOGGER.info(f"copied to {RESULTS}/{stem}*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
