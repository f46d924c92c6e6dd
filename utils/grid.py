"""A grid of training runs worked through by one or several processes (``compare.py --storage``).

Each run has a key (compare.py's ``run_key``: config, settings, seed). A ledger says whether a
run is finished (``get``), lets one process take it (``claim``), and records its result
(``finish``) or its failure (``fail``). :func:`work_through` trains every run of a grid that no
ledger entry holds yet.

* :class:`LocalLedger`: one process, the records in a JSON-lines file (compare.py's
  ``runs.jsonl``): every run is claimed, finished runs are skipped on a rerun.
* :class:`StorageLedger`: an Optuna study in an RDB storage (``postgresql://``,
  ``mysql+pymysql://``, ``sqlite:///``) shared by every process given the same URL and study name.
  Each run is a trial carrying its key as a user attribute. It is enqueued as WAITING by
  whichever process first finds it missing; a process claims it by moving it to RUNNING, which
  the storage grants to one process only (the row is locked for the update). While it trains,
  the trial records a heartbeat every ``heartbeat_s`` seconds; a trial whose heartbeat is older
  than ``grace_s`` seconds (its process died) is marked FAIL by the next process that looks
  and enqueued again once (Optuna's retry callback), so another process retries it; a run
  that fails again, or whose training raised an error, stays FAIL and is left out of the table.
  The result is stored in the trial (user attribute ``record``): any process can read every
  finished result. A process that finds runs RUNNING in other processes waits for them.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from utils.logging import LOGGER

HEARTBEAT_S = 10  # seconds between two heartbeats of a running trial
GRACE_S = 60  # a running trial whose heartbeat is older than this is taken as dead and retried once
POLL_S = 10  # seconds between two looks at runs trained by other processes


@dataclass
class Job:
    """One training run of the grid: its key, the record stored once it is finished (without
    ``result``), and its name in the log."""

    key: str
    record: dict = field(default_factory=dict)
    label: str = ""


class Progress(Protocol):
    def next(self) -> str: ...

    def done(self, seconds: float) -> None: ...


class RunLedger(Protocol):
    """Where the finished runs of a grid are recorded (see the module docstring)."""

    def get(self, key: str) -> dict | None:
        """The result of finished run `key`, else None."""

    def claim(self, key: str) -> bool:
        """True when this process is now the one to train run `key`."""

    def finish(self, key: str, record: dict) -> None:
        """Record claimed run `key` as finished with `record` (holding its ``result``)."""

    def fail(self, key: str, retry: bool) -> None:
        """Claimed run `key` ended without a result; `retry`: put it back for any process (an interrupt)."""

    def state(self, key: str) -> str:
        """"done", "waiting", "running" (claimed by a live or not yet stale process) or "failed"."""

    def wait(self) -> None:
        """Sleep until runs of other processes may have changed; then fail the stale ones (retried once)."""


class LocalLedger:
    """The records of one process: `done` (finished records by key, as read from `path`) and
    `append(path, record)`, which adds one record to the file (compare.py's runs.jsonl)."""

    def __init__(self, path: Path, done: dict[str, dict], append: Callable[[Path, dict], None]):
        self.path, self.done, self._append = Path(path), done, append

    def get(self, key: str) -> dict | None:
        return self.done[key]["result"] if key in self.done else None

    def claim(self, key: str) -> bool:
        return True

    def finish(self, key: str, record: dict) -> None:
        rec = {"key": key, **record}
        self._append(self.path, rec)
        self.done[key] = rec

    def fail(self, key: str, retry: bool) -> None:
        pass  # nothing recorded: a rerun trains it again

    def state(self, key: str) -> str:
        return "done" if key in self.done else "waiting"

    def wait(self) -> None:
        pass


class _Heartbeat:
    """A thread recording a heartbeat of one trial every `interval` seconds until stopped."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)  # at once: a trial without heartbeat is never found stale
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-trial-{trial_id}")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # a lost connection: the trial may go stale and be retried elsewhere
                LOGGER.warning(f"WARNING: grid: heartbeat of trial {self.trial_id} not recorded: {e}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class StorageLedger:
    """The grid's runs as trials of the Optuna study `study_name` in the RDB storage `url`.

    `jobs`: the runs of this process's grid; those with no trial yet are enqueued (WAITING).
    Raises :class:`utils.rdb.StorageError` (a ValueError) for a bad URL, a missing driver or an
    unreachable server."""

    def __init__(self, url: str, study_name: str, jobs: list[Job], heartbeat_s: float | None = None,
                 grace_s: float | None = None, poll_s: float | None = None, flag: str = "--storage"):
        import optuna

        from utils.rdb import open_storage

        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.grace_s = GRACE_S if grace_s is None else grace_s
        self.poll_s = POLL_S if poll_s is None else poll_s
        self.storage = open_storage(url, int(self.heartbeat_s), self.grace_s, flag=flag)
        self.study = optuna.create_study(study_name=study_name, storage=self.storage, load_if_exists=True)
        self._beats: dict[str, tuple[int, _Heartbeat]] = {}
        self._fail_stale()
        by_key = self._by_key()
        for job in jobs:
            if job.key not in by_key:  # two processes may both enqueue it: claim() keeps the first trial
                self.study.enqueue_trial({}, user_attrs={"key": job.key, "label": job.label})

    def _by_key(self) -> dict[str, list]:
        """The study's trials by run key, in trial order."""
        out: dict[str, list] = {}
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if "key" in t.user_attrs:
                out.setdefault(t.user_attrs["key"], []).append(t)
        return out

    @staticmethod
    def _live(trials: list) -> list:
        from optuna.trial import TrialState

        return [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)]

    def get(self, key: str) -> dict | None:
        from optuna.trial import TrialState

        done = [t for t in self._by_key().get(key, []) if t.state == TrialState.COMPLETE]
        return done[0].user_attrs["record"]["result"] if done else None

    def claim(self, key: str) -> bool:
        """Take the first live trial of `key` if it is WAITING (the storage grants it to one
        process); later WAITING copies (from processes that enqueued it at once) are pruned."""
        from optuna.trial import TrialState

        live = self._live(self._by_key().get(key, []))
        if not live or live[0].state != TrialState.WAITING:
            return False
        first = live[0]
        if not self.storage.set_trial_state_values(first._trial_id, TrialState.RUNNING):
            return False  # another process took it first
        self._beats[key] = (first._trial_id, _Heartbeat(self.storage, first._trial_id, self.heartbeat_s))
        for t in live[1:]:
            if t.state == TrialState.WAITING:
                self._set_state(t._trial_id, TrialState.PRUNED)
        return True

    def _set_state(self, trial_id: int, state, values: list[float] | None = None) -> None:
        import optuna

        try:
            self.storage.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # already finished by another process (a copy pruned twice)

    def _release(self, key: str) -> int:
        trial_id, beat = self._beats.pop(key)
        beat.stop()
        return trial_id

    def finish(self, key: str, record: dict) -> None:
        from optuna.trial import TrialState

        trial_id = self._release(key)
        rec = json.loads(json.dumps({"key": key, **record}, default=str))
        self.storage.set_trial_user_attr(trial_id, "record", rec)
        self._set_state(trial_id, TrialState.COMPLETE, [float(rec.get("result", {}).get("map", 0.0) or 0.0)])

    def fail(self, key: str, retry: bool) -> None:
        from optuna.trial import TrialState

        trial_id = self._release(key)
        self._set_state(trial_id, TrialState.FAIL)
        if retry:  # an interrupt, not a broken run: any process (this one rerun) trains it again
            self.study.enqueue_trial({}, user_attrs=self.storage.get_trial(trial_id).user_attrs)

    def state(self, key: str) -> str:
        from optuna.trial import TrialState

        live = self._live(self._by_key().get(key, []))
        if not live:
            return "failed"
        return {TrialState.COMPLETE: "done", TrialState.WAITING: "waiting"}.get(live[0].state, "running")

    def heartbeat_age(self, key: str) -> float | None:
        """Seconds since the last heartbeat of the RUNNING trial of `key` (None: none recorded or not running)."""
        import sqlalchemy
        from optuna.storages._rdb import models  # Optuna has no public reader of heartbeat times
        from optuna.trial import TrialState

        running = [t for t in self._by_key().get(key, []) if t.state == TrialState.RUNNING]
        if not running:
            return None
        session = self.storage.scoped_session()
        try:
            now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
            hb = models.TrialHeartbeatModel.where_trial_id(running[0]._trial_id, session)
            return None if hb is None else (now - hb.heartbeat.replace(tzinfo=None)).total_seconds()
        finally:
            session.close()

    def _fail_stale(self) -> None:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def wait(self) -> None:
        time.sleep(self.poll_s)
        self._fail_stale()


def _train(ledger: RunLedger, job: Job, train: Callable[[Job], dict], progress: Progress | None,
           step: str) -> dict:
    """Train claimed `job` and record it; an error fails it (an interrupt puts it back), then propagates."""
    LOGGER.info(f"{step} {job.label}: training ...")
    t0 = time.perf_counter()
    try:
        res = train(job)
    except KeyboardInterrupt:
        ledger.fail(job.key, retry=True)
        raise
    except BaseException:
        ledger.fail(job.key, retry=False)
        raise
    if progress is not None:
        progress.done(time.perf_counter() - t0)
    ledger.finish(job.key, {**job.record, "result": res})
    return res


def work_through(ledger: RunLedger, jobs: list[Job], train: Callable[[Job], dict],
                 progress: Progress | None = None) -> tuple[dict[str, dict], list[Job]]:
    """Train every job of `jobs` that `ledger` holds no result for and this process can claim, in
    order; then wait for the jobs claimed by other processes (training here those retried after
    their process died). `train(job)` returns the run's result (a JSON-able dict).

    Returns (results by key, jobs left without a result: failed twice or in error). An exception
    of `train` fails its run in the ledger and propagates."""
    results: dict[str, dict] = {}
    pending: list[Job] = []
    for job in jobs:
        step = progress.next() if progress is not None else ""
        res = ledger.get(job.key)
        if res is not None:
            LOGGER.info(f"{step} {job.label}: already trained, skipped")
            results[job.key] = res
        elif ledger.claim(job.key):
            results[job.key] = _train(ledger, job, train, progress, step)
        else:
            LOGGER.info(f"{step} {job.label}: {_elsewhere(ledger.state(job.key))}, left to it")
            pending.append(job)
    reported: set[str] = set()
    failed: list[Job] = []
    while pending:
        if any(ledger.state(j.key) == "running" for j in pending):
            _report_running(ledger, pending, reported)
            ledger.wait()
        for job in list(pending):
            res = ledger.get(job.key)
            if res is None and ledger.claim(job.key):
                LOGGER.info(f"grid: {job.label}: its process stopped; retried here")
                res = _train(ledger, job, train, None, "")
            if res is not None:
                results[job.key] = res
                pending.remove(job)
            elif ledger.state(job.key) == "failed":
                LOGGER.warning(f"WARNING: grid: {job.label} failed and is not retried again; left out of the table")
                failed.append(job)
                pending.remove(job)
    return results, failed


def _elsewhere(state: str) -> str:
    return {"running": "being trained by another process", "done": "just finished by another process",
            "failed": "failed in another process"}.get(state, "taken by another process")


def _report_running(ledger: RunLedger, pending: list[Job], reported: set[str]) -> None:
    """Say once per run which runs of other processes this one waits for, and how fresh they are."""
    for job in pending:
        if job.key in reported or ledger.state(job.key) != "running":
            continue
        reported.add(job.key)
        age = ledger.heartbeat_age(job.key) if hasattr(ledger, "heartbeat_age") else None
        beat = f"last heartbeat {age:.0f} s ago" if age is not None else "no heartbeat recorded yet"
        grace = getattr(ledger, "grace_s", GRACE_S)
        LOGGER.info(f"grid: waiting for {job.label}, trained by another process ({beat}; retried here if its "
                    f"heartbeat stops for {grace:g} s)")
