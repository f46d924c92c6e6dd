"""The attention zoo table: every block and placement on yolov5s at 640.

    python benchmarks/attention_table.py                   # all configs (about 15 min on 2 cores)
    python benchmarks/attention_table.py --blocks CBAM CC  # a subset
    python benchmarks/attention_table.py --no-latency      # parameters and GFLOPs only
    python benchmarks/attention_table.py --no-openvino     # without the OpenVINO latency column

For each config: parameters, the change against yolov5s (7,235,389), GFLOPs at 640x640
(thop's module count plus the attention matmuls thop cannot see, see
`utils.torch_utils.count_flops`; counted on the meta device, where only shapes are computed),
the attention-matmul part alone, and CPU latency at batch 1
(fused, eval, fp32, `torch.set_num_threads(2)`, median of `--runs` timed runs after warm-up;
configs slower than 5 s per image get 3 runs). Writes benchmarks/results/attention_zoo.md
and .csv. The 1-minute load average is recorded at start and end: other processes on the
machine make latencies noisy, the parameter and FLOP columns are exact.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.attention.make_configs import block_names  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.logging import LOGGER, write_results  # noqa: E402
from utils.torch_utils import matmul_flops, thop_flops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BASELINE_PARAMS = 7_235_389


def placements(blocks: list[str]) -> list[tuple[str, str, str]]:
    """(block, placement, config) for the baseline and every requested block."""
    rows = [("-", "baseline", "yolov5s.yaml")]
    for b in blocks:
        rows.append((b, "before SPPF", f"yolov5s_{b}.yaml"))
        rows.append((b, "in C3", f"yolov5s_C3{b}.yaml"))
        rows.append((b, "replaces C3", f"yolov5s_{b}-replace.yaml"))
    return rows


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, imgsz: int, runs: int, warmup: int,
               baseline: torch.nn.Module | None = None) -> tuple[float, float, int, float]:
    """Median and minimum ms of a batch-1 forward pass, the number of timed runs, and the
    baseline's median timed in alternation with it.

    Alternating config and baseline run by run makes the ratio of the two medians robust to
    the machine's speed drifting over minutes (other processes, clocks), which on a shared
    2-core machine moves sequential timings by 15% and made some blocks look faster than
    the baseline they extend."""
    x = torch.rand(1, 3, imgsz, imgsz)
    pair = baseline if baseline is not None else model
    model(x)  # first call: allocator and kernel selection
    pair(x)
    t0 = time.perf_counter()
    model(x)
    if time.perf_counter() - t0 > 5.0:  # global attention at stride 4: seconds per image, keep it short
        warmup, runs = 0, 3
    for _ in range(max(warmup - 2, 0)):
        model(x)
        pair(x)
    times, base_times = [], []
    for _ in range(runs):
        for m, out in ((model, times), (pair, base_times)):
            t0 = time.perf_counter()
            m(x)
            out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times), runs, statistics.median(base_times)


def measure(block: str, placement: str, cfg: str, opt, base: dict | None,
            base_model: torch.nn.Module | None = None) -> dict:
    model = DetectionModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    shapes_only = copy.deepcopy(model).to("meta")  # same counts as real tensors, without the arithmetic
    attn = matmul_flops(shapes_only, opt.imgsz)
    gflops = thop_flops(shapes_only, opt.imgsz) + attn
    d_gflops = gflops - base["_gflops"] if base else 0.0
    row = {"block": block, "placement": placement, "config": cfg, "parameters": f"{params:,}",
           "Δ parameters": f"{params - BASELINE_PARAMS:+,} ({100 * (params / BASELINE_PARAMS - 1):+.1f}%)",
           "GFLOPs": round(gflops, 2), "attention GFLOPs": round(attn, 3),
           "Δ GFLOPs": f"{d_gflops:+.3f}" if abs(d_gflops) >= 5e-4 else "+0.000", "_gflops": gflops}
    if opt.latency:
        model = model.eval().fuse()
        ms, fastest, runs, base_ms = latency_ms(model, opt.imgsz, opt.runs, opt.warmup, base_model)
        row["CPU ms"] = round(ms, 1)
        row["Δ CPU ms"] = f"{100 * (ms / base_ms - 1):+.0f}%" if base else "+0%"
        row["min ms"] = round(fastest, 1)
        row["runs"] = runs
        if opt.openvino:
            row["OpenVINO ms"] = round(openvino_ms(model, opt.imgsz, runs, opt.warmup), 1)
    return row


def openvino_ms(model: torch.nn.Module, imgsz: int, runs: int, warmup: int) -> float:
    """Median ms of a batch-1 inference of `model` exported to OpenVINO FP32 (fixed imgsz x imgsz),
    run through models/backends.py with the same thread count as torch."""
    import tempfile

    from export import export_model
    from models.backends import load_backend

    with tempfile.TemporaryDirectory() as tmp:
        files = export_model(model, Path(tmp) / "m", ("openvino",), imgsz=(imgsz, imgsz))
        backend = load_backend(files["openvino"])
        x = torch.rand(1, 3, imgsz, imgsz)
        for _ in range(warmup):
            backend(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            backend(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description="Parameters, GFLOPs and CPU latency of every attention config.")
    p.add_argument("--blocks", nargs="*", default=None, help="block names (default: every registered block)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-latency", dest="latency", action="store_false")
    p.add_argument("--no-openvino", dest="openvino", action="store_false", help="skip the OpenVINO latency column")
    p.add_argument("--out", default=str(RESULTS / "attention_zoo"))
    opt = p.parse_args(argv)
    torch.set_num_threads(opt.threads)
    blocks = opt.blocks or block_names()
    load0 = os.getloadavg()[0]
    t0 = time.time()
    base_model = DetectionModel("yolov5s.yaml").eval().fuse() if opt.latency else None
    if opt.latency:  # warm the process up (thread pool, allocator) before anything is timed
        latency_ms(base_model, opt.imgsz, 3, 2)
    # every row is timed in alternation with yolov5s; the baseline's own row with a copy of it
    base_copy = copy.deepcopy(base_model)
    rows, base = [], None
    for block, placement, cfg in placements(blocks):
        row = measure(block, placement, cfg, opt, base, base_model if base else base_copy)
        if base is None:
            base = row
        rows.append(row)
        LOGGER.info(" | ".join(str(v) for k, v in row.items() if not k.startswith("_")))
    minutes = (time.time() - t0) / 60
    load1 = os.getloadavg()[0]
    note = (f"# Attention zoo on yolov5s at {opt.imgsz}x{opt.imgsz}\n\n"
            "Generated by `python benchmarks/attention_table.py` (do not edit). Parameters include one\n"
            "identity-start gate per attention block. GFLOPs = thop's module count + the attention matmuls\n"
            "thop misses (`attention GFLOPs`, measured with torch's FlopCounterMode). 'before SPPF' =\n"
            "`yolov5s_<Name>.yaml`, 'in C3' = `yolov5s_C3<Name>.yaml` (the block ends every backbone\n"
            "bottleneck), 'replaces C3' = `yolov5s_<Name>-replace.yaml`.\n\n"
            f"CPU latency: fused, eval, fp32, batch 1, torch {torch.__version__}, {opt.threads} threads, median of "
            f"{opt.runs} runs after {opt.warmup} warm-up runs (3 runs, no more warm-up, where one image takes over 5 s); "
            "`min ms` is the fastest run, the least disturbed by other processes. `Δ CPU ms` compares each "
            "config with yolov5s timed in alternation with it, run by run, so that a drift of the machine's speed "
            "cancels out. `OpenVINO ms`: the same fused model exported to OpenVINO FP32 (export.py, fixed "
            f"{opt.imgsz}x{opt.imgsz}), median batch-1 inference with the same thread count, timed after the torch runs. "
            f"1-min load average {load0:.2f} at start, {load1:.2f} at end ({minutes:.0f} min): latencies on a "
            "shared machine are noisy, compare them within one table only.")
    write_results([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], opt.out, note=note)
    LOGGER.info(f"wrote {opt.out}.md and .csv")
    return rows


if __name__ == "__main__":
    main()
