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
the validation plots.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import os
import sys
import time
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
from models.transfer import load_pretrained  # noqa: E402
from models.yolo import DetectionModel, ModelConfigError  # noqa: E402
from utils.autoanchor import check_anchors  # noqa: E402
from utils.checkpoint import (  # noqa: E402
    CheckpointError,
    attempt_download,
    check_resumable,
    load_checkpoint,
    model_record,
    save_checkpoint,
)
from utils.cli import check_img_size, holds_training_results, increment_path, print_args, run_folder  # noqa: E402
from utils.data.dataset import create_dataloader, load_hyp  # noqa: E402
from utils.data.dataset_config import DatasetNotFoundError, check_dataset  # noqa: E402
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
from utils.logging import LOGGER, set_logging  # noqa: E402
from utils.loss import ComputeLoss, scale_hyp_gains  # noqa: E402
from utils.metrics import fitness  # noqa: E402
from utils.optim import NBS, EarlyStopping, accumulate_steps, build_optimizer, lr_lambda, warmup  # noqa: E402
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


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_KEYS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_KEYS)
        if new:
            w.writeheader()
        w.writerow(row)


def _freeze_prefixes(freeze: list[int] | int) -> list[str]:
    """``--freeze 10`` freezes layers 0-9 (the backbone); ``--freeze 0 1 2`` those layers."""
    freeze = [freeze] if isinstance(freeze, int) else list(freeze or [0])
    layers = freeze if len(freeze) > 1 else range(freeze[0])
    return [f"model.{x}." for x in layers]


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r} "
                         "(automatic batch size is not supported)")
    if batch_size % WORLD_SIZE:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of the number of processes {WORLD_SIZE}")
    return int(batch_size)


# ---------------------------------------------------------------------------------------------
# training


def train(hyp: dict | str | Path, opt: argparse.Namespace, device: torch.device) -> dict:
    """Train with the settings in `opt` (see :func:`parse_opt`); returns the final results and the run folder."""
    save_dir, epochs, batch_size = Path(opt.save_dir), int(opt.epochs), _check_batch_size(opt.batch_size)
    weights, single_cls, noval, nosave = str(opt.weights or ""), opt.single_cls, opt.noval, opt.nosave
    resume, plots = bool(opt.resume), not opt.noplots
    main_proc = RANK in (-1, 0)
    wdir = save_dir / "weights"
    last, best = wdir / "last.pt", wdir / "best.pt"
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")

    hyp_cfg = load_hyp(hyp)  # as given (hyp.yaml, checkpoint); gains are scaled on a copy below
    hyp_cfg["label_smoothing"] = float(opt.label_smoothing)
    opt.hyp = hyp_cfg
    if main_proc:
        wdir.mkdir(parents=True, exist_ok=True)
        (save_dir / "hyp.yaml").write_text(yaml.safe_dump(_plain(hyp_cfg), sort_keys=False))
        (save_dir / "opt.yaml").write_text(yaml.safe_dump(_plain(vars(opt)), sort_keys=False))
    LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hyp_cfg.items()))

    init_seeds(int(opt.seed) + 1 + RANK, deterministic=bool(opt.deterministic))
    with main_process_first(LOCAL_RANK):
        data_dict = check_dataset(opt.data)
    train_path, val_path = data_dict["train"], data_dict["val"]
    nc = 1 if single_cls else int(data_dict["nc"])
    names = ["item"] if single_cls and len(data_dict["names"]) != 1 else list(data_dict["names"])

    # ---- model
    ckpt, transfer = None, None
    if weights.endswith(".pt"):
        path = attempt_download(weights)
        ckpt = load_checkpoint(path)
        src = ckpt.get("ema") or ckpt["model"]
        if resume:
            model = DetectionModel(ckpt["model"]["yaml"], ch=3, nc=nc)
            model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in ckpt["model"]["state_dict"].items()})
            LOGGER.info(f"Resuming from {path} at epoch {int(ckpt['epoch']) + 1}/{epochs - 1}")
        else:
            model = DetectionModel(opt.cfg or src["yaml"], ch=3, nc=nc, anchors=hyp_cfg.get("anchors"))
            transfer = load_pretrained(src, model, source=Path(weights).name,
                                       identity_start=not opt.no_identity_start)
    elif weights:
        raise CheckpointError(f"{weights}: --weights must be a .pt checkpoint (or '' to train from scratch)")
    else:
        if not opt.cfg:
            raise ValueError("--cfg is required when training from scratch (--weights '')")
        model = DetectionModel(opt.cfg, ch=3, nc=nc, anchors=hyp_cfg.get("anchors"))
    model = model.to(device)
    amp = amp_enabled(device)
    channels_last = device.type == "cpu"  # oneDNN convolutions (forward and backward) are faster in NHWC
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    freeze = _freeze_prefixes(opt.freeze)
    if transfer is not None:
        new_blocks = [f"{x}." for x in transfer.new_blocks]
    else:  # on resume: the blocks that were new when the run started
        new_blocks = list((ckpt or {}).get("new_blocks") or []) if resume else []
    thawed = sorted({b.rstrip(".") for b in new_blocks if any(b.startswith(x) for x in freeze)})
    for k, v in model.named_parameters():
        # a block inserted into a pretrained network is trained even inside the frozen range
        v.requires_grad = not any(k.startswith(x) for x in freeze) or any(k.startswith(b) for b in new_blocks)
    if freeze:
        n_frozen = sum(not p.requires_grad for p in model.parameters())
        layers = [int(x.split(".")[1]) for x in freeze]
        LOGGER.info(f"Freezing layers {layers}: {n_frozen} parameter tensors frozen")
        if thawed:
            LOGGER.info(f"Not freezing new layers: {', '.join(thawed)}")

    gs = max(int(model.stride.max()), 32)
    imgsz = check_img_size(int(opt.imgsz), gs, floor=gs * 2)

    # ---- optimizer and schedule
    accumulate = max(round(NBS / batch_size), 1)
    hyp = dict(hyp_cfg)
    hyp["weight_decay"] = hyp_cfg["weight_decay"] * batch_size * accumulate / NBS
    optimizer = build_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    lf = lr_lambda(epochs, hyp["lrf"], cos=bool(opt.cos_lr))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)

    # ---- resume state
    start_epoch, best_fitness = 0, 0.0
    if resume and ckpt is not None:
        if ckpt.get("optimizer") is None:
            raise TrainingError(f"{weights} holds no optimizer state: it is a finished run, nothing to resume")
        optimizer.load_state_dict(ckpt["optimizer"])
        best_fitness = float(ckpt.get("best_fitness") or 0.0)
        start_epoch = int(ckpt["epoch"]) + 1
        if start_epoch >= epochs:
            raise TrainingError(f"{weights} already trained {epochs} epochs, nothing to resume")
        last_opt_step = int(ckpt.get("last_opt_step", -1))
    else:
        last_opt_step = -1

    # ---- data
    per_rank_bs = batch_size // WORLD_SIZE
    train_loader, dataset = create_dataloader(
        train_path, imgsz, per_rank_bs, gs, single_cls, hyp=hyp, augment=True, cache=opt.cache or None,
        rect=bool(opt.rect), rank=LOCAL_RANK, workers=int(opt.workers), prefix="train: ", shuffle=not opt.rect,
        seed=int(opt.seed), nc=None if single_cls else nc)
    labels = np.concatenate([lb for lb in dataset.labels if len(lb)], 0) if dataset.labels else np.zeros((0, 5))
    if len(labels) and int(labels[:, 0].max()) >= nc:
        raise ValueError(f"label class {int(labels[:, 0].max())} exceeds nc={nc} in {opt.data}; "
                         f"possible class labels are 0-{nc - 1}")
    nb = len(train_loader)

    val_loader = None
    if main_proc:
        val_loader = create_dataloader(
            val_path, imgsz, per_rank_bs * 2, gs, single_cls, hyp=hyp, cache=None if noval else (opt.cache or None),
            rect=True, rank=-1, workers=int(opt.workers) * 2, pad=0.5, prefix="val: ", nc=None if single_cls else nc)[0]
        if not resume:
            if plots:
                from utils.train_plots import plot_labels

                plot_labels(labels, names, save_dir)
            if not opt.noautoanchor:
                check_anchors(model, dataset.shapes, dataset.labels, thr=hyp["anchor_t"], imgsz=imgsz)

    # ---- EMA (after autoanchor: the average starts from the final anchors)
    ema = ModelEMA(model) if main_proc else None
    if ema is not None and resume and ckpt is not None and ckpt.get("ema"):
        ema.ema.load_state_dict({k: v.float() if v.is_floating_point() else v
                                 for k, v in ckpt["ema"]["state_dict"].items()})
        ema.updates = int(ckpt.get("updates") or 0)

    # ---- distributed
    cuda = device.type == "cuda"
    if RANK != -1:
        if opt.sync_bn:
            if cuda:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
                LOGGER.info("Using SyncBatchNorm()")
            else:
                LOGGER.warning("WARNING: --sync-bn needs CUDA; ignored on the CPU")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[LOCAL_RANK] if cuda else None,
                                                    output_device=LOCAL_RANK if cuda else None)

    # ---- model attributes the loss and val read
    m = de_parallel(model)
    nl = m.model[-1].nl
    hyp = scale_hyp_gains(hyp, nl, nc, imgsz)
    m.hyp = hyp
    m.names = names
    compute_loss = ComputeLoss(model)

    # ---- loop
    t0 = time.time()
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    maps = np.zeros(nc)
    results: tuple = (0, 0, 0, 0, 0, 0, 0)
    scheduler.last_epoch = start_epoch - 1
    scaler = grad_scaler(device)
    stopper, stop = EarlyStopping(patience=opt.patience), False
    stopper.best_fitness = best_fitness
    if resume and ckpt is not None:
        stopper.best_epoch = int(ckpt.get("best_epoch", start_epoch - 1))
    csv_path = save_dir / "results.csv"
    if main_proc and resume:  # keep the log consistent with the checkpoint: epochs once, in order
        saved_row = ckpt.get("results") if isinstance(ckpt.get("results"), dict) else None
        keep_below = start_epoch - 1 if saved_row else start_epoch
        rows = [r for r in _csv_rows(csv_path) if (r.get("epoch") or "").isdigit() and int(r["epoch"]) < keep_below
                and all(r.get(k) not in (None, "") for k in CSV_KEYS)]  # a row cut short by a kill is dropped
        if saved_row:  # the checkpoint's own epoch, exactly as it was logged
            rows.append({k: saved_row.get(k) for k in CSV_KEYS})
        _write_csv(csv_path, rows)
    LOGGER.info(f"Image sizes {imgsz} train, {imgsz} val\n"
                f"Using {train_loader.num_workers} dataloader workers\n"
                f"Logging results to {save_dir}\n"
                f"Starting training for {epochs} epochs...")
    from tqdm import tqdm

    final_results: dict = {}
    train_total = 0.0  # seconds in the training loops (validation excluded)
    for epoch in range(start_epoch, epochs):
        model.train()
        if RANK != -1:
            train_loader.sampler.set_epoch(epoch)
        mloss = torch.zeros(3, device=device)
        pbar = enumerate(train_loader)
        if main_proc:
            LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss",
                                               "Instances", "Size"))
            pbar = tqdm(pbar, total=nb, bar_format="{l_bar}{bar:10}{r_bar}", file=sys.stderr)
        optimizer.zero_grad()
        epoch_t0 = time.time()
        for i, (imgs, targets, _paths, _) in pbar:
            ni = i + nb * epoch
            if channels_last:  # on the uint8 batch: 4x less to move than after .float()
                imgs = imgs.contiguous(memory_format=torch.channels_last)
            imgs = imgs.to(device, non_blocking=True).float() / 255

            if ni <= nw:
                accumulate = accumulate_steps(ni, nw, batch_size)
                warmup(optimizer, ni, nw, epoch, lf, hyp)

            if opt.multi_scale:
                imgs = multi_scale_resize(imgs, imgsz, gs, floor=gs * 2)

            with autocast(device):
                pred = model(imgs)
                loss, loss_items = compute_loss(pred, targets.to(device))
                if RANK != -1:
                    loss = loss * WORLD_SIZE  # DDP averages gradients over processes

            finite = torch.isfinite(loss.detach()).all()
            if RANK != -1:  # every process must stop together
                flag = finite.float().reshape(1)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = bool(flag.item())
            if not finite:
                where = f"epoch {epoch}, batch {i}"
                keep = f"; {last} keeps the weights of the last completed epoch" if last.is_file() else ""
                raise TrainingError(f"loss is {loss.item()} at {where} (items box/obj/cls "
                                    f"{[round(x, 4) for x in loss_items.tolist()]}): training diverged, stopping"
                                    f"{keep}. Try a lower lr0, a smaller batch or --optimizer SGD.")

            scaler.scale(loss).backward()

            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=GRAD_CLIP)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                if ema is not None:
                    ema.update(model)
                last_opt_step = ni

            if main_proc:
                mloss = (mloss * i + loss_items) / (i + 1)
                mem = f"{memory_gb(device):.3g}G"
                pbar.set_description(("%11s" * 2 + "%11.4g" * 5)
                                     % (f"{epoch}/{epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1]))
                if plots and ni < 3:
                    from utils.train_plots import plot_images

                    plot_images(imgs, targets, save_dir / f"train_batch{ni}.jpg", names)
        train_time = time.time() - epoch_t0
        train_total += train_time

        lr = [x["lr"] for x in optimizer.param_groups]
        scheduler.step()

        if main_proc:
            ema.update_attr(model)
            final_epoch = (epoch + 1 == epochs) or (stopper.patience != float("inf") and
                                                    epoch - stopper.best_epoch + 1 >= stopper.patience)
            if not noval or final_epoch:
                results, maps, _ = validate.run(data_dict, batch_size=per_rank_bs * 2, imgsz=imgsz, half=amp,
                                                model=ema.ema, single_cls=single_cls, dataloader=val_loader,
                                                save_dir=save_dir, plots=False, compute_loss=compute_loss)
            fi = float(fitness(np.asarray(results, dtype=np.float64)))
            stop = stopper(epoch, fi)
            if fi > best_fitness:
                best_fitness = fi
            row = dict(zip(CSV_KEYS, [epoch, *[float(x) for x in mloss.tolist()],
                                      *[float(x) for x in results], *[float(x) for x in lr]]))

            if not nosave or final_epoch:
                ckpt_out = {
                    "epoch": epoch,
                    "best_fitness": best_fitness,
                    "model": model_record(model),
                    "ema": model_record(ema.ema),
                    "updates": ema.updates,
                    "last_opt_step": last_opt_step,
                    "best_epoch": stopper.best_epoch,
                    "new_blocks": new_blocks,
                    "optimizer": optimizer.state_dict(),
                    "opt": _plain(vars(opt)),
                    "hyp": _plain(hyp_cfg),
                    "results": {k: v for k, v in row.items()},
                }
                save_checkpoint(ckpt_out, last)
                if best_fitness == fi:
                    save_checkpoint(ckpt_out, best)
                if opt.save_period > 0 and epoch % opt.save_period == 0:
                    save_checkpoint(ckpt_out, wdir / f"epoch{epoch}.pt")
                del ckpt_out
            _append_csv(csv_path, row)  # after the checkpoint: a resumed run never repeats an epoch
            final_results = row
            LOGGER.info(f"epoch {epoch}: {train_time:.1f}s training")

        if RANK != -1:  # rank 0 decides whether to stop (early stopping)
            flag = [stop]
            dist.broadcast_object_list(flag, 0)
            stop = flag[0]
        if stop:
            break

    # ---- end
    if os.getenv(DIGEST_ENV):
        d = Path(os.getenv(DIGEST_ENV))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rank{max(RANK, 0)}.sha256").write_text(state_digest(model) + "\n")
    if main_proc:
        n_done = epoch - start_epoch + 1
        LOGGER.info(f"\n{n_done} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        if plots:
            from utils.train_plots import plot_results

            plot_results(csv_path)  # results.png
        for f in (last, best):
            if f.exists():
                strip_optimizer(f)
        if best.exists():
            LOGGER.info(f"\nValidating {best}...")
            from utils.checkpoint import model_from_record

            bmodel = model_from_record(load_checkpoint(best)["model"], source=str(best)).to(device).eval().fuse()
            bmodel.hyp = hyp
            results, maps, _ = validate.run(data_dict, batch_size=per_rank_bs * 2, imgsz=imgsz, model=bmodel,
                                            single_cls=single_cls, dataloader=val_loader, save_dir=save_dir,
                                            verbose=nc < 50, plots=plots, compute_loss=compute_loss)
        LOGGER.info(f"Results saved to {save_dir}")
    torch.cuda.empty_cache() if cuda else None
    p_, r_, map50, map5095 = (float(x) for x in results[:4])
    return {"results": tuple(float(x) for x in results), "maps": maps, "save_dir": save_dir,
            "last": last, "best": best, "epochs_row": final_results, "best_fitness": best_fitness,
            "metrics": {"precision": p_, "recall": r_, "map50": map50, "map": map5095},
            "train_time": train_total}


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
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train and val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training (no mosaic)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="resume the most recent run in --project, or the given last.pt")
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate after the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--cache", type=str, nargs="?", const="ram", default=None, help="cache images in ram or disk")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="vary image size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA only)")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per process under DDP)")
    p.add_argument("--project", default=str(ROOT / "runs/train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR schedule")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="early stopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="save a checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--no-identity-start", action="store_true",
                   help="attention blocks inserted into pretrained --weights start as in their papers, "
                        "not as the identity (gate 0)")
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic algorithms")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p.parse_known_args(argv)[0] if known else p.parse_args(argv)


def _prepare_resume(opt: argparse.Namespace) -> argparse.Namespace:
    """Replace `opt` by the options stored in the checkpoint to resume (keeping device/workers)."""
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
    new = argparse.Namespace(**{**vars(parse_opt([])), **saved})
    new.resume, new.weights, new.cfg = True, str(last), ""
    new.hyp = ckpt.get("hyp") or saved.get("hyp")
    new.save_dir = str(last.parent.parent)
    for k in ("device", "workers"):  # the machine may differ
        setattr(new, k, getattr(opt, k))
    return new


def main(opt: argparse.Namespace) -> dict:
    set_logging(rank=RANK)
    if opt.resume:
        opt = _prepare_resume(opt)
    else:
        if not opt.weights and not opt.cfg:
            raise ValueError("either --weights or --cfg must be given")
        opt.save_dir = None
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
        with run_folder(opt.save_dir, holds_training_results) if RANK in (-1, 0) else contextlib.nullcontext():
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
    spent in the training loops).
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
