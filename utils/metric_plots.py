"""Plots of validation metrics: PR, F1, P and R curves and the confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global backend
switch and no GUI), with matplotlib's bundled DejaVu fonts only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.logging import LOGGER
from utils.metrics import APResult, ConfusionMatrix, smooth

_MAX_LEGEND = 20  # per-class lines get a legend only up to this many classes


def _figure(size: tuple[float, float] = (9, 6)) -> tuple[Figure, object]:
    fig = Figure(figsize=size, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(111)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    return path


def _class_names(classes: np.ndarray, names: list[str] | dict | None) -> list[str]:
    if names is None:
        return [str(int(c)) for c in classes]
    if isinstance(names, dict):
        return [str(names.get(int(c), int(c))) for c in classes]
    return [str(names[int(c)]) if int(c) < len(names) else str(int(c)) for c in classes]


def plot_pr_curve(result: APResult, path: Path, names: list[str] | dict | None = None) -> Path:
    """Precision against recall at IoU 0.5, one grey/coloured line per class plus the class mean."""
    fig, ax = _figure()
    px, pr = result.curves.px, result.curves.pr
    labels = _class_names(result.classes, names)
    few = 0 < len(labels) <= _MAX_LEGEND
    for i, name in enumerate(labels):
        if few:
            ax.plot(px, pr[i], linewidth=1, label=f"{name} {result.ap[i, 0]:.3f}")
        else:
            ax.plot(px, pr[i], linewidth=1, color="grey", alpha=0.5)
    if len(labels):
        ax.plot(px, pr.mean(0), linewidth=3, color="blue",
                label=f"all classes {result.ap[:, 0].mean():.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_metric_curve(px: np.ndarray, curves: np.ndarray, path: Path, names: list[str],
                      ylabel: str, xlabel: str = "Confidence") -> Path:
    """One metric against confidence: per-class lines plus the smoothed class mean, whose peak
    is marked in the legend."""
    fig, ax = _figure()
    few = 0 < len(names) <= _MAX_LEGEND
    for i, name in enumerate(names):
        if few:
            ax.plot(px, curves[i], linewidth=1, label=name)
        else:
            ax.plot(px, curves[i], linewidth=1, color="grey", alpha=0.5)
    if len(names):
        mean = smooth(curves.mean(0), 0.05)
        k = int(mean.argmax())
        ax.plot(px, mean, linewidth=3, color="blue", label=f"all classes {mean[k]:.2f} at {px[k]:.3f}")
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-{xlabel} curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_metric_curves(result: APResult, save_dir: Path, names: list[str] | dict | None = None,
                       prefix: str = "") -> list[Path]:
    """Write PR_curve.png, F1_curve.png, P_curve.png and R_curve.png into `save_dir`."""
    save_dir = Path(save_dir)
    labels = _class_names(result.classes, names)
    c = result.curves
    return [
        plot_pr_curve(result, save_dir / f"{prefix}PR_curve.png", names),
        plot_metric_curve(c.px, c.f1, save_dir / f"{prefix}F1_curve.png", labels, "F1"),
        plot_metric_curve(c.px, c.precision, save_dir / f"{prefix}P_curve.png", labels, "Precision"),
        plot_metric_curve(c.px, c.recall, save_dir / f"{prefix}R_curve.png", labels, "Recall"),
    ]


_MAX_TICKS = 30  # class tick labels per axis; with more classes every k-th is labelled


def confusion_figure(cm: ConfusionMatrix, names: list[str] | dict | None = None, normalize: bool = True) -> Figure:
    """The matrix as a heat map (columns = true class, rows = predicted; last = background).

    Up to 30 classes every row and column is labelled; with more, every k-th class is (k =
    ceil(nc / 30)), and "background" always is. Cell values are written up to 10 classes."""
    nc = cm.nc
    data = cm.normalized() if normalize else cm.matrix.astype(np.float64)
    data = np.where(data < 0.005, np.nan, data)  # leave near-empty cells blank
    labels = [*_class_names(np.arange(nc), names), "background"]
    size = 12 if nc > 10 else 8
    fig, ax = _figure((size, size * 0.8))
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    step = max(1, -(-nc // _MAX_TICKS))
    ticks = [*range(0, nc, step), nc]
    fontsize = 10 if nc <= 10 else 8 if nc < _MAX_TICKS else 7
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=fontsize)
    if nc <= 10:
        for (i, j), v in np.ndenumerate(data):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                        fontsize=8, color="white" if v > 0.5 * np.nanmax(data) else "black")
    every = f", every {step}th class labelled" if step > 1 else ""
    ax.set(xlabel="True", ylabel="Predicted",
           title="Confusion matrix" + (" (normalized)" if normalize else "") + every)
    return fig


def plot_confusion_matrix(cm: ConfusionMatrix, path: Path, names: list[str] | dict | None = None,
                          normalize: bool = True) -> Path:
    """Write :func:`confusion_figure` to `path` (PNG)."""
    return _save(confusion_figure(cm, names, normalize), path)


def plot_all(result: APResult | None, cm: ConfusionMatrix | None, save_dir: Path,
             names: list[str] | dict | None = None) -> list[Path]:
    """Everything val.py draws; failures are logged, never raised (plots are a by-product)."""
    out: list[Path] = []
    try:
        if cm is not None:
            out.append(plot_confusion_matrix(cm, Path(save_dir) / "confusion_matrix.png", names))
        if result is not None:
            out.extend(plot_metric_curves(result, save_dir, names))
    except Exception as e:  # noqa: BLE001 - a plot must not end a validation run
        LOGGER.warning(f"WARNING: plotting failed: {type(e).__name__}: {e}")
    return out
