"""--evolve (utils/evolve.py): Optuna study, outputs, resume, stale trials; and train.py in 2 processes at once."""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import pytest
import yaml

from utils import evolve as ev

ROOT = Path(__file__).resolve().parents[1]


def _opt(tmp_path: Path, n: int, storage: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(evolve=n, evolve_storage=storage, hyp=str(ROOT / "data/hyps/hyp.scratch-low.yaml"),
                              save_dir=str(tmp_path / "evolve"), noval=False, nosave=False, noplots=False)


def _fake_train(calls: list):
    """A stand-in for train(): mAPs rise as lr0 nears 0.01, and it records what it was given."""

    def train_fn(hyp: dict, opt: argparse.Namespace) -> dict:
        calls.append((dict(hyp), opt))
        Path(opt.save_dir, "weights").mkdir(parents=True)
        m = 1 / (1 + abs(hyp["lr0"] - 0.01) * 100)
        return {"results": (0.5, 0.5, m, m / 2, 0.1, 0.1, 0.1)}

    return train_fn


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_search_space_is_upstreams():
    base = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    space = ev.search_space(base)
    assert space["lr0"] == (1e-5, 1e-1) and space["momentum"] == (0.6, 0.98) and space["mixup"] == (0.0, 1.0)
    assert {"iou_t", "fl_gamma", "perspective", "fliplr"}.isdisjoint(space)  # fixed upstream
    assert "anchors" not in space  # not in this YAML
    assert ev.search_space({"lr0": 0.5})["lr0"] == (1e-5, 0.5)  # widened to hold the YAML's own value


def test_outputs_resume_and_budget(tmp_path):
    calls: list = []
    out = ev.evolve(_opt(tmp_path, 3), _fake_train(calls))
    d = tmp_path / "evolve"
    assert out["complete"] == 3 and len(calls) == 3
    base = yaml.safe_load((ROOT / "data/hyps/hyp.scratch-low.yaml").read_text())
    assert calls[0][0] == base  # the first trial is the YAML as given
    assert all(o.noval and o.nosave and o.noplots and o.evolve == 0 for _, o in calls)
    assert not (d / "trial0" / "weights").exists()  # trial weights deleted
    rows = _rows(d / "evolve.csv")
    assert len(rows) == 3 and list(rows[0])[:7] == ev.RESULT_KEYS and "lr0" in rows[0]
    for r in rows:
        fit = 0.1 * float(r["metrics/mAP_0.5"]) + 0.9 * float(r["metrics/mAP_0.5:0.95"])
        assert float(r["fitness"]) == pytest.approx(fit, rel=1e-5)
    best = max(rows, key=lambda r: float(r["fitness"]))
    hyp = yaml.safe_load((d / "hyp_evolve.yaml").read_text())
    assert hyp["lr0"] == pytest.approx(float(best["lr0"]), rel=1e-5) and hyp["iou_t"] == base["iou_t"]
    assert (d / "evolve.png").stat().st_size > 10_000
    # the same command again: the study is loaded, nothing more to run; a larger N runs the difference
    assert ev.evolve(_opt(tmp_path, 3), _fake_train(calls))["complete"] == 3 and len(calls) == 3
    assert ev.evolve(_opt(tmp_path, 5), _fake_train(calls))["complete"] == 5 and len(calls) == 5
    assert len(_rows(d / "evolve.csv")) == 5


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_stale_running_trial_is_failed_and_retried(tmp_path, monkeypatch):
    """A trial left RUNNING by a killed process: after the grace period it is marked FAIL and its
    parameters are tried again, and the study still gets exactly N complete trials."""
    import optuna
    from optuna.trial import TrialState

    monkeypatch.setattr(ev, "HEARTBEAT_S", 1)
    monkeypatch.setattr(ev, "GRACE_S", 1)
    opt = _opt(tmp_path, 2)
    Path(opt.save_dir).mkdir(parents=True)
    study = ev.open_study(ev.default_storage(opt.save_dir))
    orphan = study.ask({"lr0": optuna.distributions.FloatDistribution(1e-5, 0.1, log=True)})
    study._storage.record_heartbeat(orphan._trial_id)  # its process then "dies"
    time.sleep(2.5)
    calls: list = []
    ev.evolve(opt, _fake_train(calls))
    trials = ev.open_study(ev.default_storage(opt.save_dir)).get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 1 and trials[orphan.number].state == TrialState.FAIL
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retried) == 1 and retried[0].params["lr0"] == pytest.approx(orphan.params["lr0"])


def test_bad_n(tmp_path):
    with pytest.raises(ValueError, match="--evolve needs"):
        ev.evolve(_opt(tmp_path, 0), _fake_train([]))


def test_sqlite_storage_folder_is_created(tmp_path):
    db = tmp_path / "new" / "folder" / "study.db"
    study = ev.open_study(f"sqlite:///{db}")
    assert db.is_file() and study.study_name == ev.STUDY_NAME


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_resume_right_after_a_kill_waits_for_the_stale_trial(tmp_path, capsys):
    """Resumed within the stale window: the RUNNING trial is reported, waited for and retried in the
    same call, instead of "0 complete trials ... (evolve.csv, ...)" with no file written."""
    import optuna
    from optuna.trial import TrialState

    opt = _opt(tmp_path, 2)
    Path(opt.save_dir).mkdir(parents=True)
    study = ev.open_study(ev.default_storage(opt.save_dir), heartbeat_s=1, grace_s=2)
    orphan = study.ask({"lr0": optuna.distributions.FloatDistribution(1e-5, 0.1, log=True)})
    study._storage.record_heartbeat(orphan._trial_id)  # its process is killed right away
    assert ev.heartbeat_ages(study)[orphan.number] < 2
    calls: list = []
    out = ev.evolve(opt, _fake_train(calls), heartbeat_s=1, grace_s=2)
    log = capsys.readouterr().err
    assert out["complete"] == 2 and len(calls) == 2  # the YAML's point and the killed trial's, retried
    assert any(c[0]["lr0"] == pytest.approx(orphan.params["lr0"]) for c in calls)
    assert f"trial {orphan.number} is RUNNING, last heartbeat" in log and "once it is 2 s stale" in log
    states = [t.state for t in ev.open_study(ev.default_storage(opt.save_dir)).get_trials()]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    last = next(ln for ln in reversed(log.splitlines()) if "complete trials;" in ln)
    assert "2 complete trials" in last and "(evolve.csv, hyp_evolve.yaml, evolve.png)" in last
    assert all((Path(opt.save_dir) / f).is_file() for f in ("evolve.csv", "hyp_evolve.yaml", "evolve.png"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_summary_lists_only_files_written(tmp_path, capsys):
    """A RUNNING trial without heartbeat can never be retried: say so, and name no output file."""
    import optuna

    opt = _opt(tmp_path, 1)
    Path(opt.save_dir).mkdir(parents=True)
    study = ev.open_study(ev.default_storage(opt.save_dir), heartbeat_s=1, grace_s=1)
    study.ask({"lr0": optuna.distributions.FloatDistribution(1e-5, 0.1, log=True)})
    out = ev.evolve(opt, _fake_train([]), heartbeat_s=1, grace_s=1)
    log = capsys.readouterr().err
    assert out["complete"] == 0 and "without a heartbeat" in log
    last = next(ln for ln in reversed(log.splitlines()) if "complete trials;" in ln)
    assert "0 complete trials" in last and "no results written yet" in last and "evolve.csv" not in last
    assert not (Path(opt.save_dir) / "evolve.csv").exists()
