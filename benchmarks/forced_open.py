"""What does a block inserted into yolov5n.pt do to it at full strength, before any training?

    python benchmarks/forced_open.py                              # every block, before SPPF and in C3
    python benchmarks/forced_open.py --blocks CBAM SE --placements sppf

For each config ``yolov5n_<Block>.yaml`` (block before SPPF) and ``yolov5n_C3<Block>.yaml``
(in the C3 bottlenecks): transfer ../shared/weights/yolov5n.pt into it (identity start), then
validate on coco128 at 320 px with every new block's gate forced to 1, once as the blocks are
initialised (``raw``) and once after the calibration train.py does by default
(``calibrated``: models.transfer.calibrate_new_blocks on 32 coco128 images), and once after
train.py's default start (``zero start + calibrated``: models.transfer.zero_start_new_blocks, which
zeroes a block's last layers or gives it the residual form, then calibration). Also checks that
calibration leaves the gate-0 model exactly the pretrained one (max |difference| of the outputs
on the calibration batch). yolov5n.pt itself is the reference. Model weights are drawn with
seed 0 per config. Writes benchmarks/results/forced_open.csv / .md; work file
runs/forced_open.jsonl (an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import val as validate  # noqa: E402
from models.attention._base import AttentionBlock  # noqa: E402
from models.attention.make_configs import block_names  # noqa: E402
from models.checkpoint import load_checkpoint  # noqa: E402
from models.transfer import calibrate_new_blocks, load_pretrained, zero_start_new_blocks  # noqa: E402
from models.yolo import DetectionModel  # noqa: E402
from utils.data.dataset import create_dataloader  # noqa: E402
from utils.data.dataset_config import check_dataset  # noqa: E402
from utils.logging import write_results  # noqa: E402

WEIGHTS = ROOT.parent / "shared" / "weights" / "yolov5n.pt"
RESULTS = ROOT / "benchmarks" / "results"
PLACEMENTS = {"sppf": "yolov5n_{}.yaml", "c3": "yolov5n_C3{}.yaml"}


def set_gates(model: torch.nn.Module, blocks: list[str], value: float) -> None:
    """Fill the gate of each attention block among `blocks` (module names) with `value`."""
    mods = dict(model.named_modules())
    for b in blocks:
        if isinstance(mods[b], AttentionBlock):
            mods[b].gate.data.fill_(value)


def _m_ap(model: torch.nn.Module, data: dict, loader, imgsz: int) -> float:
    model.eval()
    return float(validate.run(data, model=model, dataloader=loader, imgsz=imgsz, plots=False)[0][3])


def _inserted(cfg: str, record: dict, data: dict):
    """(model, new blocks): yolov5n.pt transferred into `cfg` (identity start), weights drawn with seed 0."""
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=int(data["nc"]))
    model.names = list(record["names"])
    res = load_pretrained(record, model, source=WEIGHTS.name)
    return model, res.identity


def measure(cfg: str, record: dict, data: dict, loader, images: torch.Tensor, imgsz: int) -> dict:
    """mAP50-95 of `cfg` with the new gates at 1: raw and calibrated; gate-0 output change from calibration."""
    model, blocks = _inserted(cfg, record, data)
    out: dict = {"cfg": cfg, "blocks": len(blocks)}
    if not blocks:
        out["map"] = _m_ap(model, data, loader, imgsz)
        return out
    model.eval()
    with torch.no_grad():
        before = model(images)[0]
    set_gates(model, blocks, 1.0)
    out["raw"] = _m_ap(model, data, loader, imgsz)
    set_gates(model, blocks, 0.0)
    calibrate_new_blocks(model, blocks, images)
    model.eval()
    with torch.no_grad():
        out["gate0_max_diff"] = float((model(images)[0] - before).abs().max())
    set_gates(model, blocks, 1.0)
    out["calibrated"] = _m_ap(model, data, loader, imgsz)
    return out


def measure_zero_start(cfg: str, record: dict, data: dict, loader, images: torch.Tensor, imgsz: int) -> dict:
    """mAP50-95 of `cfg` at gate 1 after train.py's default start (zero start, then calibration), and
    which form the zero start gave: ``zeroed layers`` or ``residual`` (x + gate * a * f(x), a = 0)."""
    model, blocks = _inserted(cfg, record, data)
    zeroed = zero_start_new_blocks(model, blocks)
    residual = any(getattr(model.get_submodule(b), "residual_scale", None) is not None for b in zeroed)
    calibrate_new_blocks(model, blocks, images)
    set_gates(model, blocks, 1.0)
    return {"zero_start": _m_ap(model, data, loader, imgsz), "zeroed": len(zeroed),
            "form": "residual" if residual else "zeroed layers"}


def _needs_zero_start(row: dict) -> bool:
    """A row measured before zero start existed, or before blocks without zero layers had a zero start."""
    return "zeroed" not in row or row.get("zero_start") is None


def _command(opt: argparse.Namespace) -> str:
    """The command line that measures the table (work-file and output paths left out)."""
    cmd = "python benchmarks/forced_open.py"
    if opt.blocks:
        cmd += " --blocks " + " ".join(opt.blocks)
    if opt.placements != list(PLACEMENTS):
        cmd += " --placements " + " ".join(opt.placements)
    return cmd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", nargs="+", default=None, help="block names (default: all channel-keeping blocks)")
    p.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=list(PLACEMENTS))
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("--work", default=str(ROOT / "runs" / "forced_open.jsonl"))
    p.add_argument("--out", default=str(RESULTS / "forced_open"))
    p.add_argument("--table-only", action="store_true",
                   help="measure nothing: write the table from the work file, naming the configs not yet measured")
    opt = p.parse_args(argv)
    os.environ.setdefault("YOLO_DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    if not WEIGHTS.is_file():
        raise SystemExit(f"forced_open: {WEIGHTS} not found (the official yolov5n.pt is needed)")
    ckpt = load_checkpoint(WEIGHTS)
    record = ckpt.get("ema") or ckpt["model"]
    data = check_dataset("coco128.yaml")
    loader, dataset = create_dataloader(data["val"], opt.imgsz, 32, 32, pad=0.5, rect=True, workers=2,
                                        augment=False, nc=int(data["nc"]))
    images = dataset.calibration_batch(opt.calibration_images, opt.imgsz)
    work = Path(opt.work)
    work.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if work.is_file():
        for line in work.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[r["cfg"]] = r
    cfgs = ["yolov5n.yaml"] + [PLACEMENTS[pl].format(b) for b in (opt.blocks or block_names())
                               for pl in opt.placements]
    missing = [c for c in cfgs if c not in done or (c != "yolov5n.yaml" and _needs_zero_start(done[c]))]
    if opt.table_only:
        cfgs = [c for c in cfgs if c not in missing]
        if "yolov5n.yaml" not in done:
            raise SystemExit(f"forced_open: {work} has no yolov5n.yaml reference row; run without --table-only")
    for cfg in cfgs:
        if cfg not in done:
            done[cfg] = measure(cfg, record, data, loader, images, opt.imgsz)
        elif cfg == "yolov5n.yaml" or not _needs_zero_start(done[cfg]):
            continue
        if cfg != "yolov5n.yaml":  # rows measured before (this) zero start existed get its column only
            done[cfg].update(measure_zero_start(cfg, record, data, loader, images, opt.imgsz))
        with open(work, "a") as f:
            f.write(json.dumps(done[cfg]) + "\n")
        print(json.dumps(done[cfg]), flush=True)
    base = done["yolov5n.yaml"]["map"]
    rows = []
    for cfg in cfgs[1:]:
        r = done[cfg]
        default = r["calibrated"] if r.get("zero_start") is None else r["zero_start"]
        rows.append({"config": Path(cfg).stem, "new blocks": r["blocks"], "raw": f"{r['raw']:.3f}",
                     "calibrated": f"{r['calibrated']:.3f}",
                     "zero start + calibrated": "-" if r.get("zero_start") is None else f"{r['zero_start']:.3f}",
                     "zero start form": r.get("form", "zeroed layers" if r.get("zeroed") else "-"),
                     "default - yolov5n": f"{default - base:+.3f}",
                     "within 0.02": "yes" if default >= base - 0.02 else "no",
                     "gate-0 max diff": f"{r['gate0_max_diff']:.1e}"})
    note = (f"Forced open: yolov5n.pt transferred into each config, every new block's gate set to 1 without "
            f"training, coco128 val at {opt.imgsz} px (mAP50-95). yolov5n.pt itself: {base:.3f}. raw = blocks as "
            f"initialised (seed 0); calibrated = after models.transfer.calibrate_new_blocks on "
            f"{opt.calibration_images} coco128 images; zero start + calibrated = train.py's default (hyp "
            "gate_zero_start 1, then calibration); zero start form: 'zeroed layers' = the last layer before each "
            "attention map or of each branch zeroed, 'residual' = a block with no such layer becomes x + gate * a * f(x) "
            "with a trainable a = 0 (ReZero, arXiv:2003.04887); default - yolov5n: the default's mAP50-95 minus "
            "yolov5n.pt's. gate-0 max diff: "
            "largest change of the gate-0 model's outputs through calibration (0 = still the pretrained network). Command: "
            f"`{_command(opt)}`." + (f" Not measured yet: {', '.join(Path(c).stem for c in missing)}."
                                     if opt.table_only and missing else ""))
    write_results(rows, opt.out, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
