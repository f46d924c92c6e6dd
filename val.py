"""Validate a detector on a dataset: P, R, mAP50, mAP50-95 per class, speed, plots.

    python val.py --weights yolov5n.pt --data coco128.yaml --img 640
    python val.py --weights best.pt --data my.yaml --task test --verbose --save-json
    python val.py --weights yolov5n.pt --data coco128.yaml --task speed

Results go to runs/val/exp, exp2, ... `train.py` calls :func:`run` with its in-memory model
and dataloader instead of a checkpoint file.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.backends import load_backend  # noqa: E402
from models.checkpoint import CheckpointError  # noqa: E402
from utils import coco  # noqa: E402
from utils.boxes import non_max_suppression, scale_boxes, xywh2xyxy, xyxy2xywh  # noqa: E402
from utils.cli import HALF_HELP, check_img_size, image_size, increment_path, print_args  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.logging import LOGGER  # noqa: E402
from utils.metrics import IOU_THRESHOLDS, ConfusionMatrix, match_predictions, summarize  # noqa: E402

COLUMNS = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


class _Timer:
    """Accumulated wall time of the blocks run inside it (CUDA work waited for)."""

    def __init__(self, cuda: bool = False):
        self.total, self.cuda = 0.0, cuda

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.total += time.perf_counter() - self._t0


def format_row(cells: tuple | list) -> str:
    """One line of the results table: the class name right-aligned in 22 columns, then 11 each."""
    out = [f"{cells[0]:>22}"]
    for c in cells[1:]:
        if isinstance(c, (float, np.floating)):
            out.append(f"{c:>11.3f}")
        else:
            out.append(f"{c!s:>11}")
    return "".join(out)


def _emit(callbacks, event: str, *args) -> None:
    """Call a train.py hook: an object with ``run(event, *args)`` or a dict event -> callable(s)."""
    if callbacks is None:
        return
    if hasattr(callbacks, "run"):
        callbacks.run(event, *args)
    elif isinstance(callbacks, dict):
        fns = callbacks.get(event) or []
        for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
            fn(*args)


def save_txt_labels(detn: torch.Tensor, shape0: tuple[int, int], file: Path, save_conf: bool) -> None:
    """Detections in original-image pixels -> a YOLO label file (cls cx cy w h [conf], normalised)."""
    h0, w0 = shape0
    gain = torch.tensor([w0, h0, w0, h0], dtype=torch.float32)
    rows = []
    for *xyxy, conf, cls in detn.detach().cpu().float().tolist():
        xywh = (xyxy2xywh(torch.tensor(xyxy)) / gain).tolist()
        vals = [int(cls), *xywh, conf] if save_conf else [int(cls), *xywh]
        rows.append(" ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals))
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w") as f:  # one file per image: a rerun with --exist-ok replaces it
        f.writelines(r + "\n" for r in rows)


def _progress(dataloader):
    """The loader wrapped in a tqdm bar (on stderr) headed by the results table's columns, as
    the table follows it; plain when INFO logging is off."""
    import logging

    from tqdm import tqdm

    return tqdm(dataloader, desc=format_row(COLUMNS), bar_format="{l_bar}{bar:10}{r_bar}", file=sys.stderr,
                disable=not LOGGER.isEnabledFor(logging.INFO), total=len(dataloader) if hasattr(dataloader, "__len__")
                else None)


def _label_namer(dataloader):
    """``path -> labels/<name>.txt`` name for --save-txt: the image's path below the common folder
    of the loader's images, so images of one name in different folders get distinct files."""
    from utils.data.sources import common_root, relative_name

    files = list(getattr(getattr(dataloader, "dataset", None), "im_files", None) or [])
    root = common_root(files) if files else None

    def name(path: Path) -> Path:
        rel = relative_name(path, root) if root is not None else Path(Path(path).name)
        return rel.with_suffix(".txt")

    return name


def _build_dataloader(data: dict, task: str, imgsz: int, batch_size: int, stride: int, single_cls: bool,
                      pad: float, rect: bool, workers: int):
    """The validation loader of the data pipeline (rectangular batches, no augmentation)."""
    from utils.data.dataset import create_dataloader

    return create_dataloader(data[task], imgsz, batch_size, stride, single_cls=single_cls, pad=pad, rect=rect,
                             workers=workers, augment=False, shuffle=False, prefix=f"{task}: ",
                             nc=int(data["nc"]))[0]


def _load_data(data) -> dict:
    from utils.data.dataset_config import check_dataset

    return check_dataset(data)


def _names_list(names, nc: int) -> list[str]:
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if names is None:
        return [str(i) for i in range(nc)]
    return [str(n) for n in names]


def _images_in_annotations(paths: list[str], ids: dict[str, int], known: dict[str, int], records: list[dict],
                           anno: Path, pred_json: Path) -> tuple[list[int], Path]:
    """The image ids and predictions file the COCO evaluation against the official annotation file
    `anno` uses: only images listed there (pycocotools cannot score others). Warns with the count
    when some val images are not in it; their predictions stay in `pred_json` under new ids."""
    inside = [ids[p] for p in paths if Path(p).name in known]
    if len(inside) == len(paths):
        return inside, pred_json
    LOGGER.warning(f"WARNING: {len(paths) - len(inside)} of {len(paths)} val images are not in {anno}: the COCO "
                   f"evaluation covers the {len(inside)} that are (the others' detections are in {pred_json.name} "
                   "under new ids)")
    keep = set(inside)
    return inside, coco.write_json([r for r in records if r["image_id"] in keep],
                                   pred_json.with_name(pred_json.stem + "_in_annotations.json"))


def _backend_input(backend, imgsz: int, batch_size: int) -> tuple[int, int]:
    """Image size and batch size a loaded model file takes: a fixed-shape export imposes its own."""
    if backend.dynamic:
        return check_img_size(imgsz, s=max(backend.stride, 32)), batch_size
    h, w = backend.imgsz
    if h != w:
        raise ValueError(f"{backend.path} was exported for {h}x{w} inputs; val.py letterboxes to squares: "
                         "export it with a square --imgsz or with --dynamic")
    if (h, backend.batch) != (imgsz, batch_size):
        LOGGER.info(f"{backend.path} is a fixed-shape export: validating at its {h}x{w}, batch {backend.batch}, "
                    f"square letterboxed images (not --img {imgsz} rectangular batches; export with --dynamic for those)")
    return h, backend.batch


def run(
    data: str | Path | dict,
    weights: str | Path | list | None = None,
    batch_size: int = 32,
    imgsz: int = 640,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    task: str = "val",
    device: str | torch.device = "",
    workers: int = 8,
    single_cls: bool = False,
    augment: bool = False,
    verbose: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_json: bool = False,
    project: str | Path = ROOT / "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = False,
    model: torch.nn.Module | None = None,
    dataloader=None,
    save_dir: str | Path = Path(""),
    plots: bool = True,
    callbacks=None,
    compute_loss=None,
    per_image: list | None = None,
) -> tuple[tuple[float, ...], np.ndarray, tuple[float, float, float]]:
    """Validate and return ``((P, R, mAP50, mAP50-95, *mean_losses), maps, times)``.

    * ``maps``: AP50-95 per class id (classes without labels get the overall mAP);
    * ``times``: milliseconds per image for pre-processing, inference and NMS.

    Standalone (``model=None``): loads `weights`, checks `data` and builds the loader itself.
    From train.py: pass ``model`` (e.g. the EMA model), ``dataloader``, ``save_dir`` and, to
    get validation losses, ``compute_loss`` (called as ``compute_loss(raw_outputs, targets)``
    and expected to return ``(loss, loss_items)``). The model's train/eval mode and dtype are
    restored on return. With ``save_json`` and a COCO evaluation available, mAP50 and
    mAP50-95 in the returned tuple are pycocotools' figures (as upstream YOLOv5 does).
    ``per_image``: a list that receives, per image, ``(path, correct (n, 10) bool, conf (n,),
    pred_cls (n,), target_cls (m,))``, the match statistics mAP is computed from
    (utils.stats.MatchStats.from_val reads it; compare.py's confidence intervals use it).
    """
    training = model is not None
    if training:
        device = next(model.parameters()).device
        was_training = model.training
        half = bool(half) and device.type == "cuda"  # autocast below: the caller's weights are untouched
        save_dir = Path(save_dir)
        data = data if isinstance(data, dict) else _load_data(data)
    else:
        device = select_device(device, batch_size=batch_size)
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)  # made once model and data are ready
        model = load_backend(weights[0] if isinstance(weights, (list, tuple)) else weights, device, half=half)
        was_training = False
        imgsz, batch_size = _backend_input(model, imgsz, batch_size)
        data = _load_data(data)

    if training:
        model.eval()
    cuda = device.type == "cuda"
    nc = 1 if single_cls else int(data["nc"])
    names = ["item"] if single_cls else _names_list(data.get("names") or getattr(model, "names", None), nc)
    if not training and not single_cls and getattr(model, "nc", nc) != nc:
        raise ValueError(f"{weights} has {model.nc} classes but the dataset {data.get('yaml_file', '')} has "
                         f"{nc}; train on this dataset first (or pass --single-cls for a 1-class model)")
    iouv = torch.as_tensor(IOU_THRESHOLDS, dtype=torch.float32, device=device)

    if dataloader is None:
        if task == "speed":
            conf_thres, iou_thres, save_json, save_txt, plots = 0.25, 0.45, False, False, False
        pad, rect = (0.0, False) if task == "speed" or not getattr(model, "dynamic", True) else (0.5, True)
        split = task if task in ("train", "val", "test") else "val"
        if not data.get(split):
            raise ValueError(f"the dataset has no '{split}' split")
        gs = int(torch.as_tensor(model.stride).max())
        dataloader = _build_dataloader(data, split, imgsz, batch_size, gs, single_cls, pad, rect, workers)

    save_dir.mkdir(parents=True, exist_ok=True)
    label_name = _label_namer(dataloader) if save_txt else None
    coco_classes = coco.is_coco_classes(names) and not single_cls
    class_map = coco.category_map(names if coco_classes else None)
    confusion = ConfusionMatrix(nc=nc)
    timers = [_Timer(cuda), _Timer(cuda), _Timer(cuda)]
    loss = torch.zeros(3, device=device)
    stats: list[tuple] = []
    json_dets: list[tuple[Path, torch.Tensor]] = []  # (path, detections) per image; ids at the end
    gt_images: list[tuple] = []
    seen = 0
    shape_seen = None
    amp = torch.autocast("cuda", dtype=torch.float16) if (training and half) else contextlib.nullcontext()
    model_half = next(model.parameters()).dtype == torch.float16 if training else model.fp16
    # NHWC convolutions are about twice as fast as NCHW with torch's CPU kernels (measured for
    # yolov5n, batch 32 at 640); a channels-last input is enough for most of the gain
    channels_last = device.type == "cpu" and (training or model.channels_last)
    _emit(callbacks, "on_val_start")

    with torch.no_grad():
        for batch_i, (im, targets, paths, shapes) in enumerate(_progress(dataloader)):
            _emit(callbacks, "on_val_batch_start")
            with timers[0]:
                im = im.to(device, non_blocking=True)
                if channels_last:  # on the uint8 batch: 4x less to move than after .float()
                    im = im.contiguous(memory_format=torch.channels_last)
                im = im.half() if model_half else im.float()
                im /= 255
                targets = targets.to(device)
                nb, _, height, width = im.shape
                shape_seen = shape_seen or tuple(im.shape)
            with timers[1], amp:
                if compute_loss is not None:
                    preds, train_out = model(im)
                else:
                    preds, train_out = model(im, augment=augment), None
            if compute_loss is not None:
                loss += compute_loss([x.float() for x in train_out], targets)[1].to(device)
            with timers[2]:
                preds = non_max_suppression(preds[0].float() if isinstance(preds, (list, tuple)) else preds.float(),
                                            conf_thres, iou_thres, multi_label=True, agnostic=single_cls,
                                            max_det=max_det)

            # targets are normalised to the letterboxed batch image: to pixels there
            tpix = targets.clone()
            tpix[:, 2:] *= torch.tensor((width, height, width, height), device=device, dtype=tpix.dtype)
            for si, pred in enumerate(preds):
                labels = tpix[tpix[:, 0] == si, 1:]
                if single_cls:
                    labels[:, 0] = 0
                path, shape0 = Path(paths[si]), shapes[si][0]
                seen += 1
                pred = pred.clone()
                if single_cls:
                    pred[:, 5] = 0
                predn = pred.clone()
                scale_boxes(im[si].shape[1:], predn[:, :4], shape0, shapes[si][1])
                labelsn = torch.zeros((len(labels), 5), device=device)
                if len(labels):
                    labelsn[:, 0] = labels[:, 0]
                    labelsn[:, 1:] = scale_boxes(im[si].shape[1:], xywh2xyxy(labels[:, 1:5]), shape0, shapes[si][1])
                correct = match_predictions(predn, labelsn, iouv)
                stats.append((correct.cpu(), pred[:, 4].cpu(), pred[:, 5].cpu(), labelsn[:, 0].cpu()))
                if per_image is not None:
                    per_image.append((str(path), *stats[-1]))
                if plots:
                    confusion.process_batch(predn, labelsn)
                if save_txt:
                    save_txt_labels(predn, shape0, save_dir / "labels" / label_name(path), save_conf)
                if save_json:
                    json_dets.append((path, predn.cpu()))
                    h0, w0 = shape0
                    gt = labelsn[:, 1:].cpu().numpy()
                    norm = np.stack([(gt[:, 0] + gt[:, 2]) / 2 / w0, (gt[:, 1] + gt[:, 3]) / 2 / h0,
                                     (gt[:, 2] - gt[:, 0]) / w0, (gt[:, 3] - gt[:, 1]) / h0], 1)
                    gt_images.append((path, h0, w0, np.concatenate([labelsn[:, :1].cpu().numpy(), norm], 1)))
            _emit(callbacks, "on_val_batch_end", batch_i, im, targets, paths, shapes, preds)

    # ---- metrics ---------------------------------------------------------------------------
    summary = summarize(stats, nc)
    nt = summary.n_labels
    res = summary.result
    mp, mr, map50, map5095 = summary.mp, summary.mr, summary.map50, summary.map
    LOGGER.info(format_row(COLUMNS))
    LOGGER.info(format_row(("all", seen, int(nt.sum()), mp, mr, map50, map5095)))
    if nt.sum() == 0:
        LOGGER.warning(f"WARNING: no labels found in the {task} set; metrics need labels")
    if res is not None and (verbose or (nc < 50 and not training)) and nc > 1:
        for i, c in enumerate(res.classes):
            LOGGER.info(format_row((names[c], seen, int(nt[c]), res.p[i], res.r[i], res.ap[i, 0], res.ap[i].mean())))

    times = tuple(t.total / max(seen, 1) * 1e3 for t in timers)
    if not training:
        shape = (batch_size, 3, imgsz, imgsz)
        pre, inf, nms = times
        LOGGER.info(f"Speed: {pre:.1f}ms pre-process, {inf:.1f}ms inference, {nms:.1f}ms NMS per image "
                    f"at shape {shape}")

    if plots:
        from utils.metric_plots import plot_all

        plot_all(res, confusion, save_dir, names)
    _emit(callbacks, "on_val_end", nt, res, confusion)

    n_json = sum(len(d) for _, d in json_dets)
    if save_json and n_json:
        wstem = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else "model"
        anno = Path(data.get("path", "")) / "annotations" / "instances_val2017.json"
        official = bool(coco_classes and data.get("path") and anno.is_file())
        paths = [str(p) for p, *_ in gt_images]
        known = None
        if official:
            try:
                known = coco.annotation_ids(anno)
            except ValueError as e:
                LOGGER.warning(f"WARNING: {e}; the ground truth is built from the YOLO labels instead")
                official = False
        ids = coco.image_ids(paths, known)  # one id per image, shared by both JSON files
        records = [r for p, d in json_dets for r in coco.detections_to_json(d, ids[str(p)], class_map)]
        pred_json = coco.write_json(records, save_dir / f"{wstem}_predictions.json")
        LOGGER.info(f"Saved {n_json} COCO-format detections to {pred_json}")
        eval_ids, eval_json = list(ids.values()), pred_json
        if official:
            eval_ids, eval_json = _images_in_annotations(paths, ids, known, records, anno, pred_json)
        else:
            gt_json = coco.build_gt_json(gt_images, names, class_map, ids)
            anno = coco.write_json(gt_json, save_dir / "annotations_from_labels.json")
            LOGGER.info(f"Built COCO ground truth from the YOLO labels: {anno}")
        try:
            map5095, map50 = coco.coco_eval(anno, eval_json, img_ids=eval_ids)
            LOGGER.info(f"pycocotools: mAP50 {map50:.3f}, mAP50-95 {map5095:.3f}")
        except ImportError:
            LOGGER.warning("WARNING: pycocotools is not installed; COCO mAP skipped (pip install pycocotools)")
        except Exception as e:  # noqa: BLE001 - a failing COCO evaluation must not lose the run's results
            LOGGER.warning(f"WARNING: pycocotools evaluation failed: {type(e).__name__}: {e}")

    if not training:
        n_txt = len(list((save_dir / "labels").rglob("*.txt"))) if save_txt else 0
        extra = f"\n{n_txt} label files saved to {save_dir / 'labels'}" if save_txt else ""
        LOGGER.info(f"Results saved to {save_dir}{extra}")
    else:
        model.train(was_training)

    maps = summary.maps(nc)
    n_batches = max(len(dataloader), 1) if hasattr(dataloader, "__len__") else 1
    losses = (loss.cpu() / n_batches).tolist()
    return (mp, mr, map50, map5095, *losses), maps, times


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Validate a YOLOv5 detector on a dataset.")
    p.add_argument("--data", type=str, default=str(ROOT / "data/coco128.yaml"), help="dataset YAML")
    p.add_argument("--weights", nargs="+", type=str, default=str(ROOT / "yolov5s.pt"), help="model checkpoint")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=("train", "val", "test", "speed"), help="split, or speed")
    p.add_argument("--device", default="", help="cuda device (0 or 0,1,2,3) or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat every class as one")
    p.add_argument("--augment", action="store_true", help="test-time augmentation (flips and scales)")
    p.add_argument("--verbose", action="store_true", help="report mAP per class")
    p.add_argument("--save-txt", action="store_true", help="save detections to labels/*.txt")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt, add the confidence")
    p.add_argument("--save-json", action="store_true", help="save COCO-format detections and score them")
    p.add_argument("--project", default=str(ROOT / "runs/val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing project/name")
    p.add_argument("--half", action="store_true", help=HALF_HELP)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--plots", dest="plots", action="store_true", default=True, help="save plots (default)")
    g.add_argument("--noplots", dest="plots", action="store_false", help="save no plots")
    opt = p.parse_args(argv)
    if isinstance(opt.weights, list) and len(opt.weights) == 1:
        opt.weights = opt.weights[0]
    return opt


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    print_args("val", opt)
    if isinstance(opt.weights, list):
        LOGGER.warning(f"WARNING: several --weights given; validating only the first, {opt.weights[0]}")
        opt.weights = opt.weights[0]
    if opt.save_conf and not opt.save_txt:
        LOGGER.warning("WARNING: --save-conf has no effect without --save-txt")
    if opt.conf_thres > 0.001 and opt.task in ("train", "val", "test"):
        LOGGER.warning(f"WARNING: --conf-thres {opt.conf_thres} > 0.001 gives invalid mAP values "
                       "(the low-confidence part of the precision-recall curve is cut off)")
    try:
        run(**vars(opt))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
