"""Statistics of a comparison: is model B's mAP on a validation set different from model A's?

The difference in mAP50 and mAP50-95 between two detectors evaluated on the same images is
given with a 95% confidence interval from a **paired bootstrap over validation images**: each
resample draws as many images as the set holds, with replacement; both models are scored on
the same resampled images; mAP is recomputed from the stored per-image match statistics
(which detection matched which label, at each IoU threshold), never by running a model again.
This is the bootstrap the PASCAL VOC challenge used to rank methods (M. Everingham, S. M. A.
Eslami, L. Van Gool, C. K. I. Williams, J. Winn, A. Zisserman, "The PASCAL Visual Object
Classes Challenge: A Retrospective", IJCV 111(1), 2015, section 3.5), with mAP in place of AP.

With several training seeds, the interval covers the spread between training runs too. Each
resample adds to the difference of the seed-means a training-seed term, ``sd x sqrt(1/n_a +
1/n_b) x T``: ``sd`` is the seed standard deviation of the full-set mAP pooled over the two models
compared (the two-sample t-test's pooled estimate, ``df = n_a + n_b - 2`` degrees of freedom),
and ``T`` takes Student-t values with ``df`` degrees of freedom at stratified quantiles, which
allows for ``sd`` itself being estimated from few runs. Pooling assumes that a block does not
change how much training runs differ; it is what lets a config with a single seed be judged
beside a baseline with three without its one seed's luck being taken for an effect (if the
block makes training less stable, one seed cannot show it: train two or more). Only the two
models compared enter a row's interval, so adding a row never moves another. The interval is
conservative: the part of the seed-to-seed spread that comes from which images each run gets
right is counted by the image bootstrap too. When neither model has two seeds (``df = 0``:
checkpoints compared as files, or one seed each), the interval covers the choice of val images
only and the verdict is about those trained weights, not about the configs
(:attr:`Difference.seed_df`).

The verdict comes from the interval alone: ``better`` (it lies above 0), ``worse`` (below 0) or
``no detectable difference`` (it holds 0). The last is given with the smallest difference the
comparison could have detected (:attr:`Difference.detectable`), so that "no detectable
difference, ±0.05" is not read as "no effect".

With many rare classes (coco128: 71 classes on 126 labelled images) a resample drops some
classes altogether, and since mAP averages the classes present, the resampled values are not
centred on the full-set one: the interval then sits lopsided around Δ. Few, common classes
(NEU-DET: 6 on 360 images) do not show this.

Resampled mAP equals :func:`utils.metrics.summarize` on the resampled image list exactly
(a test checks it): an image drawn k times contributes its detections and labels k times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.metrics import EPS, compute_ap_columns

METRICS = ("mAP50", "mAP50-95")
Z_POWER = 0.8416212335729143  # standard normal quantile at 0.80: detectable = (z_level + Z_POWER) * SE without seeds
MIN_LABELLED_IMAGES = 2  # a bootstrap over fewer labelled images than this resamples nothing


@dataclass(frozen=True)
class MatchStats:
    """Per-image match statistics of one model on one set of images (what val.py computes).

    Arrays: ``tp`` (n_det, n_iou) bool, true positive at each IoU threshold; ``conf`` (n_det,)
    float32 confidence; ``pred_cls`` (n_det,) int class; ``det_image`` (n_det,) int index into
    ``images``; ``target_cls`` (n_lab,) int class of every label; ``lab_image`` (n_lab,) int.
    ``images``: the image paths, the key that pairs two models' statistics.
    """

    images: tuple[str, ...]
    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    det_image: np.ndarray
    target_cls: np.ndarray
    lab_image: np.ndarray

    @classmethod
    def from_val(cls, per_image: list[tuple]) -> MatchStats:
        """From val.py's ``per_image`` list: ``(path, correct (n, n_iou), conf (n,), pred_cls (n,),
        target_cls (m,))`` per image, tensors or arrays."""
        def arr(x) -> np.ndarray:
            return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

        n_iou = next((arr(r[1]).shape[1] for r in per_image if arr(r[1]).ndim == 2), 10)
        tp = [arr(r[1]).reshape(-1, n_iou).astype(bool) for r in per_image]
        labs = [arr(r[4]).reshape(-1) for r in per_image]
        return cls(
            images=tuple(str(r[0]) for r in per_image),
            tp=np.concatenate(tp) if tp else np.zeros((0, n_iou), bool),
            conf=np.concatenate([arr(r[2]).reshape(-1) for r in per_image]).astype(np.float32) if per_image
            else np.zeros(0, np.float32),
            pred_cls=np.concatenate([arr(r[3]).reshape(-1) for r in per_image]).astype(np.int32) if per_image
            else np.zeros(0, np.int32),
            det_image=np.repeat(np.arange(len(tp), dtype=np.int32), [len(t) for t in tp]),
            target_cls=np.concatenate(labs).astype(np.int32) if labs else np.zeros(0, np.int32),
            lab_image=np.repeat(np.arange(len(labs), dtype=np.int32), [len(x) for x in labs]),
        )

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (images as a string array); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object: numpy would append .npz to a name without it
            np.savez_compressed(f, images=np.array(self.images, dtype=str), tp=self.tp, conf=self.conf,
                                pred_cls=self.pred_cls, det_image=self.det_image, target_cls=self.target_cls,
                                lab_image=self.lab_image)
        return path

    @classmethod
    def load(cls, path: str | Path) -> MatchStats:
        """Read a file written by :meth:`save`. ValueError naming the file when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(images=tuple(str(s) for s in z["images"]), tp=z["tp"], conf=z["conf"],
                           pred_cls=z["pred_cls"], det_image=z["det_image"], target_cls=z["target_cls"],
                           lab_image=z["lab_image"])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a match-statistics file ({type(e).__name__}: {e})") from None

    def reordered(self, images: tuple[str, ...]) -> MatchStats:
        """The same statistics with images in the order of `images` (another model's list).

        ValueError when the two lists are not the same set of images: a paired comparison needs
        both models scored on the same validation images."""
        if images == self.images:
            return self
        pos = {p: i for i, p in enumerate(self.images)}
        missing = [p for p in images if p not in pos]
        if missing or len(images) != len(self.images):
            raise ValueError(f"the two models were validated on different images ({len(self.images)} and "
                             f"{len(images)} images, e.g. {missing[:1] or list(set(self.images) - set(images))[:1]}): "
                             "a paired comparison needs the same validation set")
        new = np.array([pos[p] for p in images])  # new index -> old index
        old_to_new = np.empty_like(new)
        old_to_new[new] = np.arange(len(new))
        return MatchStats(images, self.tp, self.conf, self.pred_cls, old_to_new[self.det_image].astype(np.int32),
                          self.target_cls, old_to_new[self.lab_image].astype(np.int32))


class _Scorer:
    """mAP50 and mAP50-95 of one :class:`MatchStats` for many image weightings at once.

    A resample that draws image i k times holds k copies of each of its detections; sorted by
    confidence (stable, as :func:`utils.metrics.ap_per_class` sorts), the copies are adjacent.
    AP depends on the precision/recall points only through the envelope and its linear
    interpolation at 101 recall values, and of the points sharing a recall only the first and
    the last enter it; inside a run of copies of one true positive the envelope is flat. So
    per IoU threshold it is enough to keep, for every true positive, its first and last copy
    and the last point before the next true positive (3 points instead of one per detection),
    which gives the same floating-point AP as recomputing it on the expanded list (a test
    checks it) at a cost that grows with the number of true positives, not of detections."""

    MAX_CELLS = 20_000_000  # detections x resamples of one class held at once (160 MB of float64)

    def __init__(self, s: MatchStats):
        order = np.argsort(-s.conf.astype(np.float64), kind="stable")
        self.n_images = len(s.images)
        self.n_iou = s.tp.shape[1]
        self.per_class = [self._class_tables(s, order, c) for c in np.unique(s.target_cls)]

    def _class_tables(self, s: MatchStats, order: np.ndarray, c: int) -> tuple:
        """For class `c`: labels per image (n_images,); the image of each of its detections in confidence
        order; the positions holding a true positive at any threshold, U; per threshold, which of U are
        its true positives."""
        idx = order[s.pred_cls[order] == c]
        tp = s.tp[idx]
        n_lab = np.bincount(s.lab_image[s.target_cls == c], minlength=self.n_images).astype(np.float64)
        u = np.flatnonzero(tp.any(1))
        return n_lab, s.det_image[idx], u, [np.flatnonzero(tp[u, j]) for j in range(self.n_iou)]

    def maps(self, counts: np.ndarray) -> np.ndarray:
        """(n_resamples, 2) mAP50 and mAP50-95 with image i counted ``counts[b, i]`` times in resample b
        (a row of ones: the plain mAP). `counts`: (n_resamples, n_images) or (n_images,)."""
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        n_det = max((len(img) for _, img, _, _ in self.per_class), default=1)
        step = max(1, self.MAX_CELLS // max(n_det, 1))  # (detections x resamples) held at once
        return np.concatenate([self._maps(counts[k:k + step]) for k in range(0, len(counts), step)])

    def _maps(self, counts: np.ndarray) -> np.ndarray:
        n_boot = len(counts)
        ap_sum, n_cls = np.zeros((n_boot, self.n_iou)), np.zeros(n_boot)
        for n_lab, img, u, columns in self.per_class:
            n_gt = counts @ n_lab  # (B,) labels of the class in each resample
            present = n_gt > 0  # a class without labels in a resample is left out, as ap_per_class does
            w = counts.T[img]  # (n, B) copies of each detection; detections first: a fast cumsum
            cum = w.cumsum(0)
            w_u = w[u].T  # (B, U) copies of each true positive
            before_u = (cum[u] - w[u]).T  # (B, U) detections ranked above it, copies counted
            total = cum[-1] if len(cum) else np.zeros(n_boot)
            for j, cols in enumerate(columns):
                if len(cols):
                    ap = _ap_from_true_positives(w_u[:, cols], before_u[:, cols], total, n_gt)
                    ap_sum[:, j] += np.where(present, ap, 0.0)
            n_cls += present
        ap = ap_sum / np.maximum(n_cls, 1)[:, None]
        return np.stack((ap[:, 0], ap.mean(1)), 1)


def _ap_from_true_positives(wt: np.ndarray, before: np.ndarray, total: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """AP (B,) of one class at one IoU threshold from its true positives alone.

    `wt` (B, m): copies of each true positive (in confidence order); `before` (B, m): detections
    (copies counted) ranked above it; `total` (B,): all detections; `n_gt` (B,): labels. The
    curve's points, each (true positives so far, detections so far): the last one before the
    first true positive, then per true positive its first copy, its last copy and the last
    point before the next one (or the end). A true positive with no copies gives three points
    inside the run before it, which change nothing."""
    t_before = wt.cumsum(1) - wt
    one = np.minimum(wt, 1.0)
    after = np.concatenate((before[:, 1:], total[:, None]), 1)
    t = np.stack((t_before + one, t_before + wt, t_before + wt), 2).reshape(len(wt), -1)
    n = np.stack((before + one, before + wt, after), 2).reshape(len(wt), -1)
    t = np.concatenate((np.zeros((len(wt), 1)), t), 1)
    n = np.concatenate((before[:, :1], n), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n > 0, t / n, 1.0)  # 0 detections so far: the curve's opening point, precision 1
    recall = t / (n_gt[:, None] + EPS)
    return ap_of_curves(recall, precision)


def ap_of_curves(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """:func:`utils.metrics.compute_ap` (with full-recall credit) of every row of `recall` and
    `precision` (B, n): AP (B,)."""
    b = len(recall)
    ap, _, _ = compute_ap_columns(recall.T, precision.T) if b else (np.zeros(0), None, None)
    return ap


def image_resamples(n_images: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_images) int counts: how often each image is drawn in each bootstrap resample
    of `n_images` images with replacement."""
    draws = rng.integers(0, n_images, size=(n_boot, n_images))
    return np.stack([np.bincount(d, minlength=n_images) for d in draws])


def resampled_maps(stats: MatchStats, counts: np.ndarray) -> np.ndarray:
    """(n_boot, 2) mAP50 and mAP50-95 of `stats` on each resample of `counts` (n_boot, n_images)."""
    return _Scorer(stats).maps(counts)


@dataclass(frozen=True)
class Difference:
    """One metric's difference, config minus baseline, with its bootstrap interval.

    ``delta``: on the full validation set, mean over seeds; ``low``, ``high``: the interval at
    ``level``; ``se``: the standard error read off the interval, (high - low) / (2 q), q the
    two-sided quantile at ``level`` (normal without a seed term, Student t with ``seed_df``
    degrees of freedom with one); ``detectable``: the smallest true difference this comparison
    would call better or worse with 80% probability, (q + q80) x se, q80 the 80% quantile of the
    same distribution (an approximation where the interval mixes image and seed parts);
    ``seed_sd``, ``seed_df``: the pooled training-seed standard deviation of the two models and its
    degrees of freedom (0: neither had two seeds, so the interval holds the choice of val images
    only)."""

    metric: str
    delta: float
    low: float
    high: float
    se: float
    detectable: float
    level: float = 0.95
    labelled_images: int = MIN_LABELLED_IMAGES  # val images with at least one label
    seed_sd: float = 0.0
    seed_df: int = 0

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no detectable difference``: from the interval alone; ``not
        measurable`` when fewer than :data:`MIN_LABELLED_IMAGES` val images have labels (the
        interval is then [0, 0] or undefined: no evidence either way)."""
        if self.labelled_images < MIN_LABELLED_IMAGES:
            return f"not measurable ({self.labelled_images} labelled val image(s))"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no detectable difference"

    def interval(self, digits: int = 3) -> str:
        """``[low, high]`` rounded to `digits`."""
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def describe(self, digits: int = 3) -> str:
        """The verdict; a ``no detectable difference`` carries the detectable size (``±0.021``), or says
        that the two scored the same on every resample (a model against itself)."""
        v = self.verdict
        if v != "no detectable difference":
            return v
        return f"{v} (identical on every resample)" if self.detectable == 0 else f"{v} (±{self.detectable:.{digits}f})"

    def describe_rounded(self, digits: int = 3) -> str:
        """:meth:`describe`; a ``better`` / ``worse`` whose interval rounds to touch 0 at `digits`
        (``[+0.000, +0.012]``) says so, so that the printed interval and the verdict agree."""
        v = self.describe(digits)
        edge = self.low if v == "better" else self.high if v == "worse" else None
        if edge is not None and round(edge, digits) == 0:
            v += f" (interval edge {edge:+.1e})"
        return v


def seed_spread(full: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Pooled training-seed standard deviation of mAP50 and mAP50-95, and its degrees of freedom.

    `full`: per model, an (n_seeds, 2) array of full-set (mAP50, mAP50-95), one row per seed.
    Returns ((2,) sd, df) with df = sum(n_seeds - 1) over the models; ((0, 0), 0) when no model
    has two seeds."""
    df = sum(len(f) - 1 for f in full)
    if df == 0:
        return np.zeros(2), 0
    ss = sum(((f - f.mean(0)) ** 2).sum(0) for f in full)
    return np.sqrt(ss / df), df


def compare(baseline: list[MatchStats], other: list[MatchStats], n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, Difference]:
    """Paired bootstrap of mAP50 and mAP50-95, `other` minus `baseline` (one MatchStats per seed).

    Deterministic for a given `seed`. Returns ``{"mAP50": Difference, "mAP50-95": Difference}``.
    ValueError when a list is empty, `level` is not in (0, 1), `n_boot` leaves a tail of the
    interval without a resample (fewer than 2 / (1 - level)), or the runs were validated on
    different images or labels, or name an image twice.
    """
    return compare_many(baseline, {"other": other}, n_boot, seed, level)["other"]


def compare_many(baseline: list[MatchStats], others: dict[str, list[MatchStats]], n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Difference]]:
    """:func:`compare` for several configs against one baseline, all on the same image resamples
    (the baseline is scored once); each config's result is what :func:`compare` gives for it
    alone, whatever the other configs and their order. Returns ``{name: {"mAP50": Difference, "mAP50-95": Difference}}``."""
    if not baseline or any(not v for v in others.values()):
        raise ValueError("every model needs the match statistics of at least one run")
    if not 0 < level < 1 or n_boot * (1 - level) / 2 < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot large enough for each tail of the interval to hold a "
                         f"resample (n_boot >= {math.ceil(2 / (1 - level)) if 0 < level < 1 else '?'}), got "
                         f"n_boot {n_boot} and level {level}")
    images = baseline[0].images
    labelled = len(np.unique(baseline[0].lab_image))
    rng = np.random.default_rng(seed)
    counts = image_resamples(len(images), n_boot, rng)
    strata = (rng.permutation(n_boot) + 0.5) / n_boot  # the seed term's quantiles, shared by every config
    ones = np.ones(len(images), dtype=np.int64)

    def score(runs: list[MatchStats]) -> tuple[np.ndarray, np.ndarray]:
        runs = [_paired(r, baseline[0]) for r in runs]
        return np.array([_Scorer(r).maps(ones)[0] for r in runs]), np.stack([resampled_maps(r, counts) for r in runs])

    base_full, base_boot = score(baseline)
    out = {}
    for name, runs in others.items():
        full, boot = score(runs)
        sd, df = seed_spread([base_full, full])  # this pair only: other rows never move a row's interval
        d = boot.mean(0) - base_boot.mean(0)  # (n_boot, 2): paired over images, seeds as trained
        if df:
            d = d + sd * math.sqrt(1 / len(full) + 1 / len(base_full)) * _t_quantiles(strata, df)[:, None]
        lo, hi = np.clip(np.quantile(d, [(1 - level) / 2, (1 + level) / 2], axis=0), -1.0, 1.0)  # a mAP Δ lies in [-1, 1]
        q_level, q_power = _quantiles(level, df)
        se = (hi - lo) / (2 * q_level)  # from the interval: a t term with few df has no usable sample variance
        delta = full.mean(0) - base_full.mean(0)
        out[name] = {m: Difference(m, float(delta[k]), float(lo[k]), float(hi[k]), float(se[k]),
                                   float((q_level + q_power) * se[k]), level, labelled, float(sd[k]), df)
                     for k, m in enumerate(METRICS)}
    return out


def _paired(run: MatchStats, reference: MatchStats) -> MatchStats:
    """`run` with its images in `reference`'s order. ValueError when either names an image twice
    (pairing by path would be ambiguous) or when the two hold different labels for the same images
    (they were scored against different ground truth)."""
    for s in (reference, run):
        if len(set(s.images)) != len(s.images):
            twice = next(p for i, p in enumerate(s.images) if p in s.images[:i])
            raise ValueError(f"{twice} appears more than once in a validation set: the models cannot be paired by "
                             "image; name each image once in the val list")
    run = run.reordered(reference.images)
    if not np.array_equal(_label_table(run), _label_table(reference)):
        raise ValueError("the two models were scored against different labels on the same images (a label file "
                         "changed between their validations?): validate both on the same dataset")
    return run


def _label_table(s: MatchStats) -> np.ndarray:
    """(n_lab, 2) (image index, class) of every label, sorted: equal for two runs scored on the same labels."""
    t = np.stack([s.lab_image.astype(np.int64), s.target_cls.astype(np.int64)], 1)
    return t[np.lexsort(t.T[::-1])]


def _t_quantiles(strata: np.ndarray, df: int) -> np.ndarray:
    """Student-t values (`df` degrees of freedom) at the quantiles `strata`: stratified draws, so that
    the t term's own tails are exact for any number of resamples instead of resting on the few
    random draws that reach them."""
    from scipy.stats import t

    return t.ppf(strata, df)


def _quantiles(level: float, df: int) -> tuple[float, float]:
    """The two-sided `level` quantile and the 80%-power quantile of the reference distribution: the
    standard normal without a seed term (``df`` 0), else Student t with ``df`` degrees of freedom."""
    from scipy.stats import t

    if not df:
        return _normal_quantile(0.5 + level / 2), Z_POWER
    return float(t.ppf(0.5 + level / 2, df)), float(t.ppf(0.8, df))


def _normal_quantile(p: float) -> float:
    """Standard normal quantile (scipy's ndtri)."""
    from scipy.special import ndtri

    return float(ndtri(p))


def mean_map(runs: list[MatchStats]) -> tuple[float, float]:
    """(mAP50, mAP50-95) on the full image set, mean over runs."""
    vals = [_Scorer(r).maps(np.ones(len(r.images)))[0] for r in runs]
    return tuple(float(v) for v in np.mean(vals, 0)) if vals else (math.nan, math.nan)
