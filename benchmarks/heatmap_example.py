"""The README's heatmap example, made only from this project's own data: no sample image, no official weights.

    python benchmarks/heatmap_example.py            # about 5 minutes on 2 CPU cores

Trains ``yolov5n_C3CBAM.yaml`` (CBAM at the end of every backbone C3 bottleneck) from
scratch on the synthetic shapes dataset (data/synthetic.py, seed 0; the recipe of
benchmarks/train_synthetic.py), then runs ``heatmap.py`` on a validation image that the
model never trained on and puts three of its overlays side by side in
benchmarks/results/heatmap_synthetic.png:

1. the spatial gate of the CBAM block in backbone layer 2 (stride 4), the map that block
   multiplies its features by;
2. the same gate in backbone layer 4 (stride 8);
3. Grad-CAM of layer 4 for the highest-scoring detection (box drawn). Deeper layers (6, 8)
   are 20x20 and 10x10 maps at this size, too coarse to show much on these small shapes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import heatmap  # noqa: E402
from data.synthetic import make_synthetic  # noqa: E402
from utils.logging import LOGGER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PANELS = ("L2_CBAM_spatial_gate", "L4_CBAM_spatial_gate", "L4_CBAM_gradcam")


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    """`img` with a white strip above it holding `text` (OpenCV's built-in Hershey font)."""
    strip = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, img])


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5n_C3CBAM.yaml")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--imgsz", type=int, default=160, help="training size")
    p.add_argument("--heat-imgsz", type=int, default=320, help="inference size for the heatmaps")
    p.add_argument("--image", type=int, default=0, help="which validation image")
    p.add_argument("--out", default=str(RESULTS / "heatmap_synthetic.png"))
    opt = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_synthetic(tmp / "synthetic", n_train=200, n_val=50, imgsz=320, seed=0)
        hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
        hyp["lr0"] = 0.002
        (tmp / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--weights", "", "--cfg", opt.cfg,
               "--img", str(opt.imgsz), "--batch-size", "16", "--epochs", str(opt.epochs), "--optimizer", "AdamW",
               "--hyp", str(tmp / "hyp.yaml"), "--workers", "2", "--noplots", "--project", str(tmp / "runs")]
        LOGGER.info(" ".join(cmd))
        log = tmp / "train.log"
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        weights = tmp / "runs" / "exp" / "weights" / "best.pt"
        if rc or not weights.is_file():
            shutil.copy(log, Path(tempfile.gettempdir()) / "heatmap_example_train.log")
            raise SystemExit(f"training failed (exit {rc}); log in {tempfile.gettempdir()}/heatmap_example_train.log")
        image = sorted((tmp / "synthetic" / "images" / "val").iterdir())[opt.image]
        written = heatmap.run(weights, image, imgsz=opt.heat_imgsz, project=tmp / "heat", name="exp")
        by_tag = {f.stem.removeprefix(image.stem + "_"): f for f in written}
        missing = [t for t in PANELS if t not in by_tag]
        if missing:
            raise SystemExit(f"heatmap.py wrote {sorted(by_tag)}, not {missing}: was anything detected?")
        titles = ("layer 2: CBAM spatial gate", "layer 4: CBAM spatial gate", "layer 4: Grad-CAM")
        panels = [_caption(cv2.imread(str(by_tag[t])), s) for t, s in zip(PANELS, titles)]
        out = Path(opt.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.hstack(panels))
    LOGGER.info(f"saved {out}")
    return out


if __name__ == "__main__":
    main()
