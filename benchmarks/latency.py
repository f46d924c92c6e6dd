"""CPU inference latency of fused models, batch 1: median of N timed runs after warm-up.

    python benchmarks/latency.py                      # yolov5n and yolov5s at 640, 2 threads
    python benchmarks/latency.py --cfg yolov5s_CBAM.yaml --runs 50

Writes benchmarks/results/latency.md and latency.csv. The load average at the start is
recorded, because other processes on the machine make the figures noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo import DetectionModel  # noqa: E402
from utils.logging import LOGGER, table, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def measure(model: torch.nn.Module, imgsz: int, runs: int, warmup: int, channels_last: bool) -> float:
    """Median milliseconds of one forward pass (batch 1)."""
    x = torch.rand(1, 3, imgsz, imgsz)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", nargs="+", default=["yolov5n.yaml", "yolov5s.yaml"])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "latency"))
    opt = p.parse_args(argv)
    torch.set_num_threads(opt.threads)
    load = os.getloadavg()[0]
    rows = []
    for cfg in opt.cfg:
        model = DetectionModel(cfg).eval().fuse()
        row = {"model": Path(cfg).stem, "imgsz": opt.imgsz, "threads": opt.threads}
        row["ms (NCHW)"] = round(measure(model, opt.imgsz, opt.runs, opt.warmup, channels_last=False), 1)
        row["ms (channels_last)"] = round(measure(model, opt.imgsz, opt.runs, opt.warmup, channels_last=True), 1)
        rows.append(row)
        LOGGER.info(str(row))
    text = table(rows)
    LOGGER.info(text)
    write_results(rows, opt.out, note=(
        f"Fused models, batch 1, fp32, torch {torch.__version__}, {opt.threads} threads, median of {opt.runs} runs "
        f"after {opt.warmup} warm-up runs; 1-min load average at start {load:.2f}."))
    return rows


if __name__ == "__main__":
    main()
