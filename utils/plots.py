"""Drawing and plotting: the box annotator (OpenCV) and the run plots (matplotlib).

Only fonts that ship with OpenCV (Hershey) and matplotlib (DejaVu) are used, so nothing
is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# A fixed 20-colour palette (RGB), cycled by class id.
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def color(i: int, bgr: bool = False) -> tuple[int, int, int]:
    """The palette colour of class `i`."""
    c = _PALETTE[int(i) % len(_PALETTE)]
    return (c[2], c[1], c[0]) if bgr else c


class Annotator:
    """Draw labelled boxes on a BGR image (OpenCV, in place on a contiguous copy)."""

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        self.im = np.ascontiguousarray(im)
        self.lw = line_width or max(round(sum(self.im.shape[:2]) / 2 * 0.003), 2)

    def box_label(self, box, label: str = "", color: tuple[int, int, int] = (128, 128, 128),
                  txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """One rectangle and, if given, its label on a filled tab above (or inside) it."""
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        tf = max(self.lw - 1, 1)
        scale = self.lw / 3
        w, h = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, tf)[0]
        above = p1[1] - h - 3 >= 0
        q2 = (p1[0] + w, p1[1] - h - 3 if above else p1[1] + h + 3)
        cv2.rectangle(self.im, p1, q2, color, -1, cv2.LINE_AA)
        org = (p1[0], p1[1] - 2 if above else p1[1] + h + 2)
        cv2.putText(self.im, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, txt_color, tf, cv2.LINE_AA)

    def result(self) -> np.ndarray:
        return self.im


def save_one_box(xyxy, im: np.ndarray, file: Path, gain: float = 1.02, pad: int = 10, square: bool = False,
                 unique: bool = True) -> np.ndarray:
    """Crop a (slightly enlarged) box out of a BGR image and write it as `file` (with `unique`, a
    new name if `file` is taken; otherwise `file` is overwritten)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * gain + pad, (y2 - y1) * gain + pad
    if square:
        w = h = max(w, h)
    x1, x2 = int(max(cx - w / 2, 0)), int(min(cx + w / 2, im.shape[1]))
    y1, y2 = int(max(cy - h / 2, 0)), int(min(cy + h / 2, im.shape[0]))
    crop = im[y1:y2, x1:x2]
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    stem, n = file.stem, 2
    while unique and file.exists():
        file = file.with_name(f"{stem}{n}{file.suffix}")
        n += 1
    cv2.imwrite(str(file), crop)
    return crop
