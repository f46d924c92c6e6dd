"""Hyperparameter evolution (``train.py --evolve N``) as an Optuna study.

Search space: upstream YOLOv5's bounds for each key of the hyp YAML (:data:`SPACE`; keys
upstream keeps fixed - ``iou_t``, ``fl_gamma``, ``perspective``, ``fliplr`` - and keys not in
the YAML stay as given). A bound is widened when the YAML's own value lies outside it.
``lr0`` is searched on a log scale, the rest linearly. The first trial is the YAML as given
(enqueued). Sampler: TPE with the constant-liar heuristic, so that processes running at the
same time do not all try the same point. Objective: fitness = 0.1 mAP50 + 0.9 mAP50-95 of the
trial's final validation (``utils.metrics.fitness``), maximised.

Sharing and resuming
--------------------
The study lives in an Optuna RDB storage, ``--evolve-storage URL`` (default
``sqlite:///<run folder>/evolve.db``; ``postgresql://...`` or ``mysql+pymysql://...`` for
several machines). Several processes given the same URL work on the same study; ``N`` is the
number of completed trials the study should reach in all. Before training, a trial counts
the trials COMPLETE or RUNNING with a smaller number; if that already makes ``N`` it is
closed as PRUNED without training, so the study never gets more than ``N`` complete trials.
Re-running the same command resumes the study (``load_if_exists``).

Trials interrupted by a killed process: every running trial records a heartbeat every
:data:`HEARTBEAT_S` seconds; one whose heartbeat is older than :data:`GRACE_S` seconds is marked
FAIL by the next process that starts a trial, and its parameters are enqueued again once
(Optuna's ``RetryFailedTrialCallback``), so the point is still tried. A process that finds the
study short of ``N`` complete trials while some are RUNNING says so and waits: for a dead one
until it is stale, then retries it; for a live one of another process until it ends. A trial whose training
raises TrainingError (diverged loss) is recorded as FAIL and the process goes on.

Outputs in the run folder (rewritten from the storage after every trial, by whichever process
finished it): ``evolve.csv`` (one row per complete trial: the 7 validation results, the hyp
values, fitness, trial number), ``hyp_evolve.yaml`` (the best trial's hyperparameters) and,
at the end, ``evolve.png`` (each searched value against fitness, the best marked; drawn by the process
that finishes last). Each trial
trains into ``trial<number>/`` with ``--noval --nosave --noplots``; its weights are deleted.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from utils.data.dataset import load_hyp
from utils.logging import LOGGER, hide_passwords
from utils.metrics import fitness

# upstream YOLOv5's evolution bounds (lower, upper) of the hyperparameters it mutates
SPACE: dict[str, tuple[float, float]] = {
    "lr0": (1e-5, 1e-1),
    "lrf": (0.01, 1.0),
    "momentum": (0.6, 0.98),
    "weight_decay": (0.0, 0.001),
    "warmup_epochs": (0.0, 5.0),
    "warmup_momentum": (0.0, 0.95),
    "warmup_bias_lr": (0.0, 0.2),
    "box": (0.02, 0.2),
    "cls": (0.2, 4.0),
    "cls_pw": (0.5, 2.0),
    "obj": (0.2, 4.0),
    "obj_pw": (0.5, 2.0),
    "anchor_t": (2.0, 8.0),
    "anchors": (2.0, 10.0),
    "hsv_h": (0.0, 0.1),
    "hsv_s": (0.0, 0.9),
    "hsv_v": (0.0, 0.9),
    "degrees": (0.0, 45.0),
    "translate": (0.0, 0.9),
    "scale": (0.0, 0.9),
    "shear": (0.0, 10.0),
    "flipud": (0.0, 1.0),
    "mosaic": (0.0, 1.0),
    "mixup": (0.0, 1.0),
    "copy_paste": (0.0, 1.0),
}
LOG_SCALE = {"lr0"}
RESULT_KEYS = ["metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
               "val/box_loss", "val/obj_loss", "val/cls_loss"]
STUDY_NAME = "evolve"
HEARTBEAT_S = 10
GRACE_S = 30


def search_space(hyp: dict) -> dict[str, tuple[float, float]]:
    """Bounds of the keys of `hyp` that are searched, widened to contain `hyp`'s own values."""
    out = {}
    for k, (lo, hi) in SPACE.items():
        if k in hyp:
            v = float(hyp[k])
            out[k] = (min(lo, v), max(hi, v))
    return out


def suggest(trial, hyp: dict, space: dict[str, tuple[float, float]]) -> dict:
    """`hyp` with every key of `space` replaced by the trial's suggestion."""
    new = dict(hyp)
    for k, (lo, hi) in space.items():
        new[k] = trial.suggest_float(k, lo, hi, log=k in LOG_SCALE and lo > 0)
    return new


def default_storage(save_dir: str | Path) -> str:
    """``sqlite:///<save_dir>/evolve.db`` (absolute path)."""
    return f"sqlite:///{(Path(save_dir) / 'evolve.db').resolve()}"


def open_study(storage_url: str, study_name: str = STUDY_NAME, heartbeat_s: int | None = None,
               grace_s: float | None = None):
    """Create or load (`load_if_exists`) the study in an RDB storage with heartbeats (every
    `heartbeat_s` seconds, default :data:`HEARTBEAT_S`) and one retry of trials whose heartbeat is
    older than `grace_s` seconds (default :data:`GRACE_S`), see :func:`utils.rdb.open_storage`
    (StorageError, a ValueError, for a bad URL, a missing driver or an unreachable server)."""
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    grace_s = GRACE_S if grace_s is None else grace_s
    import optuna

    from utils.rdb import open_storage

    storage = open_storage(storage_url, heartbeat_s, grace_s, flag="--evolve-storage")
    sampler = optuna.samplers.TPESampler(constant_liar=True)
    return optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, direction="maximize",
                               load_if_exists=True)


def _taken(study, before: int | None = None) -> int:
    """Trials COMPLETE or RUNNING (those numbered below `before`, when given)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return sum(t.number < before for t in trials) if before is not None else len(trials)


def _complete(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def _running(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), key=lambda t: t.number)


def heartbeat_ages(study) -> dict[int, float | None]:
    """Seconds since the last heartbeat of each RUNNING trial of `study` (by trial number; None
    when the trial has no heartbeat record), read from the RDB storage's clock."""
    import sqlalchemy
    from optuna.storages._rdb import models  # Optuna has no public reader of heartbeat times

    rdb = getattr(study._storage, "_backend", study._storage)
    session = rdb.scoped_session()
    try:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        ages = {}
        for t in _running(study):
            hb = models.TrialHeartbeatModel.where_trial_id(t._trial_id, session)
            ages[t.number] = None if hb is None else (now - hb.heartbeat.replace(tzinfo=None)).total_seconds()
        return ages
    finally:
        session.close()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(study, save_dir: Path, hyp_keys: list[str]) -> int:
    """evolve.csv and hyp_evolve.yaml from the study's complete trials; returns their number."""
    trials = _complete(study)
    if not trials:
        return 0
    header = RESULT_KEYS + hyp_keys + ["fitness", "trial"]
    lines = [",".join(header)]
    for t in trials:
        vals = list(t.user_attrs["results"]) + [t.user_attrs["hyp"][k] for k in hyp_keys] + [t.value, t.number]
        lines.append(",".join(f"{float(v):.6g}" for v in vals))
    _atomic_write(save_dir / "evolve.csv", "\n".join(lines) + "\n")
    best = max(trials, key=lambda t: t.value)
    res = dict(zip(RESULT_KEYS, best.user_attrs["results"]))
    head = (f"# Hyperparameter evolution: best of {len(trials)} complete trials = trial {best.number}, "
            f"fitness {best.value:.5g}\n# " + ", ".join(f"{k}={v:.5g}" for k, v in res.items()) + "\n")
    _atomic_write(save_dir / "hyp_evolve.yaml", head + yaml.safe_dump(best.user_attrs["hyp"], sort_keys=False))
    return len(trials)


def plot_evolve(csv_path: Path, keys: list[str]) -> Path:
    """evolve.png beside `csv_path`: one panel per key, value against fitness, best marked with a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    fit = np.array([float(r["fitness"]) for r in rows])
    best = int(fit.argmax())
    cols = min(5, max(len(keys), 1))
    nrows = math.ceil(len(keys) / cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.6 * nrows), squeeze=False, sharey=True)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.05, top=0.95, hspace=0.45, wspace=0.3)
    for ax, k in zip(axes.flat, keys):
        v = np.array([float(r[k]) for r in rows])
        ax.scatter(v, fit, c=fit, cmap="viridis", s=14, alpha=0.8, edgecolors="none")
        ax.plot(v[best], fit[best], "k+", markersize=14)
        ax.set_title(f"{k} = {v[best]:.3g}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("fitness", fontsize=8)
    out = csv_path.with_name("evolve.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _trial_opt(opt: argparse.Namespace, save_dir: Path, number: int) -> argparse.Namespace:
    o = copy.copy(opt)
    o.evolve, o.noval, o.nosave, o.noplots = 0, True, True, True
    o.save_dir = str(save_dir / f"trial{number}")
    return o


def evolve(opt: argparse.Namespace, train_fn: Callable[[dict, argparse.Namespace], dict],
           catch: tuple[type[Exception], ...] = (), heartbeat_s: int | None = None, grace_s: float | None = None) -> dict:
    """Run trials of ``train_fn(hyp, opt)`` (returning a dict with ``results``: P, R, mAP50,
    mAP50-95, val box/obj/cls losses) until the study has ``opt.evolve`` complete trials.

    Returns ``study``, ``best_hyp``, ``best_fitness``, ``complete`` (count) and ``save_dir``.
    A trial raising one of `catch` (train.py passes TrainingError) is recorded as FAIL and the
    next one starts; other errors propagate. Raises ValueError for ``--evolve`` < 1.

    While the study lacks complete trials and some are RUNNING (in another process, or left by a
    killed one), it says so and waits: a trial whose heartbeat (every `heartbeat_s` s) is older
    than `grace_s` s is marked FAIL and retried here. A RUNNING trial without any heartbeat is
    never retried; it is reported and the function returns. Defaults: :data:`HEARTBEAT_S`, :data:`GRACE_S`.
    """
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    grace_s = GRACE_S if grace_s is None else grace_s
    import optuna

    n = int(opt.evolve)
    if n < 1:
        raise ValueError(f"--evolve needs a number of trials >= 1, got {n}")
    save_dir = Path(opt.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    base = load_hyp(opt.hyp)
    space = search_space(base)
    url = opt.evolve_storage or default_storage(save_dir)
    study = open_study(url, heartbeat_s=heartbeat_s, grace_s=grace_s)
    LOGGER.info(f"evolve: study '{STUDY_NAME}' in {hide_passwords(url)}: {len(_complete(study))}/{n} trials complete, "
                f"searching {len(space)} hyperparameters")
    study.enqueue_trial({k: float(base[k]) for k in space}, skip_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)

    def objective(trial) -> float:
        if _taken(study, before=trial.number) >= n:
            raise optuna.TrialPruned(f"the study already has {n} trials complete or running")
        hyp = suggest(trial, base, space)
        trial.set_user_attr("hyp", {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in hyp.items()})
        o = _trial_opt(opt, save_dir, trial.number)
        LOGGER.info(f"evolve: trial {trial.number} -> {o.save_dir}")
        try:
            res = train_fn(hyp, o)
        finally:
            shutil.rmtree(Path(o.save_dir) / "weights", ignore_errors=True)
        results = [float(x) for x in res["results"]]
        trial.set_user_attr("results", results)
        return float(fitness(np.asarray(results)))

    def after_trial(st, _trial) -> None:
        write_outputs(st, save_dir, list(space))
        if _taken(st) >= n:
            st.stop()

    before, reported = len(_complete(study)), set()
    while True:
        if _taken(study) < n:
            study.optimize(objective, n_trials=n, catch=catch, callbacks=[after_trial])
        if len(_complete(study)) >= n or not _running(study) or not _wait_for_running(study, grace_s, heartbeat_s, reported):
            break
    done = write_outputs(study, save_dir, list(space))
    png_missing = not (save_dir / "evolve.png").is_file()
    last_one = _taken(study) == done  # no trial of another process still running: this one plots
    if done and last_one and (png_missing or done > before):
        plot_evolve(save_dir / "evolve.csv", list(space))
    best = max(_complete(study), key=lambda t: t.value, default=None)
    files = [f for f in ("evolve.csv", "hyp_evolve.yaml", "evolve.png") if (save_dir / f).is_file()]
    where = f"results in {save_dir} ({', '.join(files)})" if files else f"no results written yet in {save_dir}"
    LOGGER.info(f"evolve: {done} complete trials; best fitness {best.value if best else float('nan'):.5g}; {where}")
    return {"study": study, "best_hyp": best.user_attrs["hyp"] if best else None,
            "best_fitness": best.value if best else None, "complete": done, "save_dir": save_dir}


def _wait_for_running(study, grace_s: float, heartbeat_s: float, reported: set[int]) -> bool:
    """Report the RUNNING trials, sleep until the stalest may have passed `grace_s`, then fail the
    stale ones (they are enqueued again). False when waiting cannot help (a trial without heartbeat)."""
    import optuna

    ages = heartbeat_ages(study)
    for num, age in ages.items():
        if age is None:
            LOGGER.warning(f"evolve: WARNING: trial {num} is RUNNING without a heartbeat (not started by --evolve?), "
                           f"so it is never retried; mark it FAIL with Optuna or use another --evolve-storage")
            return False
        if num in reported:
            continue
        reported.add(num)
        LOGGER.info(f"evolve: trial {num} is RUNNING, last heartbeat {age:.0f} s ago; it is retried once it is "
                    f"{grace_s:g} s stale - waiting (a live trial of another process is waited for until it ends)")
    oldest = max(ages.values(), default=0.0)
    time.sleep(min(max(grace_s - oldest, 0.0) + 0.5, max(float(heartbeat_s), 0.5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return True
