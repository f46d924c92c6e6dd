"""Run a detector on images, folders, globs, `.txt` lists, videos, webcams and streams.

    python detect.py --weights yolov5n.pt --source data/images   # a folder
    python detect.py --weights best.pt --source 'img/*.jpg' --save-txt --save-conf
    python detect.py --weights best.pt --source video.mp4        # annotated video out
    python detect.py --weights best.pt --source 0                # webcam

Results go to runs/detect/exp, exp2, ... Each output keeps its input's path below the common
folder of all inputs (``--source 'data/**/*.jpg'`` with ``camA/images/f.jpg`` and
``camB/images/f.jpg`` writes ``exp/camA/images/f.jpg``, ``exp/labels/camA/images/f.txt``, ...),
so no two inputs share an output; a rerun with ``--exist-ok`` overwrites its own files. A file
that cannot be read is skipped with a warning and counted in the closing summary. The run
folder is made when the first image has been read: a run that fails before (missing
weights, missing source) leaves none.

Exit codes of ``python detect.py``:
    0  at least one input was processed (others may have been skipped: see the closing summary)
    1  nothing could be processed: every input was skipped as unreadable
    2  bad arguments, or the weights or the source were not found / could not be loaded
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.backends import load_backend  # noqa: E402
from models.checkpoint import CheckpointError  # noqa: E402
from utils.boxes import non_max_suppression, scale_boxes, xyxy2xywh  # noqa: E402
from utils.cli import HALF_HELP, check_img_size, image_size, increment_path, parse_imgsz, positive_int, print_args  # noqa: E402
from utils.data.augment import letterbox  # noqa: E402
from utils.data.sources import Skipped, iter_frames, video_writer  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.logging import LOGGER  # noqa: E402
from utils.plots import Annotator, color, save_one_box  # noqa: E402
from utils.torch_utils import time_sync  # noqa: E402

NO_SOURCE = ("no --source given: pass what to run on, e.g. --source path/to/images (a folder), --source 'img/*.jpg', "
             "--source list.txt, --source video.mp4 or --source 0 (webcam), with --weights path/to/best.pt")


def preprocess(im0: np.ndarray, imgsz: tuple[int, int], stride: int, device: torch.device,
               half: bool = False, auto: bool = True) -> torch.Tensor:
    """BGR HWC uint8 -> letterboxed RGB 1x3xHxW float in [0, 1] on `device` (exactly `imgsz` unless `auto`)."""
    im = letterbox(im0, imgsz, stride=stride, auto=auto)[0]
    im = np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])
    t = torch.from_numpy(im).to(device)
    t = t.half() if half else t.float()
    return (t / 255.0)[None]


def describe(det: torch.Tensor, names: list[str]) -> str:
    """'4 persons, 1 bus' for one image's detections."""
    if not len(det):
        return "(no detections)"
    parts = []
    for c in det[:, 5].unique():
        n = int((det[:, 5] == c).sum())
        parts.append(f"{n} {names[int(c)]}{'s' * (n > 1)}")
    return ", ".join(parts)


@torch.inference_mode()
def run(
    weights: str | Path = ROOT / "yolov5s.pt",
    source: str | Path | None = None,
    imgsz: tuple[int, int] | int = (640, 640),
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
    device: str = "",
    view_img: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_crop: bool = False,
    nosave: bool = False,
    classes: list[int] | None = None,
    agnostic_nms: bool = False,
    augment: bool = False,
    project: str | Path = ROOT / "runs/detect",
    name: str = "exp",
    exist_ok: bool = False,
    line_thickness: int | None = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
    half: bool = False,
    vid_stride: int = 1,
    save_csv: bool = False,
    visualize: bool = False,
    data: str | Path | None = None,
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Detect objects in every frame of `source`; returns the run folder and detections per file
    (pixel xyxy, conf, class; for videos, the last frame's).

    `save_csv`: one row per detection in ``predictions.csv`` (Image Name, Prediction, Confidence).
    `visualize`: every stage's feature maps per image in ``<run>/<image stem>/`` (utils/feature_maps.py).
    `data`: a dataset YAML whose class names replace the model's (their count must match).

    Unreadable files are skipped with a warning (see ``utils.data.sources.iter_frames``).
    Raises ValueError when no `source` is given, FileNotFoundError when it names nothing."""
    if source is None or str(source) == "":
        raise ValueError(NO_SOURCE)
    save_img = not nosave
    dev = select_device(device)
    model = load_backend(weights, dev, half=half)  # names its precision; says so when --half cannot apply
    if visualize and model.fmt != "pytorch":
        raise ValueError(f"--visualize reads the feature maps of PyTorch layers: it needs a .pt checkpoint, and "
                         f"{weights} is a {model.fmt} export (run it on the .pt it was exported from)")
    stride, names, half = model.stride, _class_names(model, data), model.fp16
    imgsz = check_img_size(parse_imgsz([imgsz] if isinstance(imgsz, int) else list(imgsz)), s=stride)
    if not model.dynamic:
        if tuple(imgsz) != model.imgsz:
            LOGGER.info(f"{weights} is a fixed-shape export: letterboxing to its {model.imgsz[0]}x{model.imgsz[1]}, "
                        f"not --imgsz {imgsz[0]} {imgsz[1]} (export with --dynamic for free sizes)")
        imgsz = model.imgsz
    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    skipped: list[Skipped] = []
    frames = iter_frames(source, vid_stride=vid_stride, skipped=skipped)
    first = next(frames, None)  # opens the source: a missing one raises before the run folder exists
    if first is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        if save_csv:  # a rerun into the same folder (--exist-ok) replaces the table, never appends to it
            (save_dir / "predictions.csv").unlink(missing_ok=True)

    writers: dict[str, cv2.VideoWriter] = {}
    results: dict[str, torch.Tensor] = {}
    dt = [0.0, 0.0, 0.0]
    seen = 0
    shape = None
    files_done: set[str] = set()
    for fr in itertools.chain([first] if first is not None else [], frames):
        p = Path(fr.path)
        rel = fr.rel if fr.rel.parts else Path(p.name)
        stem = rel.stem + (f"_{fr.frame}" if fr.is_video else "")
        out_base = rel.parent / stem  # relative to the run folder (and to its labels/ and crops/<class>/)
        t0 = time_sync()
        im = preprocess(fr.image, imgsz, stride, dev, half, auto=model.dynamic)
        t1 = time_sync()
        with _features(visualize, getattr(model, "model", model), save_dir / out_base):
            pred = model(im, augment=augment)
        t2 = time_sync()
        det = non_max_suppression(pred, conf_thres, iou_thres, classes, agnostic_nms, max_det=max_det)[0]
        t3 = time_sync()
        dt[0] += t1 - t0
        dt[1] += t2 - t1
        dt[2] += t3 - t2
        seen += 1
        shape = im.shape

        im0 = fr.image.copy()
        files_done.add(str(p))
        det[:, :4] = scale_boxes(im.shape[2:], det[:, :4], im0.shape[:2]).round()
        results[str(p)] = det.cpu()
        annotator = Annotator(im0, line_width=line_thickness)
        gn = torch.tensor(im0.shape)[[1, 0, 1, 0]]
        lines = []
        crops_per_class: dict[int, int] = {}
        for *xyxy, conf, cls in reversed(det.tolist()):
            c = int(cls)
            if save_txt:
                xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
                row = (c, *xywh, conf) if save_conf else (c, *xywh)
                lines.append(("%g " * len(row)).rstrip() % row)
            if save_img or save_crop or view_img:
                label = None if hide_labels else (names[c] if hide_conf else f"{names[c]} {conf:.2f}")
                annotator.box_label(xyxy, label or "", color=color(c, bgr=True))
            if save_crop:
                k = crops_per_class[c] = crops_per_class.get(c, 0) + 1  # a.jpg, a2.jpg, ...: the same names on a rerun
                save_one_box(xyxy, fr.image, save_dir / "crops" / names[c] / f"{out_base}{k if k > 1 else ''}.jpg",
                             unique=False)
        if save_csv:
            _write_csv_rows(save_dir / "predictions.csv", (out_base if fr.is_video else rel).as_posix(), det, names)
        if save_txt:
            label_file = save_dir / "labels" / f"{out_base}.txt"
            label_file.parent.mkdir(parents=True, exist_ok=True)
            label_file.write_text("".join(f"{ln}\n" for ln in lines))
        out = annotator.result()
        if view_img:
            _show(str(p), out)
        if save_img:
            if fr.is_video:
                key = str(p)
                if key not in writers:
                    (save_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    writers[key] = video_writer(save_dir / rel, fr.fps, (out.shape[1], out.shape[0]))
                writers[key].write(out)
            else:
                (save_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(save_dir / rel), out)
        LOGGER.info(f"{fr.description}: {im.shape[2]}x{im.shape[3]} {describe(det, names)}, {(t2 - t1) * 1e3:.1f}ms")

    for w in writers.values():
        w.release()
    if seen:
        per = tuple(x / seen * 1e3 for x in dt)
        fed = model.fed_shape(tuple(shape))  # a fixed batch-N export runs N images for each one
        padded = f" (each image padded to the export's fixed batch of {fed[0]})" if fed[0] != shape[0] else ""
        LOGGER.info(f"Speed: {per[0]:.1f}ms pre-process, {per[1]:.1f}ms inference, {per[2]:.1f}ms NMS per image "
                    f"at shape {fed}{padded}")
    LOGGER.info(f"Done: {len(files_done)} file(s) processed ({seen} image(s)/frame(s)), {len(skipped)} skipped"
                + "".join(f"\n  skipped {s.path}: {s.reason}" for s in skipped))
    if seen and (save_txt or save_img or save_crop):
        n = len(list((save_dir / "labels").rglob("*.txt"))) if save_txt else 0
        LOGGER.info(f"Results saved to {save_dir}" + (f" ({n} label files in {save_dir / 'labels'})" if save_txt else ""))
    return save_dir, results


def _class_names(model: torch.nn.Module, data: str | Path | None) -> list[str]:
    """The model's class names, or those of dataset YAML `data` (ValueError if their count differs)."""
    names = list(model.names)
    if data:
        from utils.data.dataset_config import dataset_names

        given = dataset_names(data)
        if len(given) != len(names):
            raise ValueError(f"--data {data}: {len(given)} class names, but the model has {len(names)} classes")
        names = given
    return names


def _features(visualize: bool, model: torch.nn.Module, out: Path) -> contextlib.AbstractContextManager:
    """Feature-map saving for one frame into folder `out` (``<run>/<relative path>/<stem>[_frame]``,
    overwritten on a rerun), or nothing without `visualize`."""
    if not visualize:
        return contextlib.nullcontext()
    from utils.feature_maps import visualize_features

    return visualize_features(model, out)


def _write_csv_rows(path: Path, image: str, det: torch.Tensor, names: list[str]) -> None:
    """Append one row per detection (upstream's columns: Image Name, Prediction, Confidence)."""
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["Image Name", "Prediction", "Confidence"])
        for *_, conf, cls in det.tolist():
            w.writerow([image, names[int(cls)], f"{conf:.2f}"])


def _show(title: str, im: np.ndarray) -> None:
    try:
        cv2.imshow(title, im)
        cv2.waitKey(1)
    except cv2.error:
        LOGGER.warning("WARNING: --view-img needs a display and an OpenCV build with GUI support; not showing")


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Detect objects with a YOLOv5 (attention) model.")
    p.add_argument("--weights", nargs="+", type=str, default=[str(ROOT / "yolov5s.pt")], help="model checkpoint")
    p.add_argument("--source", type=str, default=None,
                   help="file, folder, glob, .txt list, video, webcam index or stream URL (required)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=image_size, default=[640], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device (0 or 0,1) or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="test-time augmentation")
    p.add_argument("--project", default=str(ROOT / "runs/detect"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=None, type=positive_int,
                   help="bounding box thickness (pixels; default: from the image size, 1 below ~500 px, 2 at 640)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help=HALF_HELP)
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--save-csv", action="store_true", help="save results in CSV format (predictions.csv)")
    p.add_argument("--visualize", action="store_true", help="save the feature maps of every stage")
    p.add_argument("--data", type=str, default=None, help="dataset YAML whose class names to use")
    opt = p.parse_args(argv)
    if opt.source is None:
        p.error(NO_SOURCE)
    if len(opt.weights) > 1:
        p.error("ensembles of several --weights are not supported; give one checkpoint")
    opt.weights = opt.weights[0]
    return opt


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0, 1 or 2, see the module docstring)."""
    opt = parse_opt(argv)
    print_args("detect", opt)
    try:
        _, results = run(**vars(opt))
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    if not results:
        LOGGER.error(f"ERROR: nothing processed: every input in {opt.source} was skipped as unreadable "
                     "(see the warnings above); pass images or videos that OpenCV can read")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
