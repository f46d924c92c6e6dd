"""Every export format side by side with the same model in PyTorch: size, mAP, per-image timings.

    python benchmarks/export_formats.py                          # the five models below, ~6 min on 2 idle cores
    python benchmarks/export_formats.py --models yolov5n --no-map

Models: yolov5n (../shared/weights/yolov5n.pt), yolov5s (yolov5s.yaml randomly initialised: no
offline weights, so its mAP is n/a), yolov5n_CBAM / _CA / _C3CBAM (a checkpoint fine-tuned into
the config given with `--finetuned yolov5n_CBAM=path/last.pt ...`, e.g. from
benchmarks/compare_attention.py's runs; without one, yolov5n.pt transferred into the config, not
fine-tuned: with the identity start their outputs equal yolov5n's). Each model is
exported with --dynamic to TorchScript, ONNX and OpenVINO FP32 (plus OpenVINO INT8, NNCF on
coco128, for yolov5n). On a CPU with native bf16 (AVX512_BF16 or AMX) the PyTorch model and the
OpenVINO export also run with --half (bf16: torch autocast, OpenVINO's bf16 precision hint), as
rows of their own; every other row runs FP32 (INT8 rows: INT8 weights, FP32 float parts). For each
format: file size, mAP50 / mAP50-95 on coco128 (val.py's
settings: 640, rectangular batches of 32) and the median per-image pre-process / inference /
NMS ms at 640x640, batch 1, over `--images` coco128 images, all formats of a model timed in
alternation image by image (a drift of the machine's speed hits them alike). NMS is timed at
detect settings (conf 0.25, IoU 0.45) and at val settings (conf 0.001, IoU 0.6, multi-label,
300 detections). The run prints the CPU (model name, AVX2 / AVX-512 / VNNI / AVX512_BF16 / AMX)
and measures its dense fp32 and bf16 ceilings (the best GFLOP/s of a large matrix product in
torch, at its start and end); each row's GFLOP/s is given as a share of the ceiling of its
precision: a model of G GFLOPs cannot take less than G / ceiling ms here, in any runtime.
Writes benchmarks/results/export_formats.{md,csv}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detect import preprocess  # noqa: E402
from export import export_model  # noqa: E402
from models.backends import load_backend  # noqa: E402
from models.checkpoint import load_checkpoint, model_record, save_checkpoint  # noqa: E402
from utils.boxes import non_max_suppression  # noqa: E402
from utils.device import cpu_has_native_bf16, cpu_summary, exact_fp32  # noqa: E402
from utils.logging import LOGGER, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"
MODELS = ("yolov5n", "yolov5s", "yolov5n_CBAM", "yolov5n_CA", "yolov5n_C3CBAM")
FORMATS = ("PyTorch", "PyTorch bf16", "TorchScript", "ONNX", "OpenVINO", "OpenVINO bf16", "OpenVINO INT8")
HALF_ROWS = {"PyTorch bf16": "PyTorch", "OpenVINO bf16": "OpenVINO"}  # row -> the row whose file it runs with --half


def make_checkpoint(name: str, weights: Path, out: Path, finetuned: dict[str, str] | None = None
                    ) -> tuple[Path, str, bool]:
    """A .pt for `name` in `out`: a fine-tuned checkpoint given in `finetuned`, the official weights,
    a transfer of them, or a random init. Returns the path, how it was made, and whether its mAP
    means anything. Raises FileNotFoundError for a missing fine-tuned checkpoint."""
    from models.transfer import load_pretrained
    from models.yolo import DetectionModel

    pt = out / f"{name}.pt"
    if finetuned and name in finetuned:
        src = Path(finetuned[name])
        if not src.is_file():
            raise FileNotFoundError(f"--finetuned {name}={src}: no such checkpoint")
        o = load_checkpoint(src).get("opt") or {}
        shutil.copy(src, pt)
        return pt, (f"fine-tuned from yolov5n.pt, {o.get('epochs', '?')} epochs at {o.get('imgsz', '?')} px "
                    f"({src.parent.parent.name})"), True
    if name == "yolov5n":
        shutil.copy(weights, pt)
        return pt, "official yolov5n.pt", True
    model = DetectionModel(f"{name}.yaml")
    record = load_checkpoint(weights)["model"]
    if name.startswith("yolov5n"):
        load_pretrained(record, model, source=weights.name)
        how, meaningful = "yolov5n.pt transferred, not fine-tuned", True
    else:
        how, meaningful = "random init (no offline weights)", False
    model.names = list(record["names"])
    save_checkpoint({"model": model_record(model)}, pt)
    return pt, how, meaningful


def export_all(pt: Path, int8: bool, data: str, imgsz: int = 640, bf16: bool = False) -> dict[str, Path]:
    """Every format of one checkpoint, exported with --dynamic beside it, plus OpenVINO fixed at
    `imgsz` x `imgsz` (what a deployment at one size would ship: no dynamic-shape overhead); with
    `bf16`, the PyTorch and OpenVINO files again under their HALF_ROWS names (run with --half)."""
    from models.checkpoint import load_model

    model = load_model(pt, "cpu")
    files = {"PyTorch": pt}
    out = export_model(model, pt.with_suffix(""), ("torchscript", "onnx", "openvino"), dynamic=True)
    files.update({"TorchScript": out["torchscript"], "ONNX": out["onnx"], "OpenVINO": out["openvino"]})
    if bf16:  # each next to its FP32 row
        files = {k: v for fmt, path in files.items()
                 for k, v in [(fmt, path)] + [(row, path) for row, src in HALF_ROWS.items() if src == fmt]}
    files[f"OpenVINO fixed {imgsz}"] = export_model(model, pt.parent / f"{pt.stem}_fixed", ("openvino",),
                                                    imgsz=(imgsz, imgsz))["openvino"]
    if int8:
        files["OpenVINO INT8"] = export_model(model, pt.with_suffix(""), ("openvino",), dynamic=True, int8=True,
                                              data=data)["openvino"]
    return files


def gemm_peak_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """This CPU's dense ceiling at `dtype` (float32 or bfloat16): the best GFLOP/s of `repeats`
    n x n x n matrix products (2 n^3 FLOPs each) by torch on its current thread count. A detector's
    convolutions are smaller and more memory-bound than one large product, so no runtime runs a
    model faster than model GFLOPs / this."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: thread pool and BLAS buffers
    with exact_fp32():  # the fp32 ceiling is IEEE fp32's, whatever the process set
        best = min(_timed(torch.mm, a, b)[1] for _ in range(repeats))
    return 2 * n**3 / (best / 1e3) / 1e9


def size_mb(path: Path) -> float:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def timings(backends: dict, images: list, imgsz: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median ms per image of each backend's phases, the backends taking turns image by image."""
    rec = {k: {"pre": [], "inf": [], "nms_detect": [], "nms_val": []} for k in backends}
    preds = {k: [] for k in backends}
    for i, im0 in enumerate([images[0]] * warmup + images):
        for fmt, b in backends.items():
            im, t_pre = _timed(preprocess, im0, (imgsz, imgsz), b.stride, torch.device("cpu"), auto=False)
            pred, t_inf = _timed(b, im)
            if i >= warmup:
                rec[fmt]["pre"].append(t_pre)
                rec[fmt]["inf"].append(t_inf)
                preds[fmt].append(pred)
    # NMS after all inference, so that no runtime's worker threads compete with it
    for i in range(len(images)):
        for fmt in backends:
            rec[fmt]["nms_detect"].append(_timed(non_max_suppression, preds[fmt][i], 0.25, 0.45, max_det=1000)[1])
            rec[fmt]["nms_val"].append(_timed(non_max_suppression, preds[fmt][i], 0.001, 0.6, multi_label=True,
                                              max_det=300)[1])
    return {fmt: {k: statistics.median(v) for k, v in r.items()} for fmt, r in rec.items()}


def accuracy(path: Path, data: str, project: Path, half: bool = False) -> tuple[float, float]:
    import val

    res = val.run(data, weights=path, batch_size=32, imgsz=640, plots=False, project=project, name="val",
                  workers=2, half=half)[0]
    return res[2], res[3]


def bench_model(name: str, opt, tmp: Path, images: list) -> list[dict]:
    """One model's rows: its checkpoint, every export of it, timed together; GFLOPs at opt.imgsz
    (utils.torch_utils.count_flops) and the GFLOP/s each format reaches."""
    from models.checkpoint import load_model
    from utils.torch_utils import count_flops

    pt, how, meaningful = make_checkpoint(name, Path(opt.weights), tmp, opt.finetuned)
    gflops = count_flops(load_model(pt, "cpu"), opt.imgsz)
    files = export_all(pt, int8=opt.int8 and name == "yolov5n", data=opt.data, imgsz=opt.imgsz,
                       bf16=opt.bf16 and cpu_has_native_bf16())
    backends = {fmt: load_backend(p, half=fmt in HALF_ROWS) for fmt, p in files.items()}
    t = timings(backends, images, opt.imgsz)
    rows = []
    for fmt, path in files.items():
        measured = opt.map and meaningful and (opt.map_for is None or name in opt.map_for)
        m50, m = accuracy(path, opt.data, tmp / "runs", half=fmt in HALF_ROWS) if measured else (None, None)
        r = t[fmt]
        rows.append({"model": name, "weights": how, "format": fmt, "precision": backends[fmt].precision,
                     "file": path.name, "MB": round(size_mb(path), 1),
                     "mAP50": "n/a" if m50 is None else round(m50, 3), "mAP50-95": "n/a" if m is None else round(m, 3),
                     "pre-process ms": round(r["pre"], 1), "inference ms": round(r["inf"], 1),
                     "× PyTorch": round(r["inf"] / t["PyTorch"]["inf"], 2),
                     "GFLOPs": round(gflops, 2), "GFLOP/s": round(gflops / (r["inf"] / 1e3), 1),
                     "NMS ms (conf 0.25)": round(r["nms_detect"], 2), "NMS ms (conf 0.001)": round(r["nms_val"], 2)})
    return rows


def ceiling_note(rows: list[dict], peak: float, threads: int, peak_bf16: float | None = None) -> str:
    """The results' sentence on the machine's ceilings: the fp32 GEMM peak and, per model, the least
    inference ms it allows (GFLOPs / peak) next to half the model's PyTorch ms; the bf16 peak when
    measured."""
    floors = []
    for r in rows:
        if r["format"] == "PyTorch":
            floors.append(f"{r['model']} {r['GFLOPs']:.2f} GFLOPs -> at least {1e3 * r['GFLOPs'] / peak:.1f} ms "
                          f"(half its PyTorch time: {r['inference ms'] / 2:.1f} ms)")
    bf16 = ("" if peak_bf16 is None else
            f" In bf16 the same product reaches {peak_bf16:.0f} GFLOP/s ({peak_bf16 / peak:.1f}x fp32); the "
            "bf16 rows' `% of peak` is their share of that ceiling.")
    return (f"\n\nCeiling: a 2048x2048 fp32 matrix product in torch reaches {peak:.0f} GFLOP/s on these {threads} "
            "threads (best of the runs at start and end); `GFLOP/s` = the model's GFLOPs at this size / its "
            "inference time and `% of peak` its share of that ceiling. No runtime can beat the ceiling, so: "
            + "; ".join(floors) + "." + bf16)


def _command(argv: list[str] | None) -> str:
    """The command line that made the results, with paths shortened to their last three parts."""
    args = sys.argv[1:] if argv is None else argv
    short = [a.split("=", 1)[0] + "=.../" + "/".join(Path(a.split("=", 1)[1]).parts[-3:]) if "=" in a else a
             for a in args]
    return " ".join(["python benchmarks/export_formats.py", *short])


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--weights", default=str(SHARED / "weights" / "yolov5n.pt"))
    p.add_argument("--data", default="coco128.yaml")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--images", type=int, default=30, help="coco128 images timed per format")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-map", dest="map", action="store_false")
    p.add_argument("--no-int8", dest="int8", action="store_false")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="no bf16 rows (they are measured only on a CPU with native bf16 anyway)")
    p.add_argument("--map-for", nargs="*", default=None, help="models whose mAP is measured (default: all)")
    p.add_argument("--finetuned", nargs="*", default=[], metavar="MODEL=PATH",
                   help="a fine-tuned checkpoint to use for MODEL, e.g. yolov5n_CBAM=runs/compare/.../last.pt")
    p.add_argument("--out", default=str(RESULTS / "export_formats"),
                   help="results stem: writes <out>.md and <out>.csv (default: the committed benchmarks/results ones)")
    opt = p.parse_args(argv)
    if any("=" not in f for f in opt.finetuned):
        p.error("--finetuned takes MODEL=PATH pairs")
    opt.finetuned = dict(f.split("=", 1) for f in opt.finetuned)
    torch.set_num_threads(opt.threads)
    ds = Path(os.environ.get("YOLO_DATASETS_DIR", SHARED / "datasets")) / "coco128" / "images" / "train2017"
    images = [cv2.imread(str(f)) for f in sorted(ds.glob("*.jpg"))[: opt.images]]
    load0, t0 = os.getloadavg()[0], time.time()
    cpu = cpu_summary()
    LOGGER.info(f"CPU: {cpu}")
    bf16 = opt.bf16 and cpu_has_native_bf16()
    peak = gemm_peak_gflops()
    peak_bf16 = gemm_peak_gflops(dtype=torch.bfloat16) if cpu_has_native_bf16() else None
    LOGGER.info(f"GEMM ceiling: fp32 {peak:.0f} GFLOP/s" + ("" if peak_bf16 is None else f", bf16 {peak_bf16:.0f}"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in opt.models:
            d = Path(tmp) / name
            d.mkdir()
            rows += bench_model(name, opt, d, images)
    peak = max(peak, gemm_peak_gflops())
    if peak_bf16 is not None:
        peak_bf16 = max(peak_bf16, gemm_peak_gflops(dtype=torch.bfloat16))

    def ceiling(r: dict) -> float:
        return peak_bf16 if "BF16" in str(r["precision"]) and peak_bf16 else peak

    rows = [{**{k: v for k, v in r.items() if not k.startswith("NMS")},
             "% of peak": round(100 * r["GFLOP/s"] / ceiling(r)),
             **{k: v for k, v in r.items() if k.startswith("NMS")}} for r in rows]
    for r in rows:
        LOGGER.info(" | ".join(str(v) for v in r.values()))
    note = (f"# Export formats at {opt.imgsz}, batch 1\n\n"
            f"Generated by `{_command(argv)}` (do not edit). All exports with `--dynamic` except "
            "`OpenVINO fixed` (fixed 1x3xHxW, as upstream's exports); "
            + ("mAP by val.py on coco128 (640, rectangular batches of 32); " if opt.map else "mAP not measured (--no-map); ")
            + "per-image ms are medians over "
            f"{opt.images} coco128 images letterboxed to {opt.imgsz}x{opt.imgsz}, the formats of a model taking turns "
            f"image by image; `× PyTorch` = inference ms / the same model's PyTorch inference ms. CPU, "
            f"{opt.threads} threads for every runtime, torch {torch.__version__}. CPU: {cpu}. "
            + ("bf16 rows: the same file with --half (torch autocast; OpenVINO's bf16 precision hint). " if bf16 else
               "No bf16 rows (" + ("--no-bf16" if not opt.bf16 else "no native bf16 on this CPU") + "). ")
            + "NMS (utils/boxes.py) at detect "
            "settings (conf 0.25, IoU 0.45) and val settings (conf 0.001, IoU 0.6, multi-label, max 300). "
            f"1-min load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end "
            f"({(time.time() - t0) / 60:.0f} min): a shared machine, compare within one model's rows. "
            + ("mAP n/a: yolov5s has no offline weights (random init). " if opt.map and "yolov5s" in opt.models else "")
            + ("" if opt.map_for is None or not opt.map else f"mAP measured only for {', '.join(opt.map_for)} (time). ")
            + ceiling_note(rows, peak, opt.threads, peak_bf16))
    write_results(rows, opt.out, note=note)
    LOGGER.info(f"wrote {opt.out}.md and .csv")
    return rows


if __name__ == "__main__":
    main()
