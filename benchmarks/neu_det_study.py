"""Does attention help on real data? yolov5n (or s) fine-tuned on NEU-DET train, judged on NEU-DET val.

    # the CPU study (what benchmarks/results/neu_det_study.md reports): 5 rows x 3 seeds, 30 epochs at 256
    python benchmarks/neu_det_study.py

    # the same question at the papers' scale, for a GPU
    python benchmarks/neu_det_study.py --device 0 --imgsz 640 --epochs 100 --model s --seeds 5 --full

Rows: the baseline, CBAM before SPPF, CBAM inside every C3 (C3CBAM), coordinate attention before
SPPF, and the capacity control of CBAM (each CBAM replaced by a plain residual 1x1-conv bottleneck of
about its parameters, models/attention/control.py); ``--full`` adds SE, ECA and GAM before SPPF and
the control of C3CBAM. Every run is fine-tuned from the official weights with the same settings and
seeds through compare.py, which judges each run's final weights (last.pt) on the 360 held-out val
images and gives each difference from the baseline with a 95% paired-bootstrap interval over val
images plus the pooled training-seed spread (utils/stats.py). NEU-DET is 1440 train / 360 val images of 200x200 px.

Resumable: runs finished before (runs/study/<name>/runs.jsonl) are skipped, so the study can be
run piece by piece (``--seeds 1`` first, then ``--seeds 3``), and a run killed mid-training resumes
from its last.pt (compare.train_once); results are rewritten after every invocation.
``--skip ROW ...`` leaves rows out of one invocation (their runs stay pending, and the results
files are left as they were), e.g. ``--skip C3CBAM`` while the C3 rows wait. Writes
benchmarks/results/neu_det_study.{csv,md,png} (png: the intervals) and neu_det_study_curves.png;
``--out`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compare  # noqa: E402
from utils.cli import image_size, positive_int  # noqa: E402
from utils.device import cpu_info  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROWS = ["{m}.yaml", "{m}_CBAM.yaml", "control:{m}_CBAM.yaml", "{m}_C3CBAM.yaml", "{m}_CA.yaml"]
FULL = ["{m}_SE.yaml", "{m}_ECA.yaml", "{m}_GAM.yaml", "control:{m}_C3CBAM.yaml"]


def row_label(row: str) -> str:
    """A row's short name for ``--skip``: ``CBAM``, ``control:CBAM``, ``C3CBAM`` (the baseline is ``base``)."""
    label = row.replace("{m}_", "").replace(".yaml", "")
    return "base" if label == "{m}" else label


def study_configs(model: str, full: bool, controls_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """The study's config list for yolov5<model>; ``control:X`` entries become X's capacity control.
    Rows named in `skip` (see :func:`row_label`) are left out. Raises ValueError for an unknown row or
    for skipping the baseline, which every difference is measured against."""
    from models.attention.control import control_configs

    rows = ROWS + (FULL if full else [])
    labels = [row_label(r) for r in rows]
    bad = [s for s in skip if s not in labels or s == "base"]
    if bad:
        raise ValueError(f"--skip {' '.join(bad)}: not a skippable row; choose from {' '.join(labels[1:])}")
    out = []
    for row in rows:
        if row_label(row) in skip:
            continue
        name = row.format(m=f"yolov5{model}")
        if name.startswith("control:"):
            out.append(control_configs([name.removeprefix("control:")], controls_dir)[1])
        else:
            out.append(name)
    return out


def baseline_rise(results_csvs: list[str], last: int = 5) -> tuple[float, float, int] | None:
    """How much the baseline's val mAP50 and mAP50-95 still rose at the end: the mean over its last
    `last` epochs minus the mean over the `last` before them (window means: one epoch's value moves
    by about ±0.03 on NEU-DET val), averaged over runs; with the number of runs averaged. A curve that
    has flattened rises little. None without a run that validated each of its last 2 x `last` epochs."""
    import pandas as pd

    rises = []
    for f in results_csvs:
        if not Path(f).is_file():
            continue
        df = pd.read_csv(f)
        df.columns = [c.strip() for c in df.columns]
        cols = [next((c for c in df.columns if c.endswith(k)), None)
                for k in (("mAP_0.5", "mAP50"), ("mAP_0.5:0.95", "mAP50-95"))]
        tail = df.iloc[-2 * last:]
        if None in cols or len(df) < 2 * last or (tail[cols] == 0).any().any():  # 0: an epoch not validated
            continue
        rises.append([float(tail[c].iloc[last:].mean() - tail[c].iloc[:last].mean()) for c in cols])
    if not rises:
        return None
    return (*(float(sum(r[k] for r in rises) / len(rises)) for k in range(2)), len(rises))


def time_note(runs: list[dict]) -> str:
    """The study's time from compare.py's run records: ``train_s`` (training-loop time, cumulative over
    an interruption; per-epoch validation and setup not counted) and ``cpu_s`` (CPU time of the process
    and its data workers). Runs without a whole CPU time (recorded before it was kept, or resumed after
    an interruption, which counts only the part after it) get an estimate, said to be one: the median
    CPU time of the measured runs, since every run of a study does the same work (its loop time would
    carry whatever else ran on the cores)."""
    loop = sum(float(r.get("train_s") or 0) for r in runs)
    measured = [r for r in runs if r.get("cpu_s") is not None and r.get("resumed_at") is None]
    rest = [r for r in runs if r not in measured]
    text = (f"{len(runs)} training run{'s' * (len(runs) != 1)} took {loop / 3600:.2f} h of training-loop time "
            "(validation and setup not counted)")
    if not measured:
        return text + "; CPU time not recorded"
    cpu = sum(float(r["cpu_s"]) for r in measured)
    if not rest:
        return text + f" and {cpu / 3600:.2f} h of CPU time in all (the process and its data workers)"
    typical = statistics.median(float(r["cpu_s"]) for r in measured)
    est = typical * len(rest)
    return text + (f"; CPU time {cpu / 3600:.2f} h measured on {len(measured)} run(s), plus about {est / 3600:.2f} h "
                   f"estimated for the other {len(rest)} (recorded before CPU time was kept, or resumed after an "
                   f"interruption) at the measured runs' median of {typical / 3600:.2f} h a run (every run does the "
                   f"same work): about {(cpu + est) / 3600:.2f} h of CPU time in all")


def write_results(out: dict, opt: argparse.Namespace, dest: Path) -> None:
    """Copy compare.py's table and plots to `dest`/neu_det_study.*, with the study's note added."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(out["dir"] / "results.csv", dest / "neu_det_study.csv")
    if (out["dir"] / "delta_ci.png").is_file():
        shutil.copy(out["dir"] / "delta_ci.png", dest / "neu_det_study.png")
    if (out["dir"] / "training_curves.png").is_file():
        shutil.copy(out["dir"] / "training_curves.png", dest / "neu_det_study_curves.png")
    runs = [r for rows in out["acc"].values() for r in rows]
    base_csvs = [r["results_csv"] for r in out["acc"].get(out["cfgs"][0], [])]
    rise = baseline_rise(base_csvs)
    where = (f"on {cpu_info()[0]} ({os.cpu_count()} logical CPUs; loop time grows when other jobs share the cores, "
             "CPU time does not)") if str(opt.device) == "cpu" else f"on device {opt.device}"
    note = (f"Study: `python benchmarks/neu_det_study.py {' '.join(opt.argv)}`".rstrip() + f" — yolov5{opt.model} "
            f"fine-tuned from {Path(opt.weights).name} on NEU-DET train (1440 images), judged on NEU-DET val "
            f"(360 images), {opt.imgsz} px, {opt.epochs} epochs, batch {opt.batch_size}, device "
            f"{opt.device}; {time_note(runs)}, {where}. ")
    if controls := [Path(c).stem for c in out["cfgs"] if Path(c).stem.endswith("_control")]:
        note += (f"{', '.join(controls)}: capacity controls, each attention block of the row named replaced by a plain "
                 "residual 1x1-conv bottleneck of about its parameters at the same place, faded in the same way "
                 "(models/attention/control.py). ")
    if rise is not None:
        trend = "Still rising at the end" if max(rise[:2]) > 0.005 else "Flat at the end"
        note += (f"{trend}: the baseline's val mAP50 over its last 5 epochs averaged {rise[0]:+.3f} against the 5 "
                 f"before, its mAP50-95 {rise[1]:+.3f} (mean over {rise[2]} run(s)). ")
    md = (out["dir"] / "results.md").read_text()
    (dest / "neu_det_study.md").write_text(note + "\n\n" + md)


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list("nsmlx"), default="n", help="YOLOv5 scale (default n)")
    p.add_argument("--weights", default=None,
                   help="weights to fine-tune from (default: ../shared/weights/yolov5<model>.pt when it exists, "
                        "else yolov5<model>.pt, downloaded)")
    p.add_argument("--imgsz", type=image_size, default=256)
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--full", action="store_true", help="add SE, ECA, GAM before SPPF and the C3CBAM control")
    p.add_argument("--skip", nargs="+", default=[], metavar="ROW",
                   help="leave rows out of this invocation (e.g. C3CBAM control:CBAM); their runs stay pending")
    p.add_argument("--name", default=None, help="work folder runs/study/<name> (default neu_det, or neu_det_<model>)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the results are written")
    p.add_argument("--report", action="store_true", help="train nothing: write the results of the runs finished so far")
    opt = p.parse_args(argv)
    opt.argv = list(sys.argv[1:] if argv is None else argv)
    return opt


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    os.chdir(ROOT)  # run keys hold the weights path as given: the same string from any folder
    os.environ.setdefault("YOLO_DATASETS_DIR", str(ROOT.parent / "shared" / "datasets"))
    shared = Path("..") / "shared" / "weights" / f"yolov5{opt.model}.pt"
    opt.weights = opt.weights or (str(shared) if shared.is_file() else f"yolov5{opt.model}.pt")
    name = opt.name or ("neu_det" if opt.model == "n" else f"neu_det_{opt.model}")
    work = ROOT / "runs" / "study"
    try:
        cfgs = study_configs(opt.model, opt.full, work / name / "controls", tuple(opt.skip))
        out = compare.run(cfgs, data="neu-det.yaml", weights=opt.weights, imgsz=opt.imgsz, epochs=opt.epochs,
                          seeds=opt.seeds, batch_size=opt.batch_size, device=opt.device, workers=opt.workers,
                          project=str(work), name=name, report=opt.report)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    if opt.skip:  # a table without the skipped rows would replace the one that has them
        LOGGER.info(f"--skip: {opt.out}/neu_det_study.* left as they were; `--report` rewrites them with every row")
        return 0
    write_results(out, opt, opt.out)
    LOGGER.info(f"Study results in {opt.out}/neu_det_study.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
