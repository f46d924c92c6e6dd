"""Compare model configs: cost (parameters, GFLOPs, latency, memory) and, if asked, accuracy.

    # cost only, every C3-embedded attention variant against the baseline, at 640
    # (model files work too: best.pt, best.onnx, best_openvino_model/, best.torchscript)
    python compare.py --cfg yolov5s.yaml 'models/attention/configs/yolov5s_C3*.yaml' --imgsz 640

    # plus fine-tuning runs from official weights, 3 seeds each, on a dataset with a held-out val split
    python compare.py --cfg yolov5n.yaml yolov5n_CBAM.yaml yolov5n_CA.yaml --weights yolov5n.pt \\
        --data neu-det.yaml --imgsz 256 --epochs 30 --seeds 3 --name zoo

    # checkpoints trained elsewhere, evaluated on the dataset's val split (no training)
    python compare.py --cfg base.pt cbam.pt --data my.yaml --imgsz 640

Every config is trained with the same hyperparameters, epochs, batch size and seeds. The
first config is the baseline. Each run is judged on its final weights (last.pt), evaluated on
the val split with val.py's settings, never on best.pt (picked on those same val images, it
flatters the noisier run). The difference from the baseline in mAP50 and mAP50-95 comes with
a 95% confidence interval from a paired bootstrap over the val images (plus the training seed's
spread, pooled over the rows with several seeds), and a verdict from the interval alone: better, worse or no detectable difference
(with the smallest difference the comparison could have detected); see utils/stats.py.
A val split that shares images with the train split is warned about (coco128: 128 of 128).

``--control`` adds, for every attention config, a row in which each attention block is replaced
by a plain residual 1x1-conv bottleneck of about the same parameter count at the same place
(models/attention/control.py), started and faded in the same way: does a gain come from
attention, or from extra capacity and newly trained layers?

Outputs in runs/compare/<name>/: results.csv, results.md (a table ready for the README),
map_vs_latency.png, map_vs_params.png, delta_ci.png, training_curves.png, and runs.jsonl — one
line per finished measurement. Running the same command again skips what runs.jsonl already
holds (same config and settings), so an interrupted comparison resumes where it stopped. Each
measurement is announced as k/N with an estimate of the time left (from the measurements
made so far); a config whose forward pass takes over SLOW_FORWARD_MS is flagged.

With --storage URL (an Optuna RDB URL such as postgresql://user:pw@host/db), several compare.py
processes given the same arguments share the training runs: each run is trained by one of them,
a dead process's run is retried once by another, and each prints the table from the storage
(utils/grid.py).

Model files are measured for cost, and with --data evaluated on its val split; with --epochs they
are refused before any work. Configs of one file name from different folders are named by
their folder (`A/my`, runs `A_my_seed0`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import glob
import hashlib
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.transfer import require_same_scale  # noqa: E402
from utils.cli import image_size, positive_int  # noqa: E402
from utils.grid import Job, LocalLedger, StorageLedger, work_through  # noqa: E402
from utils.logging import LOGGER, markdown_table, table, write_results  # noqa: E402
from utils.rdb import check_storage  # noqa: E402

COST_KEYS = ("imgsz", "threads", "runs")
TRAIN_KEYS = ("weights", "data", "imgsz", "epochs", "batch_size", "hyp", "workers")
EVAL_KEYS = ("data", "imgsz")  # plus val.py's own settings: batch 32, conf 0.001, IoU 0.6, max 300 detections
VAL_BATCH = 32
SLOW_FORWARD_MS = 1000.0  # CPU ms per batch-1 forward above which a config is flagged as slow


class Progress:
    """``k/N`` and the time left for a sequence of measurements of one kind, estimated from the
    mean duration of those measured so far (skipped ones take no time and are not counted)."""

    def __init__(self, total: int):
        self.total, self.k, self.spent, self.measured = total, 0, 0.0, 0

    def next(self) -> str:
        self.k += 1
        left = self.total - self.k + 1
        eta = (f", about {_duration(self.spent / self.measured * left)} left" if self.measured
               else "")
        return f"[{self.k}/{self.total}{eta}]"

    def done(self, seconds: float) -> None:
        self.spent += seconds
        self.measured += 1


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def expand_cfgs(items: list[str]) -> list[str]:
    """Config names, paths and globs -> a list in the order given; a glob's matches already listed are
    left out, a name given twice stays twice (refused by the request checks, never merged silently)."""
    out: list[str] = []
    for it in items:
        if not any(c in it for c in "*?["):
            out.append(it)
            continue
        matches = sorted(glob.glob(it))
        if not matches:
            raise FileNotFoundError(f"--cfg {it!r} matches no file")
        out += [m for m in matches if m not in out]
    return out


def is_model_file(cfg: str) -> bool:
    """A checkpoint or exported model (`best.pt`, `best.onnx`, `best_openvino_model/`, ...) rather than a YAML."""
    from models.backends import BACKENDS, format_key

    return format_key(cfg) in BACKENDS


def _cfg_identity(cfg: str) -> str:
    """The config's name and a digest of its text: an edited YAML is measured again."""
    from models.yolo import resolve_cfg

    if is_model_file(cfg):  # a model file: its name, size and modification time
        st = Path(cfg).stat()
        return f"{Path(cfg).name}:{st.st_size}:{int(st.st_mtime)}"
    path = resolve_cfg(cfg)
    text = path.read_text()
    if path.stem != Path(cfg).stem:  # scale letter taken from the name (yolov5n_X from yolov5s_X)
        text += f"\n# scale from {Path(cfg).stem}"
    return f"{Path(cfg).stem}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def run_key(kind: str, cfg: str, settings: dict, seed: int | None = None) -> str:
    """Identity of one measurement: the same key means it was already done."""
    blob = json.dumps({"kind": kind, "cfg": _cfg_identity(cfg), "seed": seed, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def load_done(path: Path) -> dict[str, dict]:
    """Finished measurements by key (a half-written last line from a kill is ignored)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError):
                continue
    return done


def append_done(path: Path, rec: dict) -> None:
    """Add one finished measurement; a torn last line (a kill while writing) is ended first."""
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(rec, default=str) + "\n")
        f.flush()


def _rss_kb() -> int:
    """Resident memory of this process now, in kB (Linux); 0 where /proc is missing."""
    try:
        import os

        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_kb() -> int:
    """Peak resident memory of this process since the last :func:`_reset_peak_rss`, in kB.

    Read from VmHWM (Linux). Not ``getrusage().ru_maxrss``: Linux carries that figure across
    fork and exec, so a worker spawned by a parent that once held gigabytes (after a training
    run) would report the parent's peak as its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: this process's own maximum


def _reset_peak_rss() -> None:
    """Start a new peak (VmHWM) from the current resident size; a no-op where Linux's clear_refs is missing."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _cost_worker(cfg: str, imgsz: int, threads: int, runs: int, nc: int | None, nc_from: str, half: bool, q) -> None:
    """Runs in a fresh process, so its peak memory belongs to this model alone. `half`: CPU latency at
    reduced precision (bf16 where the CPU has it natively, else FP32, said in one line)."""
    import torch

    from models.backends import TorchMath
    from models.yolo import DetectionModel
    from utils.torch_utils import count_flops

    try:
        torch.set_num_threads(threads)
        fused, yaml_cfg, imgsz = _runner(cfg, imgsz, nc, nc_from, half)
        model = DetectionModel(yaml_cfg, nc=nc).eval()
        params = sum(p.numel() for p in model.parameters())
        math = TorchMath(torch.device("cpu"), half, fp16_ok=False)  # a built config: torch's own precision
        if fused is None and math.refused:
            LOGGER.warning(f"WARNING: --half: {cfg} runs in FP32: {math.refused}")
        precision = fused.precision if fused is not None else math.precision
        fused = fused or copy.deepcopy(model).fuse()
        x = torch.rand(1, 3, *imgsz)
        _reset_peak_rss()
        rss0 = _rss_kb()
        times = []
        with torch.inference_mode(), (math.context() if isinstance(fused, torch.nn.Module) else contextlib.nullcontext()):
            for i in range(runs + 3):
                t0 = time.perf_counter()
                fused(x)
                if i >= 3:
                    times.append((time.perf_counter() - t0) * 1e3)
        peak_mb = (_peak_rss_kb() - rss0) / 1024
        gflops = count_flops(model, imgsz)  # after timing: its own copies must not inflate the peak
        model = fused
        gpu_ms = None
        if torch.cuda.is_available() and isinstance(model, torch.nn.Module):
            m, xg = model.cuda(), x.cuda()
            gt = []
            with torch.inference_mode():
                for i in range(runs + 3):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    m(xg)
                    torch.cuda.synchronize()
                    if i >= 3:
                        gt.append((time.perf_counter() - t0) * 1e3)
            gpu_ms = statistics.median(gt)
        batch = 1 if getattr(fused, "dynamic", True) else int(getattr(fused, "meta", {}).get("batch") or 1)
        q.put({"params": params, "gflops": round(gflops, 2), "cpu_ms": round(statistics.median(times), 1),
               "precision": precision, "dynamic": bool(getattr(fused, "dynamic", True)),
               "timed_at": f"{imgsz[0]}x{imgsz[1]}" + (f", batch {batch} (fixed)" if batch > 1 else ""),
               "gpu_ms": None if gpu_ms is None else round(gpu_ms, 2), "peak_mem_mb": round(max(peak_mb, 0.0), 1)})
    except Exception as e:  # reported by the parent with the config's name
        from models.checkpoint import CheckpointError

        q.put({"error": f"{type(e).__name__}: {e}",
               "user_error": isinstance(e, (ValueError, FileNotFoundError, CheckpointError))})


def _runner(cfg: str, imgsz: int, nc: int | None, nc_from: str = "--nc", half: bool = False):
    """What to time for `cfg`: (None, the YAML, (imgsz, imgsz)) for a config, which is built and fused;
    for a model file, its models/backends.py backend, the model YAML stored in it and the (height,
    width) it takes (a fixed-shape export: its own, said in the log).

    ValueError when a model file's class count is not `nc`; `nc_from` says where `nc` came from
    (:func:`nc_source`), so the message names what the user gave."""
    if not is_model_file(cfg):
        return None, cfg, (imgsz, imgsz)
    from models.backends import load_backend

    backend = load_backend(cfg, "cpu", half=half)
    if nc is not None and nc != backend.nc:
        raise ValueError(f"{cfg} has {_classes(backend.nc)}, but {nc_from} has {nc}: its cost would not be that of "
                         f"a model of {_classes(nc)}; compare files with {_classes(nc)}, or leave out "
                         f"{'--nc' if nc_from.startswith('--nc') else '--data'} to measure the files as they are")
    if not backend.dynamic and tuple(backend.imgsz) != (imgsz, imgsz):
        LOGGER.info(f"{cfg} is a fixed-shape export: timed at its {backend.imgsz[0]}x{backend.imgsz[1]}, "
                    f"not {imgsz}")
        return backend, backend.meta["yaml"], tuple(backend.imgsz)
    return backend, backend.meta["yaml"], (imgsz, imgsz)


def _classes(n: int) -> str:
    return f"{n} class" if n == 1 else f"{n} classes"


def nc_source(nc: int | None, data: str | None) -> str:
    """Where compare's class count comes from, as error messages name it: "--nc" when given, else
    "the dataset <data> (--data)"."""
    return "--nc" if nc is not None or not data else f"the dataset {data} (--data)"


def measure_cost(cfg: str, imgsz: int, threads: int, runs: int, nc: int | None = None, nc_from: str = "--nc",
                 half: bool = False) -> dict:
    """Parameters, GFLOPs, median fused CPU latency (batch 1; at bf16 with `half` on a CPU with native
    bf16), GPU latency (FP32), peak inference memory, and the CPU precision used.

    `nc_from` names where `nc` came from (:func:`nc_source`) in the error for a model file of
    another class count. RuntimeError naming `cfg` when the measurement fails."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the cores, for the note
    p = ctx.Process(target=_cost_worker, args=(cfg, imgsz, threads, runs, nc, nc_from, half, q))
    p.start()
    res = q.get()
    if isinstance(res, dict) and load is not None:
        res["load_avg"] = round(load, 2)
    p.join()
    if res.get("user_error"):  # bad input, already named in its message (ModelConfigError, CheckpointError too)
        raise ValueError(res["error"].split(": ", 1)[1])
    if "error" in res:
        raise RuntimeError(f"{cfg}: cost measurement failed: {res['error']}")
    return res


def train_once(cfg: str, seed: int, opt: argparse.Namespace, save_root: Path, label: str | None = None) -> dict:
    """One short training run in `save_root`/<label>_seed<seed> (`label`: the config's row name from
    :func:`row_names`, '/' read as '_'; default its stem); returns the final metrics and the path of
    its results.csv, wall time (``train_s``, all epochs) and CPU time (``cpu_s``: this process and its
    data workers; for a run resumed after an interruption only the part after it, see ``resumed_at``).

    A run that was interrupted (its last.pt unfinished, started by this function with the same
    settings, as recorded in the run folder's compare_run.json) is resumed with train.py --resume
    instead of being trained again from the start."""
    import train
    from utils.device import cpu_seconds

    name = f"{(label or Path(cfg).stem).replace('/', '_')}_seed{seed}" + ("_paper-start" if opt.no_identity_start else "")
    plan = {"cfg": str(cfg), "seed": seed, **{k: getattr(opt, k, None) for k in (*TRAIN_KEYS, "no_identity_start", "noval")}}
    name = run_name(save_root, name, plan)
    run_dir = save_root / name
    last, marker = run_dir / "weights" / "last.pt", run_dir / "compare_run.json"
    finished, resumed_at = _run_state(last, marker, plan)
    if finished is not None and (result := _unrecorded_result(finished, run_dir)) is not None:
        return result
    cpu0 = cpu_seconds()
    if resumed_at is not None:
        LOGGER.info(f"{name}: resuming the interrupted run at epoch {resumed_at} ({last})")
        out = train.run(resume=str(last), device=opt.device, workers=opt.workers)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(plan, sort_keys=True, default=str))
        out = train.run(weights=opt.weights or "", cfg=cfg, data=opt.data, hyp=opt.hyp, epochs=opt.epochs,
                        batch_size=opt.batch_size, imgsz=opt.imgsz, seed=seed, workers=opt.workers,
                        project=str(save_root), name=name, exist_ok=True, device=opt.device, noplots=True,
                        no_identity_start=opt.no_identity_start, noval=bool(getattr(opt, "noval", False)))
    save_dir = Path(out["save_dir"])
    gc.collect()  # the run's data loaders, and with them their workers, joined: their CPU time is counted here
    return {"map50": float(out["metrics"]["map50"]), "map": float(out["metrics"]["map"]),
            "results_csv": str(save_dir / "results.csv"), "train_s": round(out.get("train_time", float("nan")), 1),
            "cpu_s": round(cpu_seconds() - cpu0, 1), "gate": mean_gate(save_dir / "weights" / "last.pt"),
            **({"resumed_at": resumed_at} if resumed_at is not None else {})}


def run_name(save_root: Path, name: str, plan: dict) -> str:
    """The run folder's name: `name`, unless `save_root`/`name` holds a run with other settings
    (its compare_run.json records another plan, or it has weights and no record): then
    `name`_<8 hex digits of the plan>, so that a run with new settings never overwrites another's
    last.pt, results.csv and match statistics. The same plan always gets the same name."""
    run_dir = save_root / name
    marker = run_dir / "compare_run.json"
    if _same_plan(marker, plan) or not (marker.is_file() or (run_dir / "weights").exists()):
        return name
    new = f"{name}_{hashlib.sha1(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:8]}"
    LOGGER.info(f"{run_dir} holds a run with other settings: this one trains in {save_root / new}")
    return new


def _same_plan(marker: Path, plan: dict) -> bool:
    """Whether `marker` (a run folder's compare_run.json) records `plan`."""
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(plan, sort_keys=True, default=str))
    except (OSError, ValueError):
        return False


def _run_state(last: Path, marker: Path, plan: dict) -> tuple[dict | None, int | None]:
    """What is left of a run started with `plan` (as `marker` records): (its last.pt's checkpoint,
    None) when it trained all its epochs, (None, the epoch to resume at) when it was interrupted,
    (None, None) for anything else (no such run, other settings, an unreadable file: train afresh).
    The checkpoint is read once for both questions."""
    from models.checkpoint import CheckpointError, check_resumable, load_checkpoint

    if not (_same_plan(marker, plan) and last.is_file()):
        return None, None
    try:
        ck = load_checkpoint(last)
    except (OSError, ValueError, RuntimeError):
        return None, None
    try:
        check_resumable(ck, last, int((ck.get("opt") or {}).get("epochs", 0)))
    except CheckpointError:
        return ck, None  # trained all its epochs
    return None, int(ck.get("epoch", -1)) + 1


def _unrecorded_result(ck: dict, run_dir: Path) -> dict | None:
    """The result of a run that trained all its epochs but was never recorded (stopped between its
    last epoch and the record), rebuilt from its checkpoint `ck` and results.csv instead of training
    it again; None without a results.csv. Its CPU time is unknown (``cpu_s`` None); mAP is replaced
    by the evaluation of last.pt that every run gets."""
    csv = run_dir / "results.csv"
    if not csv.is_file():
        return None
    LOGGER.info(f"{run_dir.name}: finished training but was not recorded; its last.pt is taken as it is")
    return {"map50": float("nan"), "map": float("nan"), "results_csv": str(csv),
            "train_s": round(float(ck.get("train_time") or float("nan")), 1), "cpu_s": None,
            "gate": mean_gate(run_dir / "weights" / "last.pt"), "rebuilt": True}


def evaluate(weights: str | Path, opt: argparse.Namespace, save_dir: Path) -> dict:
    """Evaluate a model file on the val split of ``opt.data`` at ``opt.imgsz`` with val.py's settings
    (batch 32, conf 0.001, IoU 0.6); keep the per-image match statistics in
    `save_dir`/match_stats.npz (utils.stats.MatchStats) for the confidence intervals.
    Returns mAP50, mAP50-95, the statistics file and the number of val images."""
    import val
    from utils.stats import MatchStats

    per_image: list[tuple] = []
    (_, _, map50, map5095, *_), _, _ = val.run(data=opt.data, weights=str(weights), batch_size=VAL_BATCH,
                                               imgsz=opt.imgsz, device=opt.device, workers=opt.workers,
                                               project=str(save_dir.parent), name=save_dir.name, exist_ok=True,
                                               plots=False, per_image=per_image)
    path = MatchStats.from_val(per_image).save(save_dir / "match_stats.npz")
    return {"map50": float(map50), "map": float(map5095), "stats": str(path), "images": len(per_image)}


def mean_gate(weights: str | Path) -> float | None:
    """Mean |opening| of the attention blocks in a checkpoint: how far training opened them.

    A block inserted into a pretrained network starts as the identity (gate 0) and becomes the
    paper's block at gate 1; for DA / CC / NonLocal the opening is the gate times their own
    residual scale (models/gates.attention_gates, the reader of train.py's log too). None for a
    model without attention blocks or a missing file."""
    from models.checkpoint import load_model
    from models.gates import attention_gates

    if not Path(weights).is_file():
        return None
    gates = [abs(v) for v in attention_gates(load_model(weights, "cpu", fuse=False)).values()]
    return round(statistics.fmean(gates), 4) if gates else None


def display_name(cfg: str) -> str:
    """A row's name: a config's stem (``yolov5n_CBAM``), a model file's name (``best.onnx``,
    ``best_openvino_model``), so that formats of one model stay apart."""
    return Path(cfg).name.rstrip("/") if is_model_file(cfg) else Path(cfg).stem


def row_names(cfgs: list[str]) -> dict[str, str]:
    """Each config's name in the table, the log and its training runs' folders: :func:`display_name`,
    unique within `cfgs`. Configs sharing a name (`A/my.yaml`, `B/my.yaml`) are told apart by the
    fewest parent folders that differ (`A/my`, `B/my`), else by their position (`my#2`); the same
    list always gives the same names, so a rerun finds its runs again."""
    from models.yolo import resolve_cfg

    base = {c: display_name(c) for c in cfgs}

    def folders(c: str) -> tuple[str, ...]:
        try:
            path = Path(c) if is_model_file(c) else resolve_cfg(c)
        except (FileNotFoundError, ValueError):
            path = Path(c)
        return path.resolve().parent.parts

    names: dict[str, str] = {}
    for c in cfgs:
        same = [d for d in cfgs if base[d] == base[c]]
        if len(same) == 1:
            names[c] = base[c]
            continue
        parts = {d: folders(d) for d in same}
        for k in range(1, max(len(v) for v in parts.values()) + 1):
            tags = {d: "/".join(parts[d][-k:]) for d in same}
            if len(set(tags.values())) == len(same):
                names[c] = f"{tags[c]}/{base[c]}"
                break
    taken: set[str] = set()
    for i, c in enumerate(cfgs):  # the same file named twice, or a tag equal to another config's name
        if c not in names or names[c] in taken:
            names[c] = f"{base[c]}#{i + 1}"
        taken.add(names[c])
    return names


def summarise(cfgs: list[str], cost: dict[str, dict], acc: dict[str, list[dict]],
              imgsz: int | None = None, names: dict[str, str] | None = None,
              diffs: dict[str, dict] | None = None, trained: bool = False) -> list[dict]:
    """One row per config: cost, accuracy mean/std over seeds and, with `diffs` (config ->
    :func:`utils.stats.compare` result against the first config), the difference from the
    baseline with its 95% interval and verdict (`trained`: the rows are training runs, so a
    verdict without a seed term says it is about one seed's weights); with `imgsz`, a "timed at" column when a
    fixed-shape export was timed at another size or batch. `names`: each config's row name
    (default :func:`row_names`)."""
    names = names or row_names(cfgs)
    diffs = diffs or {}
    rows = []
    base = cfgs[0]
    base_params = cost[base]["params"]

    def stats(cfg: str, key: str) -> tuple[float, float]:
        vals = [r[key] for r in acc.get(cfg, [])]
        if not vals:
            return float("nan"), float("nan")
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    for cfg in cfgs:
        c = cost[cfg]
        row = {"config": names[cfg], "params": c["params"],
               "Δparams": f"{(c['params'] - base_params) / base_params * 100:+.2f}%",
               "GFLOPs": c["gflops"], "CPU ms": c["cpu_ms"]}
        if any(v.get("gpu_ms") is not None for v in cost.values()):
            row["GPU ms"] = c.get("gpu_ms")
        if imgsz and any(v.get("timed_at", f"{imgsz}x{imgsz}") != f"{imgsz}x{imgsz}" for v in cost.values()):
            row["timed at"] = c.get("timed_at", f"{imgsz}x{imgsz}")  # fixed-shape exports take their own size
        row["peak MB"] = c["peak_mem_mb"]
        if acc:
            m50, s50 = stats(cfg, "map50")
            m, s = stats(cfg, "map")
            n = len(acc.get(cfg, []))
            row.update({"seeds": n, "mAP50": _pm(m50, s50, n), "mAP50-95": _pm(m, s, n)})
            gates = [r["gate"] for r in acc.get(cfg, []) if r.get("gate") is not None]
            row["gate"] = f"{statistics.fmean(gates):.3f}" if gates else "-"
            row.update(_difference_cells(cfg == base, diffs.get(cfg), trained))
        rows.append(row)
    return rows


def _difference_cells(is_base: bool, diff: dict | None, trained: bool = False) -> dict[str, str]:
    """The Δ and verdict columns of one row (see utils.stats.Difference); a trained row whose
    interval has no training-seed term (one seed beside one) says its verdict is about those weights."""
    keys = ("Δ mAP50 95% CI", "Δ mAP50-95 95% CI", "verdict", "verdict mAP50")
    if is_base:
        return dict(zip(keys, ("baseline", "baseline", "-", "-")))
    if diff is None:
        return dict.fromkeys(keys, "-")
    d50, d = diff["mAP50"], diff["mAP50-95"]
    tag = " [1 seed each: these weights, not the config]" if trained and not d.seed_df else ""
    return {keys[0]: f"{d50.delta:+.3f} {d50.interval()}", keys[1]: f"{d.delta:+.3f} {d.interval()}",
            keys[2]: d.describe_rounded() + tag, keys[3]: d50.describe_rounded() + tag}


def _pm(mean: float, std: float, n: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def plot(rows: list[dict], cost: dict[str, dict], acc: dict[str, list[dict]], cfgs: list[str], out: Path,
         names: dict[str, str] | None = None) -> list[Path]:
    """mAP against latency and against parameters; every run's training curve on one figure.
    `names`: each config's label (default :func:`row_names`)."""
    names = names or row_names(cfgs)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.plots import label_points, pad_flat_axis

    files = []
    if acc:
        for xkey, fname, xlabel in (("cpu_ms", "map_vs_latency.png", "CPU latency, batch 1 (ms)"),
                                    ("params", "map_vs_params.png", "parameters (M)")):
            fig, ax = plt.subplots(figsize=(7, 5), tight_layout=True)
            pts = []
            for cfg in cfgs:
                vals = [r["map"] for r in acc.get(cfg, [])]
                if not vals:
                    continue
                x = cost[cfg][xkey] / (1e6 if xkey == "params" else 1)
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                ax.errorbar(x, statistics.fmean(vals), yerr=sd, fmt="o", capsize=3)
                pts.append((x, statistics.fmean(vals), names[cfg]))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("mAP50-95 (mean ± std over seeds)")
            ax.ticklabel_format(useOffset=False)  # true values on the axes, never "1e-6 + 1.776e-1"
            pad_flat_axis(ax)
            ax.grid(alpha=0.3)
            if pts:
                label_points(ax, *zip(*pts))
            fig.savefig(out / fname, dpi=150)
            plt.close(fig)
            files.append(out / fname)

        files += _plot_training_curves(acc, cfgs, out, names)
    return files


def _plot_training_curves(acc: dict[str, list[dict]], cfgs: list[str], out: Path, names: dict[str, str]) -> list[Path]:
    """training_curves.png: every run's val mAP50-95 and train box loss per epoch; [] when no run
    has a results.csv (model files compared without training)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from utils.plots import epoch_axis

    if not any(Path(r.get("results_csv", "")).is_file() for runs in acc.values() for r in runs):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), tight_layout=True)
    for k, cfg in enumerate(cfgs):
        for r in acc.get(cfg, []):
            csv = Path(r.get("results_csv", ""))
            if not csv.is_file():
                continue
            df = pd.read_csv(csv)
            df.columns = [c.strip() for c in df.columns]
            ycol = next((c for c in df.columns if "mAP_0.5:0.95" in c or "mAP50-95" in c), None)
            if ycol is not None:  # epochs not validated (--noval) are logged as 0: not plotted
                df[ycol] = df[ycol].where(df[ycol] > 0)
            lcol = next((c for c in df.columns if c.startswith("train/box")), None)
            style = dict(color=f"C{k % 10}", alpha=0.8, label=names[cfg] if r is acc[cfg][0] else None,
                         marker="o", markersize=3)  # a 1-epoch run is a single point: visible only as a marker
            if ycol:
                axes[0].plot(df["epoch"], df[ycol], **style)
            if lcol:
                axes[1].plot(df["epoch"], df[lcol], **style)
    axes[0].set_title("val mAP50-95")
    axes[1].set_title("train box loss")
    last_epoch = max((line.get_xdata().max() for ax in axes for line in ax.get_lines() if len(line.get_xdata())),
                     default=0)
    for ax in axes:
        epoch_axis(ax, last_epoch)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(out / "training_curves.png", dpi=150)
    plt.close(fig)
    return [out / "training_curves.png"]


def plot_differences(diffs: dict[str, dict], cfgs: list[str], names: dict[str, str], out: Path) -> list[Path]:
    """delta_ci.png: each config's Δ mAP50 and Δ mAP50-95 against the baseline with its 95% interval
    (a dashed line at 0: an interval that crosses it is no detectable difference). [] without diffs."""
    rows = [c for c in cfgs if c in diffs]
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 2.4 + 0.45 * len(rows)), tight_layout=True, sharey=True)
    colours = {"better": "C2", "worse": "C3", "no detectable difference": "C0"}
    for ax, metric in zip(axes, ("mAP50", "mAP50-95")):
        for y, c in enumerate(rows):
            d = diffs[c][metric]
            ax.errorbar(d.delta, y, xerr=[[d.delta - d.low], [d.high - d.delta]], fmt="o", capsize=4,
                        color=colours.get(d.verdict, "0.5"))  # grey: not measurable
        ax.axvline(0, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel(f"Δ {metric} vs {names[cfgs[0]]} (95% CI)")
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [names[c] for c in rows])
    axes[0].invert_yaxis()
    fig.savefig(out / "delta_ci.png", dpi=150)
    plt.close(fig)
    return [out / "delta_ci.png"]


def run(cfg: list[str], data: str | None = None, weights: str | None = None, imgsz: int = 640, epochs: int = 0,
        seeds: int = 1, batch_size: int = 16, hyp: str | None = None, threads: int = 2, runs: int = 20,
        device: str = "cpu", workers: int = 2, nc: int | None = None, project: str = str(ROOT / "runs/compare"),
        name: str = "exp", no_identity_start: bool = False, noval: bool = False, control: bool = False,
        bootstrap: int = 1000, storage: str | None = None, half: bool = False, report: bool = False) -> dict:
    """Measure every config (see the module docstring); returns the rows and output paths. `storage`:
    an Optuna RDB URL through which several processes share the training runs (utils/grid.py).
    `report`: train nothing; the table holds the runs finished so far (the note lists the others)."""
    cfgs = expand_cfgs(cfg)
    evaluate_files = _check_request(cfgs, data, weights, epochs, control, storage, bootstrap, report)
    out = Path(project) / name
    out.mkdir(parents=True, exist_ok=True)
    if control:
        from models.attention.control import control_configs

        cfgs = control_configs(cfgs, out / "controls")
    nc_from = nc_source(nc, data)
    if data:
        nc = _check_data(data, nc, leak_check=epochs > 0 or evaluate_files)
    log = out / "runs.jsonl"
    done = load_done(log)
    opt = argparse.Namespace(data=data, weights=weights, imgsz=imgsz, epochs=epochs, batch_size=batch_size,
                             hyp=hyp, workers=workers, device=device, no_identity_start=no_identity_start,
                             noval=noval, name=name)
    cost_settings, train_settings, eval_settings = _run_settings(opt, threads, runs, nc, half)

    names = row_names(cfgs)
    cost: dict[str, dict] = {}
    acc: dict[str, list[dict]] = {}
    cost_progress = Progress(len(cfgs))
    train_progress = Progress(len(cfgs) * seeds if epochs > 0 else len(cfgs) if evaluate_files else 0)
    jobs: list[Job] = []
    for c in cfgs:
        cost[c] = _cost(c, names[c], cost_settings, done, log, cost_progress, nc_from)
        jobs += [Job(run_key("train", c, train_settings, seed), label=f"{names[c]} seed {seed}",
                     record={"kind": "train", "cfg": c, "seed": seed, "settings": train_settings})
                 for seed in range(seeds if epochs > 0 else 0)]
        if evaluate_files:
            step = train_progress.next()
            LOGGER.info(f"{step} {names[c]}: evaluating on the val split of {Path(data).name} ...")
            t0 = time.perf_counter()
            res = _evaluate(c, names[c], opt, eval_settings, done, log, out / "eval" / names[c].replace("/", "_"))
            train_progress.done(time.perf_counter() - t0)
            acc[c] = [{**res, "gate": mean_gate(c) if format_of(c) == ".pt" else None}]
    missing: list[Job] = []
    if jobs:
        acc, missing = _grid_results(jobs, opt, names, out, eval_settings, done, log, train_progress, storage, report)

    diffs = differences(cfgs, acc, bootstrap) if acc else {}
    rows = summarise(cfgs, cost, acc, imgsz, names, diffs, trained=epochs > 0)
    note = cost_note(rows, imgsz, runs, threads, {names[c]: cost[c].get("load_avg") for c in cfgs})
    if half:
        used = sorted({str(cost[c].get("precision", "FP32")) for c in cfgs})
        note += f" --half: CPU latency at {', '.join(used)}."
    if acc:
        note += accuracy_note(acc, data, weights, epochs, batch_size, seeds, bootstrap, control, diffs)
    note += _preprocessing_note(cfgs, cost, names) if evaluate_files else ""
    note += _control_mismatch_note(cfgs, cost, names) if control else ""
    note += _missing_note(missing, report)
    write_results(rows, out / "results", note=note)
    plots = plot(rows, cost, acc, cfgs, out, names) + plot_differences(diffs, cfgs, names, out)
    LOGGER.info("\n" + table(rows))
    LOGGER.info(f"Results in {out}: results.csv, results.md" + "".join(f", {p.name}" for p in plots))
    return {"rows": rows, "dir": out, "markdown": markdown_table(rows), "plots": plots, "differences": diffs,
            "acc": acc, "cfgs": cfgs}


def _check_data(data: str, nc: int | None, leak_check: bool) -> int:
    """Check the dataset YAML `data` (no download) and return the class count to measure costs with:
    `nc` when given, else the dataset's (the model that is trained). With `leak_check`, warn when its
    val images are also train images (utils/data/overlap.py)."""
    from utils.data.dataset_config import check_dataset
    from utils.data.overlap import warn_if_val_in_train

    data_dict = check_dataset(data, autodownload=False)
    if leak_check:
        warn_if_val_in_train(data_dict)
    return data_dict["nc"] if nc is None else nc


def _run_settings(opt: argparse.Namespace, threads: int, runs: int, nc: int | None,
                  half: bool) -> tuple[dict, dict, dict]:
    """The settings that key cost, training and evaluation runs in runs.jsonl (a finished run with
    the same key is not measured again). Options added later enter a key only when set, so that
    runs measured before them keep their keys."""
    cost_settings = {"imgsz": opt.imgsz, "threads": threads, "runs": runs, "nc": nc}
    if half:
        cost_settings["half"] = True
    train_settings = {k: getattr(opt, k) for k in TRAIN_KEYS}
    if opt.no_identity_start:
        train_settings["no_identity_start"] = True
    if opt.noval:
        train_settings["noval"] = True
    return cost_settings, train_settings, {k: getattr(opt, k) for k in EVAL_KEYS}


def _missing_note(missing: list[Job], report: bool) -> str:
    """The table note's list of training runs without a result ('' when none)."""
    if not missing:
        return ""
    return ((" Not trained yet (--report: the table holds the runs finished so far): " if report else
             " Missing training runs (failed; see the log of the process that ran them): ")
            + ", ".join(j.label for j in missing) + ".")


def _grid_results(jobs: list[Job], opt: argparse.Namespace, names: dict[str, str], out: Path, eval_settings: dict,
                  done: dict, log: Path, progress: Progress, storage: str | None,
                  report: bool) -> tuple[dict[str, list[dict]], list[Job]]:
    """Train (or, with `report`, only collect) the grid's runs through the local or shared ledger; each
    result joined with the evaluation of its last.pt. Returns (results per config in seed order, the
    jobs without a result)."""
    ledger = StorageLedger(storage, f"compare/{opt.name}", jobs) if storage else LocalLedger(log, done, append_done)

    def train_and_evaluate(j: Job) -> dict:
        res = train_once(j.record["cfg"], j.record["seed"], opt, out / "train", label=names[j.record["cfg"]])
        return {**res, **_final_weights_result(res, j.label, opt, eval_settings, done, log, embed=bool(storage))}

    if report:  # what is finished, nothing trained
        trained = {j.key: r for j in jobs if (r := ledger.get(j.key)) is not None}
        missing = [j for j in jobs if j.key not in trained]
    else:
        trained, missing = work_through(ledger, jobs, train_and_evaluate, progress)
    acc: dict[str, list[dict]] = {}
    for j in jobs:  # in config and seed order, whichever process trained them
        if j.key in trained:
            res = trained[j.key]
            if _stats_of(res) is None and _last_pt(res).is_file():  # trained before runs were evaluated with
                res = {**res, **_final_weights_result(res, j.label, opt, eval_settings, done, log)}  # their training
            acc.setdefault(j.record["cfg"], []).append(res)
    return acc, missing


def format_of(cfg: str) -> str:
    """The backend key of a model file (``.pt``, ``.onnx``, ...; models.backends.format_key)."""
    from models.backends import format_key

    return format_key(cfg)


MIN_BOOTSTRAP = 200  # fewer resamples give 95% interval edges that move from one seed to the next


def _check_request(cfgs: list[str], data: str | None, weights: str | None, epochs: int, control: bool,
                   storage: str | None = None, bootstrap: int = 1000, report: bool = False) -> bool:
    """Refuse what cannot be measured, before any work; True when model files are to be evaluated
    (model files only, --data, no --epochs)."""
    files = [c for c in cfgs if is_model_file(c)]
    _refuse_repeats(cfgs)
    missing = [c for c in files if not Path(c).exists()]
    if missing:
        raise FileNotFoundError(f"model file {missing[0]} not found (--cfg); give the path of a trained checkpoint "
                                "or exported model")
    if bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap {bootstrap}: at least {MIN_BOOTSTRAP} resamples are needed for a stable 95% "
                         "interval (default 1000)")
    if storage and epochs <= 0:
        raise ValueError("--storage shares training runs between processes: it needs --epochs > 0")
    if storage:  # a missing driver or an unreachable server is named before any work
        check_storage(storage, "--storage")
    if epochs > 0:  # before any measurement: a model file's cost would be measured, then its training fail
        from models.yolo import refuse_model_file

        for c in cfgs:
            refuse_model_file(c, hint="compare.py evaluates model files on --data's val split without --epochs.")
        if not data:
            raise ValueError("training runs (--epochs > 0) need --data")
        if weights:  # weights of another scale transfer almost nothing: no fair comparison
            require_same_scale(weights, cfgs)
    if control and not epochs > 0:
        raise ValueError("--control adds configs to train: it needs --epochs and --data")
    if report and not epochs > 0:  # a cost-only --report would measure and overwrite, not report
        raise ValueError("--report prints the training runs finished so far: give the same --cfg, --data, --epochs "
                         "and --seeds as the command that trains them")
    if files and data and not epochs > 0 and len(files) != len(cfgs):
        raise ValueError(f"with --data and no --epochs, model files are evaluated on the val split, but "
                         f"{[c for c in cfgs if c not in files][0]} is a config, which is not trained: give model "
                         "files only, or configs with --epochs")
    return bool(files) and bool(data) and not epochs > 0


def _preprocessing_note(cfgs: list[str], cost: dict[str, dict], names: dict[str, str]) -> str:
    """Warn (and return a note) when model files of fixed and dynamic input shape are compared: val.py
    feeds a fixed-shape export square letterboxed images, a dynamic model rectangular batches, so
    part of their difference is the preprocessing, not the model. '' when all are alike."""
    fixed = [names[c] for c in cfgs if cost[c].get("dynamic") is False]
    if not fixed or len(fixed) == len(cfgs):
        return ""
    msg = (f"{', '.join(fixed)} (fixed-shape export) validated on square letterboxed images, the others on "
           "rectangular batches: part of each Δ between them is this preprocessing, not the model; export every "
           "model the same way (or with --dynamic) to compare the models alone")
    LOGGER.warning(f"WARNING: {msg}")
    return f" Note: {msg}."


def _control_mismatch_note(cfgs: list[str], cost: dict[str, dict], names: dict[str, str]) -> str:
    """A note naming each control whose added parameters are not within 2x of its attention config's
    (a block of a few parameters, e.g. SimAM, has no plain counterpart that small: the smallest
    bottleneck, hidden width 1, has 3C + 1). '' when every control matches."""
    base = cost[cfgs[0]]["params"]
    off = []
    for att, ctrl in zip(cfgs, cfgs[1:]):
        if not Path(ctrl).stem.endswith("_control") or Path(ctrl).stem != f"{Path(att).stem}_control":
            continue
        a, c = cost[att]["params"] - base, cost[ctrl]["params"] - base
        if not (a > 0 and 0.5 <= c / a <= 2):
            off.append(f"{names[ctrl]} adds {c:,} parameters against {a:,}")
    if not off:
        return ""
    msg = (f"capacity not matched: {'; '.join(off)} (no plain bottleneck is that small); read such a control as "
           "more capacity than its block, not the same")
    LOGGER.warning(f"WARNING: {msg}")
    return f" Note: {msg}."


def _refuse_repeats(cfgs: list[str]) -> None:
    """ValueError when --cfg names one config or model file twice (its rows would collapse into one)."""
    seen: dict[str, str] = {}
    for c in cfgs:
        key = str(Path(c).resolve()) if Path(c).exists() else c
        if key in seen:
            same = c if seen[key] == c else f"{seen[key]} and {c}"
            raise ValueError(f"--cfg lists {same} twice: each config is one row; to repeat a training run, use "
                             "--seeds")
        seen[key] = c


def _cost(c: str, name: str, settings: dict, done: dict, log: Path, progress: Progress, nc_from: str) -> dict:
    """The cost measurement of one config, from runs.jsonl when already made."""
    key = run_key("cost", c, settings)
    step = progress.next()
    if key in done:
        LOGGER.info(f"{step} {name}: cost already measured, skipped")
        res = done[key]["result"]
    else:
        LOGGER.info(f"{step} {name}: measuring cost at {settings['imgsz']} ...")
        t0 = time.perf_counter()
        res = measure_cost(c, settings["imgsz"], settings["threads"], settings["runs"], settings["nc"],
                           nc_from=nc_from, half=bool(settings.get("half")))
        progress.done(time.perf_counter() - t0)
        append_done(log, {"key": key, "kind": "cost", "cfg": c, "settings": settings, "result": res})
    if res["cpu_ms"] > SLOW_FORWARD_MS:
        LOGGER.warning(f"WARNING: {name}: {res['cpu_ms'] / 1e3:.1f} s per forward pass at {settings['imgsz']} "
                       f"on {settings['threads']} CPU thread(s): slow (over {SLOW_FORWARD_MS / 1e3:g} s); its "
                       "training and inference will be slow too")
    return res


def _evaluate(weights: str | Path, label: str, opt: argparse.Namespace, settings: dict, done: dict, log: Path,
              save_dir: Path) -> dict:
    """:func:`evaluate` of one model file, from runs.jsonl when already made (and its statistics file is there)."""
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"{label}: {path} is missing (its run folder was moved or deleted?); remove the run's "
                                "line from runs.jsonl to train it again")
    key = run_key("eval", str(path), {**settings, "path": str(path.resolve())})
    if key in done and Path(done[key]["result"].get("stats", "")).is_file():
        LOGGER.info(f"{label}: {path.name} already evaluated, skipped")
        return done[key]["result"]
    LOGGER.info(f"{label}: evaluating {path} on the val split ...")
    res = evaluate(path, opt, save_dir)
    append_done(log, {"key": key, "kind": "eval", "cfg": str(path), "settings": settings, "result": res})
    return res


def _final_weights_result(res: dict, label: str, opt: argparse.Namespace, settings: dict, done: dict, log: Path,
                          embed: bool = False) -> dict:
    """The evaluation of a training run's last.pt (:func:`_evaluate`); with `embed`, its match statistics
    travel inside the result (base64 of the .npz) so that workers on other machines can build the table."""
    last = _last_pt(res)
    ev = _evaluate(last, label, opt, settings, done, log, last.parent.parent / "val_last")
    if embed:
        import base64

        ev = {**ev, "stats_npz": base64.b64encode(Path(ev["stats"]).read_bytes()).decode()}
    return ev


def _last_pt(res: dict) -> Path:
    """A training result's final weights."""
    return Path(res.get("results_csv") or "").parent / "weights" / "last.pt"


def _stats_of(res: dict):
    """A run's match statistics (utils.stats.MatchStats): its local file, else the copy embedded by the
    worker that trained it; None when it has neither."""
    from utils.stats import MatchStats

    if res.get("stats") and Path(res["stats"]).is_file():
        return MatchStats.load(res["stats"])
    if res.get("stats_npz"):
        import base64
        import io

        return MatchStats.load(io.BytesIO(base64.b64decode(res["stats_npz"])))
    return None


def differences(cfgs: list[str], acc: dict[str, list[dict]], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Every config against the first (the baseline): utils.stats.compare_many on the runs' match
    statistics; configs without statistics are left out. {} when the baseline has none."""
    from utils.stats import compare_many

    def load(c: str) -> list:
        return [st for r in acc.get(c, []) if (st := _stats_of(r)) is not None]

    base = load(cfgs[0])
    others = {c: runs for c in cfgs[1:] if (runs := load(c))}
    if not base or not others:
        return {}
    return compare_many(base, others, n_boot=n_boot, seed=seed)


def accuracy_note(acc: dict[str, list[dict]], data: str | None, weights: str | None, epochs: int, batch_size: int,
                  seeds: int, n_boot: int, control: bool, diffs: dict | None = None) -> str:
    """The results.md note on what the accuracy columns are."""
    n_img = next((r.get("images") for runs in acc.values() for r in runs if r.get("images")), None)
    split = f"the val split of {Path(data).name}" + (f" ({n_img} images)" if n_img else "")
    if epochs > 0:
        what = (f" Accuracy: {epochs} epochs on {Path(data).name} from {Path(weights).name if weights else 'scratch'}, "
                f"batch {batch_size}, {seeds} seed(s); each run's final weights (last.pt, EMA) evaluated on {split} "
                "with val.py's settings (never best.pt, picked on the same images); mAP mean ± std over seeds.")
    else:
        what = f" Accuracy: each model file evaluated on {split} with val.py's settings."
    what += (f" Δ = config − baseline (first row), with a 95% interval from a paired bootstrap over the val images "
             f"({n_boot} resamples; utils/stats.py){seed_term_note(diffs or {}, epochs > 0)}. "
             "verdict (mAP50-95) and verdict mAP50: better / worse when the interval excludes 0, "
             "else no detectable difference (± the smallest difference this comparison detects with 80% "
             "probability).")
    if any(r.get("gate") is not None for runs in acc.values() for r in runs):
        what += (" gate = mean |gate| of the attention blocks after training (0: still the identity they start as "
                 "when inserted into a pretrained model, 1: fully in; with zero start, train.py's default, a block "
                 "at gate 1 is what its zero-started layers have learnt, the identity until they do; for DA, CC and "
                 "NonLocal the gate times their own residual scale).")
    if control:
        what += (" control rows (…_control): every attention block replaced by a plain residual 1x1-conv bottleneck "
                 "of about the same parameters, faded in the same way (models/attention/control.py).")
    return what


def seed_term_note(diffs: dict[str, dict], trained: bool) -> str:
    """What the intervals hold besides the choice of val images: the training-seed term of each row
    and the baseline's seeds pooled (utils/stats.py), or a line saying that the seed is not in them."""
    ds = {name: v["mAP50-95"] for name, v in diffs.items()}
    if not ds:
        return ""
    pooled = {name: d for name, d in ds.items() if d.seed_df}
    if not pooled:
        if trained:
            return (", and nothing for the training seed: with one seed per row the interval covers the val images "
                    "only, so a verdict is about these trained weights, not the configs (train --seeds 2 or more)")
        return ", the val images only: a verdict is about these model files"
    sds, dfs = [d.seed_sd for d in pooled.values()], [d.seed_df for d in pooled.values()]
    span = (lambda v, f: f"{min(v):{f}}" if min(v) == max(v) else f"{min(v):{f}}-{max(v):{f}}")
    note = (f", plus the training seed's spread: the sd of the row's and the baseline's seeds pooled (mAP50-95 sd "
            f"{span(sds, '.3f')}, {span(dfs, 'd')} df), as a Student-t term, so that a row with fewer seeds is not "
            "judged on one seed's luck; conservative, since the image part counts some of that spread too")
    if zero := [name for name, d in pooled.items() if d.seed_sd == 0]:
        note += (f"; sd 0 beside {', '.join(Path(z).stem for z in zero)}: the runs of each row are identical, "
                 "as if the seed changed nothing (or one run was listed twice)")
    if unseeded := [name for name in ds if name not in pooled]:
        note += f"; no seed term for {', '.join(Path(u).stem for u in unseeded)} (one seed each)"
    return note


BUSY_LOAD = 1.0  # 1-min load average before a cost measurement above which its latency is called inflated


def cost_note(rows: list[dict], imgsz: int, runs: int, threads: int, loads: dict[str, float] | None = None) -> str:
    """The results.md note on how cost was measured. Rows with a "timed at" entry (fixed-shape
    exports) are said to be timed at that size, and a fixed batch of N to be timed for the whole batch.
    `loads` ({row name: 1-min load average when its cost was measured}): rows measured while other
    work kept the CPU busy are named, since their latency is inflated."""
    timed = [r["timed at"] for r in rows if "timed at" in r]
    note = (f"Measured by `compare.py` at {imgsz}px: CPU latency = median of {runs} forward passes (configs fused), "
            f"batch 1, {threads} threads; peak MB = resident-memory growth during inference.")
    if any(t != f"{imgsz}x{imgsz}" for t in timed):
        note += (" Rows with a 'timed at' entry other than "
                 f"{imgsz}x{imgsz} are fixed-shape exports, timed at that size instead")
        note += (", and a 'batch N (fixed)' row's CPU ms is one forward pass of the whole batch of N images, "
                 "not one image." if any("batch" in t for t in timed) else ".")
    busy = {n: v for n, v in (loads or {}).items() if v is not None and v > BUSY_LOAD}
    if busy:
        note += (f" CPU ms of {', '.join(busy)} measured while other work kept the CPU busy (1-min load average up "
                 f"to {max(busy.values()):.1f} on {os.cpu_count()} logical CPUs): those latencies are inflated and "
                 "not comparable; measure cost again on idle cores (delete their cost lines from runs.jsonl).")
    return note


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Compare model configs: cost and (optionally) accuracy.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--cfg", nargs="+", required=True, help="configs (names, paths or globs); the first is the baseline")
    p.add_argument("--data", default=None, help="dataset YAML for the training runs")
    p.add_argument("--weights", default=None, help="pretrained weights to fine-tune from (default: scratch)")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=640)
    p.add_argument("--epochs", type=int, default=0, help="training epochs per run (0: cost only)")
    p.add_argument("--seeds", type=int, default=1, help="training runs per config, seeds 0..K-1")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hyp", default=None, help="hyperparameter YAML (default: train.py's)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for latency")
    p.add_argument("--runs", type=int, default=20, help="timed forward passes per config")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--nc", type=positive_int, default=None,
                   help="number of classes for the cost measurement (default: the dataset's, else the config's)")
    p.add_argument("--project", default=str(ROOT / "runs/compare"))
    p.add_argument("--name", default="exp")
    p.add_argument("--no-identity-start", action="store_true",
                   help="blocks inserted into pretrained --weights start as in their papers (train.py's flag)")
    p.add_argument("--noval", action="store_true", help="training runs validate after their final epoch only")
    p.add_argument("--control", action="store_true",
                   help="add a capacity control for each attention config: its blocks replaced by plain residual "
                        "1x1-conv bottlenecks of about the same parameters (needs --epochs)")
    p.add_argument("--half", action="store_true", help="CPU latency at bf16 where the CPU has it natively "
                   "(AVX512_BF16 or AMX); elsewhere FP32, said in one line")
    p.add_argument("--report", action="store_true",
                   help="train nothing: the table of the training runs finished so far (with --storage, by any worker)")
    p.add_argument("--bootstrap", type=positive_int, default=1000,
                   help="bootstrap resamples of the val images for the confidence intervals")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL (postgresql://..., mysql+pymysql://..., sqlite:///...) shared by several "
                        "compare.py processes with the same arguments: each training run is trained by one of them")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    try:
        run(**vars(opt))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
