"""Shared fixtures: the read-only test data in ../shared beside the project root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT.parent / "shared").resolve()
DATASETS = SHARED / "datasets"
WEIGHTS_N = SHARED / "weights" / "yolov5n.pt"
BUS = SHARED / "images" / "bus.jpg"
ZIDANE = SHARED / "images" / "zidane.jpg"

# Dataset YAMLs with a relative `path` resolve against this folder (tests never download).
os.environ.setdefault("YOLO_DATASETS_DIR", str(DATASETS))
os.environ.setdefault("MPLBACKEND", "Agg")
# Label caches go to a temporary folder: the tests never write into ../shared.
os.environ.setdefault("YOLO_CACHE_DIR", tempfile.mkdtemp(prefix="yolo-label-cache-"))


def _require(p: Path) -> Path:
    if not p.exists():
        pytest.fail(f"test fixture missing: {p} (the ../shared folder must sit beside the project root)")
    return p


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module, restored afterwards. The tiny tensors of unit tests
    gain nothing from a second thread, and on a busy 2-core machine OpenMP barriers make
    2-thread runs many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def weights_n() -> Path:
    return _require(WEIGHTS_N)


@pytest.fixture(scope="session")
def bus() -> Path:
    return _require(BUS)


@pytest.fixture(scope="session")
def zidane() -> Path:
    return _require(ZIDANE)


@pytest.fixture(scope="session")
def coco128() -> Path:
    return _require(DATASETS / "coco128")


# --- data pipeline (utils/data) -------------------------------------------------------------


@pytest.fixture
def datasets_dir(monkeypatch) -> Path:
    """The shared datasets folder, exported as YOLO_DATASETS_DIR for the test."""
    monkeypatch.setenv("YOLO_DATASETS_DIR", str(_require(DATASETS)))
    return DATASETS


@pytest.fixture
def tmp_datasets(tmp_path, monkeypatch) -> Path:
    """An empty datasets folder in tmp_path, exported as YOLO_DATASETS_DIR for the test."""
    d = tmp_path / "datasets"
    d.mkdir()
    monkeypatch.setenv("YOLO_DATASETS_DIR", str(d))
    return d


# --- model graph check (models/graph_check.py) ------------------------------------------------


@pytest.fixture
def log_warnings():
    """The messages the project logger emits at WARNING level or above during the test."""
    import logging

    from utils.logging import LOGGER

    class _Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    from models.graph_check import reset_warnings

    reset_warnings()  # warnings given once per run: each test starts a new "run"
    h = _Collect()
    LOGGER.addHandler(h)
    yield h.lines
    LOGGER.removeHandler(h)


# --- a PostgreSQL server for the shared-storage tests (tests/postgres.py) ---------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A function ``new_db(name) -> URL`` on a PostgreSQL server started for this session (skipped,
    with the reason, where no PostgreSQL binaries exist)."""
    from tests import postgres

    reason = postgres.skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres.postgres_server() as new_db:
        yield new_db


@pytest.fixture
def pg_url(postgres_server, request) -> str:
    """The URL of a new, empty database for this test on the session's PostgreSQL server."""
    import re

    return postgres_server(re.sub(r"\W", "_", request.node.name)[:60].lower())
