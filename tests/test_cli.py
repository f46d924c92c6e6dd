"""utils/cli.py helpers shared by the scripts."""

from __future__ import annotations

import pytest

from utils.cli import run_folder


def test_failed_run_removes_the_parent_folders_it_created(tmp_path):
    (tmp_path / "clone").mkdir()
    runs = tmp_path / "clone" / "runs"
    with pytest.raises(RuntimeError), run_folder(runs / "train" / "exp"):
        raise RuntimeError("fails before writing anything")
    assert not runs.exists() and (tmp_path / "clone").is_dir()  # the clone itself existed before


def test_failed_run_keeps_parents_that_existed_or_hold_other_runs(tmp_path):
    train = tmp_path / "runs" / "train"
    (train / "exp").mkdir(parents=True)
    with pytest.raises(RuntimeError), run_folder(train / "exp2"):
        raise RuntimeError("boom")
    assert sorted(p.name for p in train.iterdir()) == ["exp"]
    with pytest.raises(RuntimeError), run_folder(tmp_path / "other" / "exp") as d:
        (tmp_path / "other" / "exp_sibling").mkdir()  # another run wrote beside it meanwhile
        assert d.is_dir()
        raise RuntimeError("boom")
    assert (tmp_path / "other" / "exp_sibling").is_dir() and not (tmp_path / "other" / "exp").exists()


def test_successful_or_productive_run_keeps_everything(tmp_path):
    d = tmp_path / "runs" / "train" / "exp"
    with run_folder(d):
        pass
    assert d.is_dir()
    d2 = tmp_path / "r2" / "train" / "exp"
    with pytest.raises(RuntimeError), run_folder(d2):
        (d2 / "results.csv").write_text("epoch\n0\n")
        raise RuntimeError("late failure")
    assert (d2 / "results.csv").is_file()
