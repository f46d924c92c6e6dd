"""Heatmaps of attention layers on an image: the block's own map and Grad-CAM for a detection.

    python heatmap.py --weights runs/train/exp/weights/best.pt --source bus.jpg
    python heatmap.py --weights best.pt --source bus.jpg --layers 9 --det 2

For every attention layer (default: each layer of the model that holds an attention
block; for C3 variants, the block of its last bottleneck) two kinds of PNG overlays are
written to runs/heatmap/exp*/:

- ``<image>_L<i>_<Block>_<map>.png``: the block's own attention map (see models/heatmaps.py);
- ``<image>_L<i>_<Block>_gradcam.png``: Grad-CAM of that layer for one detection (the
  highest-scoring one, or ``--det k``), whose box is drawn on the overlay with its class and score.

Each overlay has a colour bar with its value scale on the right, black marks showing the
map's own range: gates are shown on the fixed scale 0-1 (a nearly flat gate looks flat),
other block maps from 0 to their maximum, Grad-CAM (relative by construction) 0-1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.checkpoint import CheckpointError, load_model  # noqa: E402
from models.heatmaps import (  # noqa: E402
    attention_layers,
    attention_maps,
    capture_inputs,
    grad_cam,
    overlay,
    unletterbox,
    value_range,
)
from utils.boxes import non_max_suppression, scale_boxes  # noqa: E402
from utils.cli import image_size, increment_path  # noqa: E402
from utils.data.augment import letterbox  # noqa: E402
from utils.data.images import read_image  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.logging import LOGGER  # noqa: E402
from utils.plots import Annotator  # noqa: E402


def pick_layers(model: torch.nn.Module, layers: list[int] | None) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, attention block) pairs: one block per chosen top-level layer."""
    chosen = []
    for i, layer in enumerate(model.model):
        if layers is not None and i not in layers:
            continue
        blocks = attention_layers(layer)
        if blocks:
            chosen.append((i, blocks[-1][1]))
        elif layers is not None:
            raise ValueError(f"layer {i} ({layer.type}) holds no attention block")
    if not chosen:
        raise ValueError("the model has no attention layers; give --layers of attention layers")
    return chosen


def run(weights: str | Path, source: str | Path, imgsz: int = 640, layers: list[int] | None = None, det: int = 0,
        conf_thres: float = 0.25, iou_thres: float = 0.45, device: str = "cpu",
        project: str | Path = ROOT / "runs/heatmap", name: str = "exp", exist_ok: bool = False) -> dict[Path, np.ndarray]:
    """Write the overlays for one image; returns each written file with its map at the image's size."""
    dev = select_device(device, verbose=False)
    model = load_model(weights, dev, fuse=False)
    im0 = read_image(source)  # FileNotFoundError "image not found", ValueError "not a readable image"
    stride = int(model.stride.max())
    im, ratio, pad = letterbox(im0, imgsz, stride=stride, auto=True)
    x = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])).float().div(255)[None].to(dev)
    geometry = (ratio, pad, im.shape[:2])

    chosen = pick_layers(model, layers)
    inputs, out = capture_inputs(model, [b for _, b in chosen], x)
    pred = out[0]
    dets = non_max_suppression(pred, conf_thres, iou_thres)[0]
    target = None
    if len(dets) > det:
        box, cls = dets[det, :4], int(dets[det, 5])
        # the prediction behind this detection: same box after NMS (IoU 1) and highest score
        from utils.boxes import box_iou, xywh2xyxy

        iou = box_iou(box[None], xywh2xyxy(pred[0, :, :4]))[0]
        index = int((iou * pred[0, :, 4] * pred[0, :, 5 + cls]).argmax())
        centre = (float(box[0] + box[2]) / 2 / x.shape[3], float(box[1] + box[3]) / 2 / x.shape[2])
        box0 = scale_boxes(x.shape[2:], box[None].clone(), im0.shape[:2])[0].tolist()
        target = (index, cls, centre, box0, float(dets[det, 4]))
        LOGGER.info(f"explaining detection {det}: {model.names[cls]} {float(dets[det, 4]):.2f} at "
                    f"{[round(v) for v in box0]}")
    else:
        LOGGER.warning(f"WARNING: {source}: fewer than {det + 1} detections above conf {conf_thres}; "
                       "writing block maps only, no Grad-CAM")

    save_dir = increment_path(Path(project) / name, exist_ok=exist_ok, mkdir=True)
    stem = Path(source).stem
    written: dict[Path, np.ndarray] = {}
    for (i, block), xin in zip(chosen, inputs):
        tag = f"{stem}_L{i}_{type(block).__name__}"
        point = target[2] if target else (0.5, 0.5)
        for map_name, m in attention_maps(block, xin, point).items():
            full = unletterbox(m[0].cpu().numpy(), im0.shape[:2], geometry)
            f = save_dir / f"{tag}_{map_name}.png"
            cv2.imwrite(str(f), overlay(im0, full, value_range(map_name, full)))
            written[f] = full
        if target:
            cam = grad_cam(model, block, x, target[0], target[1])
            full = unletterbox(cam, im0.shape[:2], geometry)
            ann = Annotator(overlay(im0, full, value_range("gradcam", full)))
            ann.box_label(target[3], f"{model.names[target[1]]} {target[4]:.2f}", color=(255, 255, 255),
                          txt_color=(0, 0, 0))
            f = save_dir / f"{tag}_gradcam.png"
            cv2.imwrite(str(f), ann.result())
            written[f] = full
    LOGGER.info(f"{len(written)} heatmaps saved to {save_dir}")
    return written


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Attention maps and Grad-CAM overlays for one image.")
    p.add_argument("--weights", required=True, help="model checkpoint")
    p.add_argument("--source", required=True, help="an image")
    p.add_argument("--imgsz", "--img", "--img-size", type=image_size, default=640)
    p.add_argument("--layers", nargs="+", type=int, default=None, help="layer indices (default: all attention layers)")
    p.add_argument("--det", type=int, default=0, help="which detection to explain (0 = highest score)")
    p.add_argument("--conf-thres", type=float, default=0.25)
    p.add_argument("--iou-thres", type=float, default=0.45)
    p.add_argument("--device", default="cpu")
    p.add_argument("--project", default=str(ROOT / "runs/heatmap"))
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    try:
        run(**vars(opt))
    except (FileNotFoundError, CheckpointError, ValueError) as e:
        LOGGER.error(f"ERROR: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
