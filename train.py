"""Train a YOLOv5 detector (any model YAML, attention configs included) on a YOLO dataset.

    python train.py --data coco128.yaml --weights yolov5s.pt --img 640          # fine-tune
    python train.py --data coco128.yaml --weights '' --cfg yolov5s.yaml         # from scratch
    python train.py --weights yolov5n.pt --cfg yolov5n_CBAM.yaml --data ...     # pretrained into an attention config
    python train.py --resume                                                    # the latest run in --project
    torchrun --nproc_per_node 2 train.py --data ... --batch-size 32             # DistributedDataParallel

From Python: ``train.run(data=..., weights=..., epochs=...)`` returns a dict with the final
metrics and the run folder. Outputs go to ``runs/train/exp*``: ``weights/last.pt`` and
``best.pt`` (plain data, ``torch.load(weights_only=True)`` opens them), ``hyp.yaml``,
``opt.yaml``, ``results.csv`` / ``results.png``, ``labels.jpg``, ``train_batch*.jpg`` and
the validation plots. Attention blocks new to the --weights get a ``gate/<block>`` column in
results.csv; those given an identity start are faded in by the hyp's ``gate_schedule``
(models/gates.py).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import val as validate  # noqa: E402
from models.checkpoint import (  # noqa: E402
    CheckpointError,
    attempt_download,
    check_resumable,
    load_checkpoint,
    model_from_record,
    model_record,
    save_checkpoint,
    weights_misfit,
)
from models.gates import (  # noqa: E402
    GATE_HYP_DEFAULTS,
    GateSchedule,
    attention_gates,
    block_gates,
    faded_gates,
    gate_hyp,
    make_gate_schedule,
)
from models.transfer import (  # noqa: E402
    TransferResult,
    anchor_count,
    calibrate_new_blocks,
    load_pretrained,
    zero_start_new_blocks,
)
from models.yolo import DetectionModel, ModelConfigError, resolve_cfg  # noqa: E402
from utils.autoanchor import anchors_unset, check_anchors  # noqa: E402
from utils.cli import check_img_size, holds_files, holds_training_results, image_size, increment_path, print_args, run_folder  # noqa: E402
from utils.data.dataset import create_dataloader, load_hyp  # noqa: E402
from utils.data.dataset_config import DatasetNotFoundError, check_dataset  # noqa: E402
from utils.data.overlap import warn_if_val_in_train  # noqa: E402
from utils.device import (  # noqa: E402
    amp_enabled,
    autocast,
    grad_scaler,
    init_distributed,
    main_process_first,
    memory_gb,
    select_device,
)
from utils.ema import ModelEMA  # noqa: E402
from utils.hyp import check_hyp_ranges, hyp_anchor_count  # noqa: E402
from utils.logging import LOGGER, hide_passwords, set_logging  # noqa: E402
from utils.loss import ComputeLoss, scale_hyp_gains  # noqa: E402
from utils.metrics import fitness  # noqa: E402
from utils.optim import NBS, EarlyStopping, accumulate_steps, build_optimizer, lr_lambda, warmup  # noqa: E402
from utils.tensorboard_log import TensorBoardLogger  # noqa: E402
from utils.torch_utils import de_parallel, init_seeds, multi_scale_resize  # noqa: E402

LOCAL_RANK = int(os.getenv("LOCAL_RANK", -1))
RANK = int(os.getenv("RANK", -1))
WORLD_SIZE = int(os.getenv("WORLD_SIZE", 1))

# Test hook: when set, every rank writes the SHA-256 of its final weights to <dir>/rank<RANK>.sha256.
DIGEST_ENV = "YOLO_TRAIN_DIGEST_DIR"

CSV_KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision",
            "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss",
            "val/cls_loss", "x/lr0", "x/lr1", "x/lr2"]
GRAD_CLIP = 10.0


class TrainingError(RuntimeError):
    """Training cannot go on (diverged loss, bad settings); the message says why."""


# ---------------------------------------------------------------------------------------------
# helpers


def _plain(x):
    """Paths -> str, tuples -> lists, recursively: what opt.yaml and the checkpoint store."""
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, str):  # a storage URL's password is never written to opt.yaml or a checkpoint
        return hide_passwords(x)
    return x


def state_digest(model: nn.Module) -> str:
    """SHA-256 over a model's parameters (names and bytes), to compare weights across processes.

    Batch-norm running statistics are left out: under DDP each process updates them from its
    own last batch (rank 0's are broadcast at the start of every forward pass).
    """
    h = hashlib.sha256()
    for k, v in de_parallel(model).named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def latest_run(search_dir: str | Path = ROOT / "runs") -> Path | None:
    """The most recently written ``last*.pt`` under `search_dir`."""
    files = [p for p in Path(search_dir).rglob("last*.pt") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def strip_optimizer(f: str | Path) -> None:
    """Make a finished checkpoint small: keep the EMA weights (fp16) as `model`, drop the training state."""
    ckpt = load_checkpoint(f)
    rec = ckpt.get("ema") or ckpt["model"]
    rec = dict(rec)
    rec["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in rec["state_dict"].items()}
    for k in ("optimizer", "ema", "updates", "format", "date"):
        ckpt.pop(k, None)
    ckpt.update(model=rec, epoch=-1)
    save_checkpoint(ckpt, f)
    LOGGER.info(f"Optimizer stripped from {f}, {Path(f).stat().st_size / 1e6:.1f}MB")


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in r.items() if isinstance(k, str)} for r in csv.DictReader(f)]


def _write_csv(path: Path, rows: list[dict], keys: list[str] = CSV_KEYS) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _freeze_layers(freeze: list[int] | int) -> list[int]:
    """``--freeze 10`` means layers 0-9 (the backbone); ``--freeze 0 1 2`` those layers; ``--freeze 0`` none."""
    freeze = [freeze] if isinstance(freeze, int) else list(freeze or [0])
    return sorted(set(freeze if len(freeze) > 1 else range(freeze[0])))


def _map_frozen_layers(layers: list[int], mapping: dict[int, int], weights: str, cfg: str,
                       source_layers: int) -> list[int]:
    """The layers of the model being trained that hold the pretrained `layers` (numbered as in `weights`,
    which has `source_layers` layers).

    When blocks were inserted, the pretrained layers moved (yolov5n.pt's SPPF, layer 9, is layer
    10 of yolov5n_CBAM.yaml), so ``--freeze 10`` still means the weights' backbone. Says so when the
    numbering differs; warns for pretrained layers with no counterpart (replaced), which stay
    trainable, and for indices past the weights' last layer.
    """
    past = [x for x in layers if x >= source_layers]
    layers = [x for x in layers if x < source_layers]
    out = sorted(mapping[x] for x in layers if x in mapping)
    lost = [x for x in layers if x not in mapping]
    if out != [x for x in layers if x in mapping]:
        LOGGER.info(f"--freeze counts the layers of {weights}: its layers {_ranges(layers)} are layers "
                    f"{_ranges(out)} of {cfg}")
    if lost:
        LOGGER.warning(f"WARNING --freeze: layer(s) {_ranges(lost)} of {weights} have no counterpart in {cfg} "
                       "(replaced or removed), so nothing is frozen for them")
    if past:
        LOGGER.warning(f"WARNING --freeze: {weights} has layers 0-{source_layers - 1}; "
                       f"{_ranges(past)} ignored")
    return out


def _ranges(xs: list[int]) -> str:
    """``[0, 1, 2, 3, 5]`` -> ``'0-3, 5'``."""
    parts, xs = [], sorted(xs)
    for x in xs:
        if parts and x == parts[-1][1] + 1:
            parts[-1][1] = x
        else:
            parts.append([x, x])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in parts) or "none"


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r} "
                         "(automatic batch size is not supported)")
    if batch_size % WORLD_SIZE:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of the number of processes {WORLD_SIZE}")
    return int(batch_size)


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class _Run:
    """Everything the phases of :func:`train` share. Filled in phase by phase, in this order:
    settings (:func:`_setup`), model (:func:`_setup_model`), optimizer (:func:`_build_optimizer`),
    data (:func:`_build_data`), loop state (:func:`_prepare_loop`); then changed by
    :func:`_train_one_epoch` and :func:`_validate_and_save` every epoch."""

    opt: argparse.Namespace
    device: torch.device
    save_dir: Path
    epochs: int
    batch_size: int
    weights: str
    resume: bool
    plots: bool
    main_proc: bool
    hyp_cfg: dict  # hyperparameters as given (saved with the run)
    hyp_source: str = "the hyperparameters given"  # "hyp file <path>": what messages about a hyp key name
    data_dict: dict = field(default_factory=dict)
    nc: int = 0
    names: list = field(default_factory=list)
    # model
    model: nn.Module | None = None
    ckpt: dict | None = None
    new_blocks: list[str] = field(default_factory=list)  # "model.9." prefixes of blocks new to the weights
    identity_blocks: list[str] = field(default_factory=list)  # those given an identity start
    frozen: list[int] = field(default_factory=list)  # layers frozen (--freeze mapped through the transfer)
    gates: dict = field(default_factory=dict)  # gates driven by the gate schedule (models/gates.py)
    fade_start: dict = field(default_factory=dict)  # {block: gate} of blocks continuing an earlier run's fade
    recompute_anchors: str = ""  # why AutoAnchor computes the anchors whatever their fit ("": the usual check)
    channels_last: bool = False
    amp: bool = False
    gs: int = 32
    imgsz: int = 640
    # optimizer
    hyp: dict = field(default_factory=dict)  # working copy: scaled weight decay, later scaled loss gains
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    lf: Callable[[int], float] | None = None
    start_epoch: int = 0
    best_fitness: float = 0.0
    last_opt_step: int = -1
    # data
    train_loader: object = None
    dataset: object = None
    val_loader: object = None
    nb: int = 0
    # loop
    ema: ModelEMA | None = None
    compute_loss: ComputeLoss | None = None
    gate_schedule: GateSchedule | None = None
    scaler: object = None
    stopper: EarlyStopping | None = None
    nw: int = 100
    maps: np.ndarray | None = None
    results: tuple = (0, 0, 0, 0, 0, 0, 0)
    csv_keys: list[str] = field(default_factory=list)
    final_results: dict = field(default_factory=dict)
    train_total: float = 0.0  # seconds in the training loops (validation excluded)
    t0: float = 0.0
    epoch: int = 0
    tb: TensorBoardLogger | None = None

    @property
    def wdir(self) -> Path:
        return self.save_dir / "weights"

    @property
    def last(self) -> Path:
        return self.wdir / "last.pt"

    @property
    def best(self) -> Path:
        return self.wdir / "best.pt"

    @property
    def per_rank_bs(self) -> int:
        return self.batch_size // WORLD_SIZE

    @property
    def log_blocks(self) -> list[str]:
        """Names of the new attention blocks and of those continuing a fade, whose gates are logged every epoch."""
        new = [b.rstrip(".") for b in self.new_blocks]
        return new + [b for b in self.fade_start if b not in new]


def train(hyp: dict | str | Path, opt: argparse.Namespace, device: torch.device) -> dict:
    """Train with the settings in `opt` (see :func:`parse_opt`); returns the final results and the run folder.

    The phases, in order: :func:`_setup`, :func:`_setup_model`, :func:`_build_optimizer`,
    :func:`_build_data`, :func:`_prepare_loop`, then per epoch :func:`_train_one_epoch` and
    :func:`_validate_and_save`, and :func:`_finish`.
    """
    run = _setup(hyp, opt, device)
    _setup_model(run)
    _zero_start_blocks(run)
    _build_optimizer(run)
    _build_data(run)
    _calibrate_blocks(run)
    _prepare_loop(run)
    for epoch in range(run.start_epoch, run.epochs):
        run.epoch = epoch
        mloss, lr, train_time = _train_one_epoch(run, epoch)
        if _validate_and_save(run, epoch, mloss, lr, train_time):
            break
    return _finish(run)


# hyperparameters a hyp file may leave out (defaults elsewhere) or add (read when present)
OPTIONAL_HYP = {"copy_paste", "mixup", "anchors", "label_smoothing", *GATE_HYP_DEFAULTS}


def _hyp_source(hyp: dict | str | Path | None) -> str:
    """How messages name the hyperparameters: ``hyp file <path>``, or ``the hyperparameters given`` (a dict)."""
    return "the hyperparameters given" if isinstance(hyp, dict) else f"hyp file {hyp or 'hyp.scratch-low.yaml'}"


def _checked_hyp(hyp: dict | str | Path | None) -> dict:
    """The hyperparameters of `hyp` (a YAML file or a dict), the gate keys filled with their defaults.

    Raises ValueError naming the file for missing keys or bad gate values; warns for keys no
    code reads (a misspelt ``gate_schedul`` would otherwise leave the default in force silently).
    """
    source = _hyp_source(hyp)
    cfg = load_hyp(hyp)
    if not isinstance(cfg, dict):
        raise ValueError(f"{source}: expected a mapping of hyperparameter names to values, got {type(cfg).__name__}")
    known = set(load_hyp(None))
    missing = sorted(known - OPTIONAL_HYP - set(cfg))
    if missing:
        raise ValueError(f"{source}: missing hyperparameter(s) {', '.join(missing)} "
                         "(data/hyps/hyp.scratch-low.yaml has them all)")
    for k in sorted(set(cfg) - known - OPTIONAL_HYP):
        near = difflib.get_close_matches(str(k), sorted(known | OPTIONAL_HYP), n=1)
        LOGGER.warning(f"WARNING {source}: unknown hyperparameter {k!r} is ignored"
                       + (f" (did you mean {near[0]!r}?)" if near else ""))
    try:
        cfg.update(gate_hyp(cfg))  # older hyp files lack the gate keys: defaults (models/gates.py)
        check_hyp_ranges(cfg)  # every key with a range (utils/hyp.py)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return cfg


# command-line flags that set a hyperparameter: given, they replace the hyp file's value; left
# out (None), the file's value stands, else the default here
HYP_FLAGS: dict[str, tuple[str, float]] = {"label_smoothing": ("--label-smoothing", 0.0)}


def _apply_hyp_flags(cfg: dict, opt: argparse.Namespace, hyp: dict | str | Path | None) -> dict:
    """`cfg` with the :data:`HYP_FLAGS` given on the command line put in (each checked against
    its range; ValueError naming the flag) and the defaults of keys neither gives."""
    for key, (flag, default) in HYP_FLAGS.items():
        v = getattr(opt, key, None)
        if v is None:
            cfg.setdefault(key, default)
            continue
        try:
            check_hyp_ranges({key: v})
        except ValueError as e:
            raise ValueError(f"{flag} {v}: {e}") from None
        if key in cfg and cfg[key] != v and not isinstance(hyp, dict):
            LOGGER.info(f"{flag} {v} replaces {key}: {cfg[key]} of hyp file {hyp or 'hyp.scratch-low.yaml'}")
        cfg[key] = v
    return cfg


def _setup(hyp: dict | str | Path, opt: argparse.Namespace, device: torch.device) -> _Run:
    """Check the settings, write hyp.yaml / opt.yaml, seed, read the dataset YAML."""
    epochs = int(opt.epochs)
    run = _Run(opt=opt, device=device, save_dir=Path(opt.save_dir), epochs=epochs,
               batch_size=_check_batch_size(opt.batch_size), weights=str(opt.weights or ""),
               resume=bool(opt.resume), plots=not opt.noplots, main_proc=RANK in (-1, 0), hyp_cfg={})
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")

    hyp_cfg = _checked_hyp(hyp)  # as given (hyp.yaml, checkpoint); gains are scaled on a copy later
    hyp_cfg = _apply_hyp_flags(hyp_cfg, opt, hyp)  # --label-smoothing over the file's value, when given
    run.hyp_source = _hyp_source(hyp)
    opt.hyp = run.hyp_cfg = hyp_cfg
    if run.main_proc:
        run.wdir.mkdir(parents=True, exist_ok=True)
        (run.save_dir / "hyp.yaml").write_text(yaml.safe_dump(_plain(hyp_cfg), sort_keys=False))
        (run.save_dir / "opt.yaml").write_text(yaml.safe_dump(_plain(vars(opt)), sort_keys=False))
    LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hyp_cfg.items()))

    init_seeds(int(opt.seed) + 1 + RANK, deterministic=bool(opt.deterministic))
    with main_process_first(LOCAL_RANK):
        run.data_dict = check_dataset(opt.data)
    if RANK in (-1, 0):
        warn_if_val_in_train(run.data_dict)
    run.nc = 1 if opt.single_cls else int(run.data_dict["nc"])
    names = run.data_dict["names"]
    run.names = ["item"] if opt.single_cls and len(names) != 1 else list(names)
    return run


def _setup_model(run: _Run) -> None:
    """Build the model (from scratch, from pretrained weights by transfer, or the run to resume),
    freeze layers, pick the gates the gate schedule drives, check the image size."""
    opt, weights, nc, hyp_cfg = run.opt, run.weights, run.nc, run.hyp_cfg
    n_anchors = hyp_anchor_count(hyp_cfg) or None  # a count per output layer; None: the model's anchors
    transfer = None
    if weights.endswith(".pt"):
        path = attempt_download(weights)
        run.ckpt = ckpt = load_checkpoint(path)
        src = ckpt.get("ema") or ckpt["model"]
        if run.resume:
            model = model_from_record(ckpt["model"], source=str(path), nc=nc)
            LOGGER.info(f"Resuming from {path} at epoch {int(ckpt['epoch']) + 1}/{run.epochs - 1}")
        else:
            # without --cfg the checkpoint's own config, rebuilt as it was trained (lenient)
            model = DetectionModel(opt.cfg or src["yaml"], ch=3, nc=nc, anchors=n_anchors, lenient=not opt.cfg)
            transfer = load_pretrained(src, model, source=Path(weights).name,
                                       identity_start=not opt.no_identity_start)
    elif weights:
        raise CheckpointError(f"{weights}: --weights must be a .pt checkpoint (or '' to train from scratch)")
    else:
        if not opt.cfg:
            raise ValueError("--cfg is required when training from scratch (--weights '')")
        model = DetectionModel(opt.cfg, ch=3, nc=nc, anchors=n_anchors)
    run.recompute_anchors = _plan_anchors(run, model, n_anchors or 0)
    model = model.to(run.device)
    run.amp = amp_enabled(run.device)
    run.channels_last = run.device.type == "cpu"  # oneDNN convolutions (forward and backward) are faster in NHWC
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # the blocks new to the weights; on resume: those that were new when the run started
    ckpt = run.ckpt or {}
    if transfer is not None:
        run.new_blocks = [f"{x}." for x in transfer.new_blocks]
        run.identity_blocks = list(transfer.identity)
        run.fade_start = _unfinished_fades(run, ckpt, transfer, model)
    elif run.resume:
        run.new_blocks = list(ckpt.get("new_blocks") or [])
        run.identity_blocks = list(ckpt.get("identity_blocks") or [])
        run.fade_start = dict(ckpt.get("fade_start") or {})
    run.gates = faded_gates(model, run.identity_blocks + [b for b in run.fade_start if b not in run.identity_blocks])
    run.frozen = _freeze_layers(opt.freeze)
    if transfer is not None and run.frozen:
        run.frozen = _map_frozen_layers(run.frozen, transfer.mapping, Path(weights).name, opt.cfg or "its config",
                                        transfer.source_layers)
    elif run.resume and "frozen_layers" in ckpt:  # as mapped when the run started
        run.frozen = list(ckpt["frozen_layers"])
    _freeze(model, run.frozen, run.new_blocks)
    run.gs = max(int(model.stride.max()), 32)
    run.imgsz = check_img_size(int(opt.imgsz), run.gs, floor=run.gs * 2)
    run.model = model


def _unfinished_fades(run: _Run, ckpt: dict, transfer: TransferResult, model: nn.Module) -> dict[str, float]:
    """``{block: gate}`` of the blocks of `model` that come with their weights from a checkpoint
    whose run ended before their fade did (its ``fading_blocks``, renamed through the transfer's
    layer pairing): their fade goes on from that gate to 1 instead of leaving them part-way. Under
    --no-identity-start or hyp ``gate_schedule: train`` they stay where they are, with a warning."""
    found: dict[str, float] = {}
    for name in ckpt.get("fading_blocks") or []:
        layer, _, rest = name.removeprefix("model.").partition(".")
        target = transfer.mapping.get(int(layer)) if layer.isdigit() else None
        block = f"model.{target}" + (f".{rest}" if rest else "") if target is not None else None
        if block is None or block in transfer.new_blocks:
            continue
        try:
            gate = model.get_submodule(block).gate
        except AttributeError:
            continue
        found[block] = float(gate.detach().clamp(0, 1))
    if not found:
        return {}
    which = f"{', '.join(f'{b} (gate {g:.2f})' for b, g in found.items())} of {Path(run.weights).name}"
    why = ("--no-identity-start" if run.opt.no_identity_start
           else "hyp gate_schedule: train" if run.hyp_cfg["gate_schedule"] == "train" else None)
    if why:
        LOGGER.warning(f"WARNING {which} ended part-way through its fade; with {why} it stays there and is trained "
                       f"by the optimizer (which hardly moves a gate); drop {why.removeprefix('hyp ')} to continue the "
                       "fade to 1")
        return {}
    LOGGER.info(f"{which} ended part-way through its fade: the fade continues from there (hyp gate_schedule)")
    return found


def _plan_anchors(run: _Run, model: nn.Module, n: int) -> str:
    """Why AutoAnchor must compute the anchors of `model` (as built, weights transferred) whatever
    their fit: the `recompute` argument of :func:`utils.autoanchor.check_anchors` ("" for the usual
    check). `n`: the hyp ``anchors`` count (0: the model's own). Logs which anchors the run trains with.

    Refused before any work (ValueError naming the hyp file or config and what to do): anchors
    that only AutoAnchor can give (unset: an anchor count without sizes) under ``--noautoanchor``;
    CheckpointError: resuming a checkpoint whose anchors are unset.
    """
    opt, head = run.opt, model.model[-1]
    if not hasattr(head, "anchors"):
        return ""
    unset = anchors_unset(head.anchors)
    if run.resume:
        if unset:
            raise CheckpointError(f"{run.weights}: its anchors are unset (zeros), so it cannot be resumed; fine-tune "
                                  f"from it with --weights {run.weights} instead (AutoAnchor then computes them)")
        return ""
    if n:
        return _plan_hyp_anchors(run, n, unset)
    if not unset:
        return ""
    cfg = opt.cfg or f"the config of {Path(run.weights).name}"
    if opt.noautoanchor:
        raise ValueError(f"{cfg}: anchors: {head.anchors.shape[1]} is an anchor count without sizes, and "
                         "--noautoanchor leaves them unset; drop --noautoanchor (AutoAnchor computes them) "
                         "or list the anchor sizes in the model YAML")
    return f"{cfg}: anchors: {head.anchors.shape[1]}"


def _plan_hyp_anchors(run: _Run, n: int, unset: bool) -> str:
    """:func:`_plan_anchors` for a hyp file's ``anchors: n`` (n > 0) on a fresh run; `unset`: the built
    model's anchors are placeholders (zeros). Raises ValueError when only AutoAnchor could give them
    but ``--noautoanchor`` is set."""
    opt = run.opt
    weights = Path(run.weights).name if run.weights else ""
    key = f"{run.hyp_source}: anchors: {n}"
    if unset and opt.noautoanchor:
        if run.ckpt:
            src_na = anchor_count((run.ckpt.get("ema") or run.ckpt["model"])["state_dict"])
            has = (f"{weights} has {src_na} anchors per output layer, not {n}" if src_na != n
                   else f"{weights}'s anchors are unset (zeros)")
        else:
            has = "a model trained from scratch has no anchors yet"
        raise ValueError(f"{key}: {has}, and only AutoAnchor computes new ones; drop --noautoanchor, or remove "
                         "the key (or set it to 0) to train with the model's anchors")
    if opt.noautoanchor:
        LOGGER.info(f"{key} equals the anchor count of {weights}: with --noautoanchor the run trains with "
                    f"{weights}'s anchors")
        return ""
    if unset:
        LOGGER.info(f"{key}: AutoAnchor computes the {n} anchors per output layer from the labels")
    else:
        LOGGER.info(f"{key} equals the anchor count of {weights}: AutoAnchor replaces its anchors by anchors "
                    "computed from the labels (each in the slot of the most similar one)")
    return f"{run.hyp_source}, key anchors"


def _freeze(model: nn.Module, layers: list[int], new_blocks: list[str]) -> None:
    """requires_grad = False for the parameters of `layers` (indices into ``model.model``), except in
    `new_blocks` (``"model.9."`` prefixes): a block inserted into a pretrained network is trained
    even inside the frozen range."""
    prefixes = tuple(f"model.{x}." for x in layers)
    for k, v in model.named_parameters():
        v.requires_grad = not k.startswith(prefixes) or k.startswith(tuple(new_blocks))
    if layers:
        n_frozen = sum(not p.requires_grad for p in model.parameters())
        LOGGER.info(f"Freezing layers {_ranges(layers)}: {n_frozen} parameter tensors frozen")
        thawed = sorted({b.rstrip(".") for b in new_blocks if min(layers) <= int(b.split(".")[1]) <= max(layers)})
        if thawed:
            LOGGER.info(f"Not freezing new layers: {', '.join(thawed)}")


def _build_optimizer(run: _Run) -> None:
    """Optimizer, LR schedule and, on resume, the optimizer state, epoch and best fitness."""
    opt, hyp_cfg, ckpt = run.opt, run.hyp_cfg, run.ckpt
    accumulate = max(round(NBS / run.batch_size), 1)
    hyp = dict(hyp_cfg)
    hyp["weight_decay"] = hyp_cfg["weight_decay"] * run.batch_size * accumulate / NBS
    run.hyp = hyp
    run.optimizer = build_optimizer(run.model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"],
                                    gates=run.gates.values(), gate_lr_mult=float(hyp_cfg["gate_lr_mult"]))
    run.lf = lr_lambda(run.epochs, hyp["lrf"], cos=bool(opt.cos_lr))
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lr_lambda=run.lf)

    if run.resume and ckpt is not None:
        if ckpt.get("optimizer") is None:
            raise TrainingError(f"{run.weights} holds no optimizer state: it is a finished run, nothing to resume")
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        run.start_epoch = int(ckpt["epoch"]) + 1
        if run.start_epoch >= run.epochs:
            raise TrainingError(f"{run.weights} already trained {run.epochs} epochs, nothing to resume")
        run.last_opt_step = int(ckpt.get("last_opt_step", -1))
        run.train_total = float(ckpt.get("train_time") or 0.0)  # the epochs before the interruption count too


def _build_data(run: _Run) -> None:
    """Train and val loaders; label check; on a fresh run the label plots and AutoAnchor."""
    opt, hyp, nc, single_cls = run.opt, run.hyp, run.nc, run.opt.single_cls
    train_loader, dataset = create_dataloader(
        run.data_dict["train"], run.imgsz, run.per_rank_bs, run.gs, single_cls, hyp=hyp, augment=True,
        cache=opt.cache or None, rect=bool(opt.rect), rank=LOCAL_RANK, workers=int(opt.workers), prefix="train: ",
        shuffle=not opt.rect, seed=int(opt.seed), nc=None if single_cls else nc,
        image_weights=bool(opt.image_weights), quad=bool(opt.quad))
    labels = np.concatenate([lb for lb in dataset.labels if len(lb)], 0) if dataset.labels else np.zeros((0, 5))
    if len(labels) and int(labels[:, 0].max()) >= nc:
        raise ValueError(f"label class {int(labels[:, 0].max())} exceeds nc={nc} in {opt.data}; "
                         f"possible class labels are 0-{nc - 1}")
    run.train_loader, run.dataset, run.nb = train_loader, dataset, len(train_loader)

    if run.main_proc:
        run.val_loader = create_dataloader(
            run.data_dict["val"], run.imgsz, run.per_rank_bs * 2, run.gs, single_cls, hyp=hyp,
            cache=None if opt.noval else (opt.cache or None), rect=True, rank=-1, workers=int(opt.workers) * 2,
            pad=0.5, prefix="val: ", nc=None if single_cls else nc)[0]
        if not run.resume:
            if run.plots:
                from utils.train_plots import plot_labels

                plot_labels(labels, run.names, run.save_dir)
            if not opt.noautoanchor:  # _plan_anchors refused unset anchors without it
                check_anchors(run.model, dataset.shapes, dataset.labels, thr=hyp["anchor_t"], imgsz=run.imgsz,
                              recompute=run.recompute_anchors)


def _zero_start_blocks(run: _Run) -> None:
    """Give the identity-started blocks of a fresh fine-tune their zero start (hyp ``gate_zero_start``),
    before the optimizer is built: the residual form of a block without zero layers adds a parameter."""
    if run.resume or not run.identity_blocks or not run.hyp_cfg["gate_zero_start"]:
        return  # a resumed run has its start in the checkpoint
    if run.hyp_cfg["gate_schedule"] == "train":
        LOGGER.info("hyp gate_zero_start is skipped under gate_schedule: train (a zero layer behind a zero "
                    "trained gate never moves); the new blocks keep their paper initialisation")
        return
    model = de_parallel(run.model)
    needs_scale = [b for b in run.identity_blocks if getattr(model.get_submodule(b), "zero_layers", ())]
    if needs_scale and not run.hyp_cfg["gate_calibration_images"]:
        raise ValueError(f"{run.hyp_source}: hyp gate_zero_start: 1 needs gate_calibration_images >= 1 for "
                         f"{', '.join(needs_scale)}: a block with zeroed layers computes a constant multiple of its "
                         "input (0.25 x for CBAM), which only calibration turns into x; set gate_calibration_images "
                         "(default 32), or gate_zero_start: 0 for the papers' initialisation without calibration")
    zeroed = zero_start_new_blocks(model, run.identity_blocks)
    residual = [b for b in zeroed if model.get_submodule(b).residual_scale is not None]
    form = f" ({len(residual)} in the residual form x + gate * a * f(x), a = 0: {', '.join(residual)})" if residual else ""
    LOGGER.info(f"Zero start for {len(zeroed)} of {len(run.identity_blocks)} new block(s) (hyp gate_zero_start){form}: "
                "each is the identity at full gate until it learns")


def _calibrate_blocks(run: _Run) -> None:
    """Give the identity-started blocks of a fresh fine-tune their output scale (hyp
    ``gate_calibration_images`` training images; 0 = none), before the EMA copies the model."""
    n = int(run.hyp_cfg["gate_calibration_images"])
    if run.resume or not run.identity_blocks or not n:  # a resumed run has its start in the checkpoint
        return
    images = run.dataset.calibration_batch(n, run.imgsz)
    scales = calibrate_new_blocks(de_parallel(run.model), run.identity_blocks, images)
    LOGGER.info(f"Calibrated {len(scales)} new block(s) on {len(images)} training images (hyp gate_calibration_images): "
                "mean output scale " + ", ".join(f"{b}={float(s.mean()):.2f}" for b, s in scales.items()))


def _prepare_loop(run: _Run) -> None:
    """EMA (after AutoAnchor: it starts from the final anchors), DDP, loss, gate schedule, early
    stopping, and on resume the results.csv rows of the epochs done."""
    opt, ckpt, device = run.opt, run.ckpt, run.device
    run.ema = ModelEMA(run.model) if run.main_proc else None
    if run.ema is not None and run.resume and ckpt is not None and ckpt.get("ema"):
        sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["ema"]["state_dict"].items()}
        misfit = weights_misfit(run.ema.ema, sd)
        if misfit:
            raise CheckpointError(f"{run.weights}: its EMA weights do not fit the model: {misfit}")
        run.ema.ema.load_state_dict(sd)
        run.ema.updates = int(ckpt.get("updates") or 0)

    if RANK != -1:
        cuda = device.type == "cuda"
        model = run.model
        if opt.sync_bn:
            if cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
                LOGGER.info("Using SyncBatchNorm()")
            else:
                LOGGER.warning("WARNING: --sync-bn needs CUDA; ignored on the CPU")
        run.model = nn.parallel.DistributedDataParallel(model, device_ids=[LOCAL_RANK] if cuda else None,
                                                        output_device=LOCAL_RANK if cuda else None)

    # model attributes the loss and val read
    m = de_parallel(run.model)
    run.hyp = scale_hyp_gains(run.hyp, m.model[-1].nl, run.nc, run.imgsz)
    m.hyp = run.hyp
    m.names = run.names
    run.compute_loss = ComputeLoss(run.model)
    run.gate_schedule = make_gate_schedule(run.hyp_cfg, run.gates, run.nb, start=run.fade_start)
    if run.gates:
        LOGGER.info(f"Gates of {', '.join(run.gates)}: {run.gate_schedule.describe()} (hyp gate_schedule)")
        if msg := run.gate_schedule.unfinished(run.epochs * run.nb):
            LOGGER.warning(f"WARNING {msg}")

    run.tb = TensorBoardLogger(run.save_dir, enabled=run.main_proc)
    run.t0 = time.time()
    run.nw = max(round(run.hyp["warmup_epochs"] * run.nb), 100)
    run.maps = np.zeros(run.nc)
    run.scheduler.last_epoch = run.start_epoch - 1
    run.scaler = grad_scaler(device)
    run.stopper = EarlyStopping(patience=opt.patience)
    run.stopper.best_fitness = run.best_fitness
    if run.resume and ckpt is not None:
        run.stopper.best_epoch = int(ckpt.get("best_epoch", run.start_epoch - 1))
    run.csv_keys = CSV_KEYS + [f"gate/{b}" for b in run.log_blocks]
    csv_path = run.save_dir / "results.csv"
    if run.main_proc and run.resume:  # keep the log consistent with the checkpoint: epochs once, in order
        saved_row = ckpt.get("results") if isinstance(ckpt.get("results"), dict) else None
        keep_below = run.start_epoch - 1 if saved_row else run.start_epoch
        rows = [r for r in _csv_rows(csv_path) if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < keep_below
                and all(r.get(k) not in (None, "") for k in CSV_KEYS)]  # a row cut short by a kill is dropped
        if saved_row:  # the checkpoint's own epoch, exactly as it was logged
            rows.append({k: saved_row.get(k) for k in run.csv_keys})
        _write_csv(csv_path, rows, run.csv_keys)
    elif run.main_proc and csv_path.is_file():  # --exist-ok into an earlier run's folder: a log of its own
        kept = _set_aside(csv_path)
        LOGGER.warning(f"WARNING: {run.save_dir} already held a results.csv from an earlier run (--exist-ok): moved "
                       f"to {kept.name}; this run's results.csv starts at epoch 0")
    LOGGER.info(f"Image sizes {run.imgsz} train, {run.imgsz} val\n"
                f"Using {run.train_loader.num_workers} dataloader workers\n"
                f"Logging results to {run.save_dir}\n"
                f"Starting training for {run.epochs} epochs...")


def _train_one_epoch(run: _Run, epoch: int) -> tuple[torch.Tensor, list[float], float]:
    """One pass over the training data; returns the mean (box, obj, cls) loss, the learning rates of
    the parameter groups (before the scheduler's step) and the seconds spent."""
    from tqdm import tqdm

    opt, model, optimizer, device, nb = run.opt, run.model, run.optimizer, run.device, run.nb
    model.train()
    if RANK != -1:
        run.train_loader.sampler.set_epoch(epoch)
    if opt.image_weights:
        _resample(run, epoch)
    mloss = torch.zeros(3, device=device)
    pbar = enumerate(run.train_loader)
    if run.main_proc:
        LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss",
                                           "Instances", "Size"))
        pbar = tqdm(pbar, total=nb, bar_format="{l_bar}{bar:10}{r_bar}", file=sys.stderr)
    optimizer.zero_grad()
    epoch_t0 = time.time()
    accumulate = max(round(NBS / run.batch_size), 1)
    for i, (imgs, targets, _paths, _) in pbar:
        ni = i + nb * epoch
        if run.channels_last:  # on the uint8 batch: 4x less to move than after .float()
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        imgs = imgs.to(device, non_blocking=True).float() / 255

        if ni <= run.nw:
            accumulate = accumulate_steps(ni, run.nw, run.batch_size)
            warmup(optimizer, ni, run.nw, epoch, run.lf, run.hyp)

        if opt.multi_scale:
            imgs = multi_scale_resize(imgs, run.imgsz, run.gs, floor=run.gs * 2)

        run.gate_schedule.before_batch(ni)
        with autocast(device):
            pred = model(imgs)
            loss, loss_items = run.compute_loss(pred, targets.to(device))
            if RANK != -1:
                loss = loss * WORLD_SIZE  # DDP averages gradients over processes
        _check_finite(run, loss, loss_items, epoch, i)

        run.scaler.scale(loss).backward()
        run.gate_schedule.after_backward(ni)

        if ni - run.last_opt_step >= accumulate:
            run.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=GRAD_CLIP)
            run.scaler.step(optimizer)
            run.scaler.update()
            optimizer.zero_grad()
            if run.ema is not None:
                run.ema.update(model)
            run.last_opt_step = ni

        if run.main_proc:
            mloss = (mloss * i + loss_items) / (i + 1)
            mem = f"{memory_gb(device):.3g}G"
            pbar.set_description(("%11s" * 2 + "%11.4g" * 5)
                                 % (f"{epoch}/{run.epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1]))
            run.tb.log_first_mosaic(imgs)
            if run.plots and ni < 3:
                from utils.train_plots import plot_images

                plot_images(imgs, targets, run.save_dir / f"train_batch{ni}.jpg", run.names)
    train_time = time.time() - epoch_t0
    run.train_total += train_time
    lr = [x["lr"] for x in optimizer.param_groups]
    run.scheduler.step()
    return mloss, lr, train_time


def _resample(run: _Run, epoch: int) -> None:
    """--image-weights: this epoch's sampling weights from class frequencies and the last per-class mAPs."""
    from utils.data.sampling import image_weights

    run.train_loader.sampler.set_weights(image_weights(run.dataset.labels, run.nc, run.maps))
    run.train_loader.sampler.set_epoch(epoch)


def _check_finite(run: _Run, loss: torch.Tensor, loss_items: torch.Tensor, epoch: int, i: int) -> None:
    """Raise TrainingError (on every process together) when the loss is not finite."""
    finite = torch.isfinite(loss.detach()).all()
    if RANK != -1:  # every process must stop together
        flag = finite.float().reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag.item())
    if not finite:
        where = f"epoch {epoch}, batch {i}"
        keep = f"; {run.last} keeps the weights of the last completed epoch" if run.last.is_file() else ""
        raise TrainingError(f"loss is {loss.item()} at {where} (items box/obj/cls "
                            f"{[round(x, 4) for x in loss_items.tolist()]}): training diverged, stopping"
                            f"{keep}. Try a lower lr0, a smaller batch or --optimizer SGD.")


def _validate_and_save(run: _Run, epoch: int, mloss: torch.Tensor, lr: list[float], train_time: float) -> bool:
    """On the main process: validate the EMA model, log the epoch (results.csv, gates), write the
    checkpoints. Returns whether to stop (early stopping; decided by rank 0 under DDP)."""
    opt, stop = run.opt, False
    if run.main_proc:
        ema, stopper = run.ema, run.stopper
        ema.update_attr(run.model)
        final_epoch = (epoch + 1 == run.epochs) or (stopper.patience != float("inf") and
                                                    epoch - stopper.best_epoch + 1 >= stopper.patience)
        if not opt.noval or final_epoch:
            run.results, run.maps, _ = validate.run(
                run.data_dict, batch_size=run.per_rank_bs * 2, imgsz=run.imgsz, half=run.amp, model=ema.ema,
                single_cls=opt.single_cls, dataloader=run.val_loader, save_dir=run.save_dir, plots=False,
                compute_loss=run.compute_loss)
        fi = float(fitness(np.asarray(run.results, dtype=np.float64)))
        stop = stopper(epoch, fi)
        if fi > run.best_fitness:
            run.best_fitness = fi
        row = dict(zip(CSV_KEYS, [epoch, *[float(x) for x in mloss.tolist()],
                                  *[float(x) for x in run.results], *[float(x) for x in lr]]))
        gate_now = block_gates(ema.ema, run.log_blocks)  # the averaged model: the one validated and saved
        row.update({f"gate/{b}": round(v, 5) for b, v in gate_now.items()})
        if gate_now:
            LOGGER.info(f"epoch {epoch} gates: " + ", ".join(f"{b}={v:.4f}" for b, v in gate_now.items()))

        if not opt.nosave or final_epoch:
            _save_checkpoints(run, epoch, row, fi)
        _append_csv(run.save_dir / "results.csv", row)  # after the checkpoint: a resumed run never repeats an epoch
        run.tb.log_epoch(row, attention_gates(ema.ema), epoch)
        run.final_results = row
        LOGGER.info(f"epoch {epoch}: {train_time:.1f}s training")

    if RANK != -1:  # rank 0 decides whether to stop (early stopping)
        flag = [stop]
        dist.broadcast_object_list(flag, 0)
        stop = flag[0]
    return bool(stop)


def _save_checkpoints(run: _Run, epoch: int, row: dict, fi: float) -> None:
    """last.pt, best.pt when `fi` is the best fitness so far, epoch<N>.pt every --save-period epochs."""
    ckpt_out = {
        "epoch": epoch,
        "train_time": run.train_total,
        "best_fitness": run.best_fitness,
        "model": model_record(run.model),
        "ema": model_record(run.ema.ema),
        "updates": run.ema.updates,
        "last_opt_step": run.last_opt_step,
        "best_epoch": run.stopper.best_epoch,
        "new_blocks": run.new_blocks,
        "identity_blocks": run.identity_blocks,
        "fade_start": run.fade_start,
        "fading_blocks": run.gate_schedule.fading((epoch + 1) * run.nb),
        "frozen_layers": run.frozen,
        "optimizer": run.optimizer.state_dict(),
        "opt": _plain(vars(run.opt)),
        "hyp": _plain(run.hyp_cfg),
        "results": dict(row),
    }
    save_checkpoint(ckpt_out, run.last)
    if run.best_fitness == fi:
        save_checkpoint(ckpt_out, run.best)
    if run.opt.save_period > 0 and epoch % run.opt.save_period == 0:
        save_checkpoint(ckpt_out, run.wdir / f"epoch{epoch}.pt")


def _finish(run: _Run) -> dict:
    """Digest hook, results.png, strip the optimizer from the checkpoints, validate best.pt; the result dict."""
    if os.getenv(DIGEST_ENV):
        d = Path(os.getenv(DIGEST_ENV))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank{max(RANK, 0)}.sha256").write_text(state_digest(run.model) + "\n")
    results, maps = run.results, run.maps
    run.tb.close()
    if run.main_proc:
        n_done = run.epoch - run.start_epoch + 1
        LOGGER.info(f"\n{n_done} epochs completed in {(time.time() - run.t0) / 3600:.3f} hours.")
        if run.plots:
            from utils.train_plots import plot_results

            plot_results(run.save_dir / "results.csv")  # results.png
        for f in (run.last, run.best):
            if f.exists():
                strip_optimizer(f)
        if run.best.exists():
            LOGGER.info(f"\nValidating {run.best}...")
            bmodel = model_from_record(load_checkpoint(run.best)["model"], source=str(run.best))
            bmodel = bmodel.to(run.device).eval().fuse()
            bmodel.hyp = run.hyp
            results, maps, _ = validate.run(run.data_dict, batch_size=run.per_rank_bs * 2, imgsz=run.imgsz,
                                            model=bmodel, single_cls=run.opt.single_cls, dataloader=run.val_loader,
                                            save_dir=run.save_dir, verbose=run.nc < 50, plots=run.plots,
                                            compute_loss=run.compute_loss)
        LOGGER.info(f"Results saved to {run.save_dir}")
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    p_, r_, map50, map5095 = (float(x) for x in results[:4])
    return {"results": tuple(float(x) for x in results), "maps": maps, "save_dir": run.save_dir,
            "last": run.last, "best": run.best, "epochs_row": run.final_results, "best_fitness": run.best_fitness,
            "metrics": {"precision": p_, "recall": r_, "map50": map50, "map": map5095},
            "train_time": run.train_total}


# ---------------------------------------------------------------------------------------------
# command line


def parse_opt(argv: list[str] | None = None, known: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a YOLOv5 detector.")
    p.add_argument("--weights", type=str, default="yolov5s.pt", help="initial weights ('' = from scratch)")
    p.add_argument("--cfg", type=str, default="", help="model YAML (name or path); default: the weights' own")
    p.add_argument("--data", type=str, default="coco128.yaml", help="dataset YAML")
    p.add_argument("--hyp", type=str, default=str(ROOT / "data/hyps/hyp.scratch-low.yaml"), help="hyperparameters")
    p.add_argument("--epochs", type=int, default=100, help="total training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size for all processes")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=640, help="train and val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training (no mosaic)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="resume the most recent run in --project, or the given last.pt")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate after the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", default=None, help="cache images in ram or disk")
    p.add_argument("--device", default=None,
                   help="cuda device, i.e. 0 or 0,1,2,3 or cpu (default: the best available; with --resume the run's)")
    p.add_argument("--multi-scale", action="store_true", help="vary image size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA only)")
    p.add_argument("--workers", type=int, default=None,
                   help="max dataloader workers per process (default 8; with --resume the run's)")
    p.add_argument("--project", default=str(ROOT / "runs/train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR schedule")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing epsilon (default: the hyp file's label_smoothing, else 0.0)")
    p.add_argument("--patience", type=int, default=100, help="early stopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="save a checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--no-identity-start", action="store_true",
                   help="attention blocks inserted into pretrained --weights start as in their papers, "
                        "not as the identity (gate 0)")
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic algorithms")
    p.add_argument("--image-weights", action="store_true", help="sample images by class weights and per-class mAP")
    p.add_argument("--quad", action="store_true", help="quad dataloader: 4 images -> 1 of twice the size")
    p.add_argument("--evolve", type=int, nargs="?", const=300, default=0,
                   help="evolve hyperparameters with Optuna for this many trials in all (default 300)")
    p.add_argument("--evolve-storage", type=str, default=None,
                   help="Optuna storage URL of the study (default: sqlite:///<run folder>/evolve.db)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p.parse_known_args(argv)[0] if known else p.parse_args(argv)


def _set_aside(path: Path) -> Path:
    """Rename `path` (``results.csv``) to the first free ``results.prev.csv``, ``results.prev2.csv``, ...;
    returns the new path."""
    for i in range(1, 10_000):
        new = path.with_name(f"{path.stem}.prev{i if i > 1 else ''}{path.suffix}")
        if not new.exists():
            return path.rename(new)
    raise FileExistsError(f"{path.parent}: too many earlier results files; clean the folder")


RESUME_KEEPS = {"resume", "device", "workers", "project", "local_rank", "save_dir", "weights", "cfg"}


def _warn_ignored_on_resume(opt: argparse.Namespace, saved: dict, last: Path) -> None:
    """One warning naming every option given with --resume that the resumed run will not use (it
    continues with the options it was started with; only --device and --workers, when given, follow the command)."""
    defaults = vars(parse_opt([]))
    ignored = [f"--{k.replace('_', '-')} {v} (the run has {saved.get(k)})" for k, v in vars(opt).items()
               if k in defaults and k not in RESUME_KEEPS and v != defaults[k] and v != saved.get(k)]
    if ignored:
        LOGGER.warning(f"WARNING: --resume continues {last} with the options it was started with; ignored: "
                       f"{', '.join(ignored)}. Start a new run (--weights {last}) to change them")


def _prepare_resume(opt: argparse.Namespace) -> argparse.Namespace:
    """Replace `opt` by the options stored in the checkpoint to resume (--device and --workers given
    with --resume replace the run's: the machine may differ)."""
    last = Path(opt.resume) if isinstance(opt.resume, str) else latest_run(opt.project)
    if last is None:
        raise FileNotFoundError(f"--resume: no last.pt found under {opt.project}; pass the checkpoint's path")
    if not last.is_file():
        raise FileNotFoundError(f"--resume: {last} does not exist")
    ckpt = load_checkpoint(last)
    saved = ckpt.get("opt")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{last}: holds no training options; it cannot be resumed")
    check_resumable(ckpt, last, int(saved.get("epochs", 0)))  # before anything is logged as resuming
    _warn_ignored_on_resume(opt, saved, last)
    new = argparse.Namespace(**{**vars(parse_opt([])), **saved})
    new.resume, new.weights, new.cfg = True, str(last), ""
    new.hyp = ckpt.get("hyp") or saved.get("hyp")
    new.save_dir = str(last.parent.parent)
    for k in ("device", "workers"):  # the machine may differ: given with --resume, they replace the run's
        if getattr(opt, k) is not None:
            setattr(new, k, getattr(opt, k))
    return new


MACHINE_DEFAULTS = {"device": "", "workers": 8}  # --device / --workers when neither given nor resumed


def _fill_machine_defaults(opt: argparse.Namespace) -> None:
    """--device and --workers default to None so that --resume can tell given from not given; fill them."""
    for k, v in MACHINE_DEFAULTS.items():
        if getattr(opt, k, None) is None:
            setattr(opt, k, v)


def main(opt: argparse.Namespace) -> dict:
    set_logging(rank=RANK)
    if opt.resume:
        opt = _prepare_resume(opt)
        _fill_machine_defaults(opt)  # a run saved by code without them
    else:
        _fill_machine_defaults(opt)
        if not opt.weights and not opt.cfg:
            raise ValueError("either --weights or --cfg must be given")
        if isinstance(opt.cfg, (str, Path)) and opt.cfg:
            resolve_cfg(opt.cfg)  # a model file or a missing YAML is refused before any work
        opt.save_dir = None
    if opt.evolve_storage and not opt.evolve:  # it would be ignored: one plain training run, no study
        raise ValueError("--evolve-storage names the study of --evolve; add --evolve N to evolve hyperparameters "
                         "there, or drop --evolve-storage to train once")
    if opt.evolve:
        if opt.resume:
            raise ValueError("--evolve and --resume exclude each other; re-run the --evolve command to resume a study")
        if RANK != -1:
            raise ValueError("--evolve runs one process per trial: start several train.py --evolve processes "
                             "sharing --evolve-storage instead of torchrun")
        if opt.project == str(ROOT / "runs/train"):
            opt.project = str(ROOT / "runs/evolve")
        if opt.noautoanchor and "anchors" in (load_hyp(opt.hyp) or {}):
            from utils.evolve import SPACE

            raise ValueError(f"{_hyp_source(opt.hyp)}: key anchors is searched by --evolve ({SPACE['anchors'][0]:g}-"
                             f"{SPACE['anchors'][1]:g} anchors per output layer), and only AutoAnchor computes anchors "
                             "of a new count; drop --noautoanchor, or remove the key")
        if opt.evolve_storage:  # a missing driver or an unreachable server is named before any work
            from utils.rdb import check_storage

            check_storage(opt.evolve_storage, "--evolve-storage")
    if RANK in (-1, 0):
        print_args("train", opt)

    device = select_device(opt.device, batch_size=opt.batch_size, verbose=RANK in (-1, 0))
    info = init_distributed(device)
    if info.rank != -1:
        _check_batch_size(opt.batch_size)
    if opt.save_dir is None:
        save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)) if RANK in (-1, 0) else None
        if RANK != -1:  # one folder for all processes, chosen by rank 0
            box = [save_dir]
            dist.broadcast_object_list(box, 0)
            save_dir = box[0]
        opt.save_dir = save_dir
    try:
        keep = holds_files if opt.evolve else holds_training_results  # a study's database is always kept
        with run_folder(opt.save_dir, keep) if RANK in (-1, 0) else contextlib.nullcontext():
            if opt.evolve:
                from utils.evolve import evolve

                return evolve(opt, lambda hyp, o: train(hyp, o, device), catch=(TrainingError,))
            return train(opt.hyp, opt, device)
    finally:
        if WORLD_SIZE > 1 and dist.is_initialized():
            dist.destroy_process_group()


def run(**kwargs) -> dict:
    """``train.run(data='coco128.yaml', weights='yolov5n.pt', imgsz=320, epochs=3)``: the CLI from Python.

    Keyword names are the CLI flags with underscores (``batch_size``, ``cos_lr`` ...); ``img``
    and ``img_size`` are accepted for ``imgsz``; ``hyp`` may be a dict. Returns a dict:
    ``results`` (P, R, mAP50, mAP50-95, val box/obj/cls losses of the final validation),
    ``metrics`` (the first four by name: precision, recall, map50, map), ``maps`` (mAP50-95
    per class), ``save_dir``, ``last``, ``best``, ``best_fitness`` and ``train_time`` (seconds
    spent in the training loops). With ``evolve=N``: the dict of :func:`utils.evolve.evolve`.
    """
    opt = parse_opt([])
    for alias in ("img", "img_size"):
        if alias in kwargs:
            kwargs["imgsz"] = kwargs.pop(alias)
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise TypeError(f"train.run() got an unknown option {k!r}")
        setattr(opt, k, v)
    if isinstance(opt.freeze, int):
        opt.freeze = [opt.freeze]
    return main(opt)


def cli(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    try:
        main(opt)
    except (DatasetNotFoundError, FileNotFoundError, ModelConfigError, CheckpointError, ValueError,
            TrainingError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
