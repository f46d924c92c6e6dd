"""Drawing and plotting: the box annotator (OpenCV) and the run plots (matplotlib).

Only fonts that ship with OpenCV (Hershey) and matplotlib (DejaVu) are used, so nothing
is ever downloaded.
"""

from __future__ import annotations

import contextlib
import math
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
        side = sum(self.im.shape[:2]) / 2  # mean side in pixels
        self.lw = line_width or max(round(side * 0.003), 1)  # 1 px below ~500 px, 2 at 640, 3 at 1000
        # text follows the image too (0.67 at 640 px as before); 0.3 (glyphs ~7 px tall) is the
        # smallest that stays legible, so a 160-px image's labels no longer hide its objects
        # sized from the short side: on a 2000x100 strip, text as tall as the mean side allows would
        # hide the objects
        self.font_scale = max(min(self.lw / 3, min(self.im.shape[:2]) / 960), 0.3)

    def box_label(self, box, label: str = "", color: tuple[int, int, int] = (128, 128, 128),
                  txt_color: tuple[int, int, int] = (255, 255, 255)) -> None:
        """One rectangle and, if given, its label on a filled tab above (or inside) it, kept inside the
        image (moved left at the right edge, smaller when wider than the image)."""
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, color, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        tf = max(self.lw - 1, 1)
        scale = self.font_scale
        w, h = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, tf)[0]
        width = self.im.shape[1]
        if w > width:  # a label wider than the image: smaller text rather than text cut off
            scale *= width / w
            w, h = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, tf)[0]
        x = max(min(p1[0], width - w), 0)  # the tab slides left to stay inside the image
        above = p1[1] - h - 3 >= 0
        t1 = (x, p1[1])
        q2 = (x + w, p1[1] - h - 3 if above else p1[1] + h + 3)
        cv2.rectangle(self.im, t1, q2, color, -1, cv2.LINE_AA)
        org = (x, p1[1] - 2 if above else p1[1] + h + 2)
        cv2.putText(self.im, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, txt_color, tf, cv2.LINE_AA)

    def result(self) -> np.ndarray:
        return self.im


def crop_box(xyxy, im: np.ndarray, gain: float = 1.02, pad: int = 10, square: bool = False) -> np.ndarray:
    """The part of image `im` inside an xyxy box enlarged by `gain` and `pad` pixels (clipped to the image)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * gain + pad, (y2 - y1) * gain + pad
    if square:
        w = h = max(w, h)
    x1, x2 = int(max(cx - w / 2, 0)), int(min(cx + w / 2, im.shape[1]))
    y1, y2 = int(max(cy - h / 2, 0)), int(min(cy + h / 2, im.shape[0]))
    return im[y1:y2, x1:x2]


def save_one_box(xyxy, im: np.ndarray, file: Path, gain: float = 1.02, pad: int = 10, square: bool = False,
                 unique: bool = True) -> np.ndarray:
    """Crop a (slightly enlarged) box out of a BGR image and write it as `file` (with `unique`, a
    new name if `file` is taken; otherwise `file` is overwritten)."""
    crop = crop_box(xyxy, im, gain, pad, square)
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    stem, n = file.stem, 2
    while unique and file.exists():
        file = file.with_name(f"{stem}{n}{file.suffix}")
        n += 1
    cv2.imwrite(str(file), crop)
    return crop


# offsets (points) tried in turn for a point's label: right/left, above/below, then further out
_LABEL_OFFSETS = [(dx, dy) for r in (1, 2, 3, 4) for dy in (3 * r, -9 * r, 12 * r - 3, -15 * r)
                  for dx in (4, -4)]


def label_points(ax, xs, ys, texts, fontsize: float = 7, pad: float = 2.0) -> list:
    """Annotate points (data coordinates) with `texts` so that no two labels overlap.

    Each label tries offsets around its point in turn (right/left, above/below, then further
    out) and takes the first whose box (in display pixels, grown by `pad`) overlaps no label
    placed before, else the one of least overlap; a label moved away from its point gets a thin
    leader line. Call after everything is plotted and the axis limits are final (the layout is
    applied first). Returns the annotation artists.
    """
    fig = ax.figure
    fig.canvas.draw()  # final limits and layout: display coordinates are what the saved file shows
    renderer = fig.canvas.get_renderer()
    placed, out = [], []
    order = sorted(range(len(texts)), key=lambda i: (-float(ys[i]), float(xs[i])))
    for i in order:
        best, best_cost = None, None
        for dx, dy in _LABEL_OFFSETS:
            a = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            ha="left" if dx > 0 else "right", va="bottom")
            bb = a.get_window_extent(renderer).expanded(1, 1).padded(pad)
            cost = sum(_overlap(bb, p) for p in placed)
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (a, bb, dx, dy), cost
            else:
                a.remove()
            if cost == 0:
                break
        a, bb, dx, dy = best
        if abs(dy) > 12:  # far from its point: the same label with a leader line
            a.remove()
            a = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            ha="left" if dx > 0 else "right", va="bottom",
                            arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=0, shrinkB=2))
        placed.append(bb)
        out.append(a)
    return out


def _overlap(a, b) -> float:
    """Area (pixels^2) shared by two matplotlib Bbox objects."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def pad_flat_axis(ax, rel: float = 0.02) -> None:
    """Give each axis of `ax` whose data nearly coincide a span of `rel` of their value, centred
    on it (a learning rate of 1e-4 on one epoch gets 0.99e-4..1.01e-4, not matplotlib's
    -0.04..0.04 labelled "0.00"), so that a difference of 1e-6 is drawn as the nothing it is
    instead of filling the axis as "1e-6 + 1.776e-1". No offset notation; small or large
    values get scientific tick labels (x 1e-4). All-zero or empty axes are left as they are."""
    ax.ticklabel_format(useOffset=False)
    with contextlib.suppress(AttributeError):  # a non-scalar formatter (dates, categories): keep it
        ax.ticklabel_format(style="sci", scilimits=(-3, 4))
    data = ax.dataLim
    for (lo, hi), set_ in ((data.intervaly, ax.set_ylim), (data.intervalx, ax.set_xlim)):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            continue  # no data on this axis
        mid, need = (lo + hi) / 2, max(abs(lo), abs(hi)) * rel
        if 0 < need and hi - lo < need:
            set_(mid - need / 2, mid + need / 2)


def epoch_axis(ax, last_epoch: float) -> None:
    """An x axis of whole epochs 0..`last_epoch` (half an epoch of margin, so that a run of one
    epoch is a point in the middle, not a line from -0.04 to 0.04), y values without offset."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    pad_flat_axis(ax)
    ax.set_xlim(-0.5, float(last_epoch) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
