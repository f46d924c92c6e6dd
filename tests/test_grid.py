"""utils/grid.py and compare.py --storage: one grid of training runs shared by several processes
through an Optuna RDB storage (SQLite for the ledger's rules, a real PostgreSQL server for the
processes), and the one-line error for a storage URL whose driver is missing (utils/rdb.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import compare
import train
from data.synthetic import make_synthetic
from utils import grid
from utils.rdb import StorageError, check_storage, require_driver

ROOT = Path(__file__).resolve().parents[1]
CFGS = ["yolov5n.yaml", "yolov5n_SE.yaml"]
TINY = ["--imgsz", "64", "--epochs", "1", "--seeds", "2", "--batch-size", "4", "--workers", "0", "--runs", "2",
        "--threads", "1"]

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), n_train=8, n_val=4, imgsz=64, seed=0)


def _jobs(n: int = 2) -> list[grid.Job]:
    return [grid.Job(f"k{i}", {"kind": "train", "seed": i}, f"run {i}") for i in range(n)]


def _ledger(url: str, jobs: list[grid.Job], **kw) -> grid.StorageLedger:
    return grid.StorageLedger(url, "compare/t", jobs, **{"heartbeat_s": 1, "grace_s": 1, "poll_s": 0.2, **kw})


def _die(ledger: grid.StorageLedger, key: str) -> None:
    """The process training `key` dies: its heartbeat stops, nothing more is recorded."""
    ledger._beats.pop(key)[1].stop()


def _wait_stale(ledger: grid.StorageLedger, key: str) -> None:
    """Look (``wait``) until the dead run `key` is no longer RUNNING (SQLite's clock counts whole seconds)."""
    for _ in range(100):
        ledger.wait()
        if ledger.state(key) != "running":
            return
    raise AssertionError(f"{key} never went stale")


def _trial_states(url: str, name: str) -> list[str]:
    import optuna

    return [t.state.name for t in optuna.load_study(study_name=name, storage=url).get_trials()]


# --- the ledger's rules (SQLite) ------------------------------------------------------------------


def test_one_claim_per_run_and_results_readable_by_all(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    a, b = _ledger(url, _jobs()), _ledger(url, _jobs())  # the second finds the runs enqueued
    assert _trial_states(url, "compare/t") == ["WAITING", "WAITING"]
    assert a.claim("k0") and not b.claim("k0") and b.state("k0") == "running"
    assert b.claim("k1") and not a.claim("k1")
    a.finish("k0", {"kind": "train", "result": {"map": 0.25, "map50": 0.5}})
    b.finish("k1", {"kind": "train", "result": {"map": 0.125, "map50": 0.25}})
    for ledger in (a, b):
        assert ledger.get("k0") == {"map": 0.25, "map50": 0.5} and ledger.get("k1")["map"] == 0.125
        assert ledger.state("k0") == ledger.state("k1") == "done"
    assert _trial_states(url, "compare/t") == ["COMPLETE", "COMPLETE"]


def test_a_run_enqueued_twice_is_trained_once(tmp_path):
    """Two processes starting together may both enqueue a run: the first trial is claimed, the copy pruned."""
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    a = _ledger(url, _jobs(1))
    a.study.enqueue_trial({}, user_attrs={"key": "k0", "label": "run 0"})  # the other process's copy
    b = _ledger(url, _jobs(1))
    assert a.claim("k0") and not b.claim("k0")
    assert _trial_states(url, "compare/t") == ["RUNNING", "PRUNED"]
    a.finish("k0", {"result": {"map": 0.5}})
    assert not b.claim("k0") and b.get("k0") == {"map": 0.5}


def test_dead_process_run_is_retried_once_then_left_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    a, b = _ledger(url, _jobs(1)), _ledger(url, _jobs(1))
    assert a.claim("k0")
    _die(a, "k0")
    _wait_stale(b, "k0")  # the heartbeat is stale: FAIL, enqueued again once
    assert _trial_states(url, "compare/t") == ["FAIL", "WAITING"] and b.state("k0") == "waiting"
    assert b.claim("k0")
    _die(b, "k0")  # the retry dies too
    _wait_stale(a, "k0")
    assert _trial_states(url, "compare/t") == ["FAIL", "FAIL"] and a.state("k0") == "failed"
    assert not a.claim("k0") and a.get("k0") is None


def test_work_through_waits_for_a_live_run_and_retries_a_dead_one(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    jobs = _jobs(3)
    other = _ledger(url, jobs, grace_s=2)
    assert other.claim("k0") and other.claim("k1")  # k0: its process keeps training; k1: its process dies
    _die(other, "k1")
    trained: list[str] = []

    def train_fn(job):
        trained.append(job.key)
        if job.key == "k1":  # meanwhile the other process finishes k0
            other.finish("k0", {"result": {"map": 0.75}})
        return {"map": float(job.key[1])}

    here = _ledger(url, jobs, grace_s=2)
    results, missing = grid.work_through(here, jobs, train_fn)
    assert trained == ["k2", "k1"] and missing == []
    assert results == {"k0": {"map": 0.75}, "k1": {"map": 1.0}, "k2": {"map": 2.0}}
    assert sorted(_trial_states(url, "compare/t")) == ["COMPLETE"] * 3 + ["FAIL"]


def test_an_error_fails_the_run_an_interrupt_puts_it_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    jobs = _jobs(1)

    def broken(job):
        raise RuntimeError("loss diverged")

    with pytest.raises(RuntimeError):
        grid.work_through(_ledger(url, jobs), jobs, broken)
    assert _trial_states(url, "compare/t") == ["FAIL"]  # not retried: the same error would come back

    url2 = f"sqlite:///{tmp_path / 'grid2.db'}"

    def interrupted(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grid.work_through(_ledger(url2, jobs), jobs, interrupted)
    assert _trial_states(url2, "compare/t") == ["FAIL", "WAITING"]  # a rerun trains it
    results, _ = grid.work_through(_ledger(url2, jobs), jobs, lambda j: {"map": 0.5})
    assert results == {"k0": {"map": 0.5}}


def test_storage_needs_training_runs(tmp_path):
    with pytest.raises(ValueError, match="--storage shares training runs"):
        compare.run(CFGS, storage=f"sqlite:///{tmp_path / 'g.db'}", project=str(tmp_path))


# --- a storage URL whose driver is missing: one line naming the package -------------------------


@pytest.mark.parametrize("url, module, package", [
    ("postgresql://u:secret@db.example:5432/grid", "psycopg", "pip install 'psycopg[binary]'"),
    ("mysql+pymysql://u:secret@db.example/grid", "pymysql", "pip install 'PyMySQL'"),
    ("mysql://u:secret@db.example/grid", "MySQLdb", "pip install 'mysqlclient'"),
])
def test_missing_driver_names_the_package(url, module, package, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # not installed
    with pytest.raises(StorageError) as e:
        require_driver(url, "--storage")
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(package) and "secret" not in msg and "db.example" in msg


def test_unknown_scheme_or_no_url_is_one_line():
    with pytest.raises(StorageError, match="unknown database scheme 'postgres'"):
        require_driver("postgres://u@h/db")
    with pytest.raises(StorageError, match="is not a database URL"):
        require_driver("grid.db")


def test_both_scripts_say_the_missing_driver_in_one_line(synth, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    url = "postgresql://u@127.0.0.1:1/grid"
    assert compare.main(["--cfg", *CFGS, "--data", str(synth), *TINY, "--storage", url,
                         "--project", str(tmp_path)]) == 2
    assert train.cli(["--data", str(synth), "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64", "--epochs", "1",
                      "--evolve", "2", "--evolve-storage", url, "--project", str(tmp_path)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "ERROR" in ln]
    assert len(err) == 2 and err[0].endswith("pip install 'psycopg[binary]'") and "--storage" in err[0]
    assert err[1].endswith("pip install 'psycopg[binary]'") and "--evolve-storage" in err[1]
    assert not list(tmp_path.glob("exp*"))  # refused before any work


# --- several processes on a real PostgreSQL server ----------------------------------------------


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_compare_two_processes_share_one_grid(synth, tmp_path, pg_url):
    """2 compare.py processes, 2 configs x 2 seeds on PostgreSQL: 4 training runs in all, each
    trained once, and both print the same accuracy table (each in its own folder, as on two machines)."""
    import optuna

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "compare.py"), "--cfg", *CFGS, "--data", str(synth), *TINY,
                               "--storage", pg_url, "--project", str(tmp_path / w), "--name", "grid"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for w in ("A", "B")]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(x[-3000:] for x in logs)
    labels = [f"{c[:-5]} seed {s}" for c in CFGS for s in (0, 1)]
    trained = [ln for x in logs for ln in x.splitlines() if ln.endswith(": training ...")]
    assert len(trained) == 4 and all(sum(f"] {lb}: training" in ln for ln in trained) == 1 for lb in labels)
    trials = optuna.load_study(study_name="compare/grid", storage=pg_url).get_trials()
    # PRUNED: copies of a run enqueued by both processes at once, never trained
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    trials = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["label"] for t in trials) == sorted(labels)
    a, b = (_rows(tmp_path / w / "grid" / "results.csv") for w in ("A", "B"))
    same = ["config", "params", "GFLOPs", "seeds", "mAP50", "mAP50-95", "gate", "Δ mAP50 95% CI", "Δ mAP50-95 95% CI",
            "verdict"]
    assert [[r[k] for k in same] for r in a] == [[r[k] for k in same] for r in b]
    assert [r["seeds"] for r in a] == ["2", "2"]
    # the results are the trained ones: each trial's mAP50-95 is one of the runs' results.csv
    for t in trials:
        rec = t.user_attrs["record"]
        assert t.values[0] == pytest.approx(rec["result"]["map"]) and Path(rec["result"]["results_csv"]).is_file()


_HANG = """
import sys, time
from pathlib import Path
import compare
from utils import grid
grid.HEARTBEAT_S = 1
compare.measure_cost = lambda cfg, *a, **k: {{"params": 1000, "gflops": 1.0, "cpu_ms": 1.0, "gpu_ms": None,
                                             "peak_mem_mb": 1.0}}
def hang(cfg, seed, opt, root, **k):
    Path({marker!r}).write_text(f"{{cfg}} {{seed}}")
    time.sleep(600)
compare.train_once = hang
sys.exit(compare.main(sys.argv[1:]))
"""


def test_killed_worker_run_is_retried_once_and_grid_completes(synth, tmp_path, pg_url, monkeypatch):
    """Worker A is killed (SIGKILL) while training its first run; worker B trains the other runs,
    waits until A's heartbeat is stale, retries A's run once, and prints the whole table."""
    import optuna

    marker = tmp_path / "training"
    args = ["--cfg", *CFGS, "--data", str(synth), *TINY, "--storage", pg_url, "--name", "grid"]
    a = subprocess.Popen([sys.executable, "-c", _HANG.format(marker=str(marker)), *args, "--project",
                          str(tmp_path / "A")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):
            if marker.is_file() or a.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.read_text() == "yolov5n.yaml 0", a.communicate()[0][-3000:] if a.poll() is not None else ""
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()

    monkeypatch.setattr(grid, "GRACE_S", 2)
    monkeypatch.setattr(grid, "POLL_S", 0.5)
    monkeypatch.setattr(compare, "measure_cost", lambda cfg, *x, **k: {"params": 1000, "gflops": 1.0, "cpu_ms": 1.0,
                                                                        "gpu_ms": None, "peak_mem_mb": 1.0})
    calls: list[tuple[str, int]] = []

    def quick(cfg, seed, opt, root, **k):
        calls.append((cfg, seed))
        return {"map50": 0.5, "map": 0.25 + seed / 8, "results_csv": "", "train_s": 0.0, "gate": None}

    monkeypatch.setattr(compare, "train_once", quick)
    monkeypatch.setattr(compare, "_final_weights_result", lambda *a, **k: {})  # no last.pt to evaluate
    out = compare.run(CFGS, data=str(synth), imgsz=64, epochs=1, seeds=2, batch_size=4, workers=0, runs=2, threads=1,
                      storage=pg_url, project=str(tmp_path / "B"), name="grid")
    assert sorted(calls) == [(c, s) for c in CFGS for s in (0, 1)]  # A's run too, once
    trials = optuna.load_study(study_name="compare/grid", storage=pg_url).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 4 + ["FAIL"]
    dead = next(t for t in trials if t.state.name == "FAIL")
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].user_attrs["key"] == dead.user_attrs["key"]
    assert [r["seeds"] for r in out["rows"]] == [2, 2] and out["rows"][0]["mAP50-95"] == "0.312 ± 0.088"
    assert json.loads(json.dumps(retried[0].user_attrs["record"]))["seed"] == 0


# --- an unreachable server or a storage without its study: refused before any work ----------------


def test_unreachable_storage_is_refused_before_any_measurement(synth, tmp_path, capsys):
    """Nothing listens on port 1: both scripts stop with one line before a config's cost is measured
    or a trial is trained (the storage used to be opened only after every cost measurement)."""
    url = "postgresql://u:secret@127.0.0.1:1/grid"
    assert compare.main(["--cfg", *CFGS, "--data", str(synth), *TINY, "--storage", url,
                         "--project", str(tmp_path), "--name", "grid"]) == 2
    assert train.cli(["--data", str(synth), "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64", "--epochs", "1",
                      "--evolve", "2", "--evolve-storage", url, "--project", str(tmp_path)]) == 1
    out = capsys.readouterr()
    err = [ln for ln in out.err.splitlines() if "ERROR" in ln]
    assert len(err) == 2 and all("cannot open the database" in e and "secret" not in e for e in err)
    assert "--storage" in err[0] and "--evolve-storage" in err[1]
    assert not (tmp_path / "grid" / "runs.jsonl").exists() and "params" not in out.err + out.out
    assert not list(tmp_path.rglob("*.pt"))


def test_evolve_storage_without_evolve_is_refused(synth, tmp_path, capsys):
    """--evolve-storage alone used to train once and ignore the storage without a word."""
    assert train.cli(["--data", str(synth), "--cfg", "yolov5n.yaml", "--weights", "", "--img", "64", "--epochs", "1",
                      "--evolve-storage", f"sqlite:///{tmp_path / 'e.db'}", "--project", str(tmp_path)]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "ERROR" in ln]
    assert len(err) == 1 and "--evolve-storage" in err[0] and "--evolve N" in err[0]
    assert not (tmp_path / "e.db").exists() and not list(tmp_path.glob("exp*"))


@pytest.mark.parametrize("url, words", [
    ("sqlite:///", "an in-memory database is private to one process"),
    ("sqlite:///:memory:", "an in-memory database is private to one process"),
    ("postgresql://u:secret@127.0.0.1:notaport/db", "is not a database URL"),
    ("postgresql://u:sec@ret@127.0.0.1:1/db", "write an '@' inside the user name or password as %40"),
])
def test_storage_urls_that_cannot_work_are_one_line_without_the_password(url, words):
    with pytest.raises(StorageError) as e:
        check_storage(url, "--storage")
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "secret" not in msg and "ret@" not in msg and msg.startswith("--storage")


def test_storage_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match=r"cannot create the database's folder .*afile"):
        check_storage(f"sqlite:///{tmp_path / 'afile' / 'x.db'}", "--evolve-storage")


def test_a_refused_connection_is_not_retried():
    """The retries are for processes racing to create the tables; a server that cannot be reached
    used to be tried 5 times (56 s for one that never answers)."""
    import time

    t0 = time.perf_counter()
    with pytest.raises(StorageError, match="cannot open the database"):
        check_storage("postgresql://u@127.0.0.1:1/grid")
    assert time.perf_counter() - t0 < 3


def test_passwords_never_reach_logs_opt_yaml_or_checkpoints():
    from train import _plain
    from utils.logging import hide_passwords

    url = "postgresql://postgres:goodpw@127.0.0.1:5477/qa"
    assert hide_passwords(f"evolve_storage={url}, x=1") == "evolve_storage=postgresql://postgres:***@127.0.0.1:5477/qa, x=1"
    assert _plain({"evolve_storage": url, "data": "coco128.yaml"}) == {
        "evolve_storage": "postgresql://postgres:***@127.0.0.1:5477/qa", "data": "coco128.yaml"}
    assert hide_passwords("sqlite:///runs/a.db http://host/x") == "sqlite:///runs/a.db http://host/x"
