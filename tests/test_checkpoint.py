"""Checkpoints: official ones load without running code from the pickle; ours open with weights_only."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
import torch

from models.yolo import DetectionModel
from utils import checkpoint as ck


def test_official_checkpoint_loads_every_tensor(weights_n):
    c = ck.load_checkpoint(weights_n)
    rec = c["model"]
    assert len(rec["state_dict"]) == 349
    assert rec["names"][:3] == ["person", "bicycle", "car"] and len(rec["names"]) == 80
    model = ck.model_from_record(rec)
    assert sum(p.numel() for p in model.parameters()) == 1_872_157
    # the rebuilt model holds exactly the pickled weights (fp16 in the file, fp32 here)
    sd = model.state_dict()
    for k, v in rec["state_dict"].items():
        torch.testing.assert_close(sd[k], v.to(sd[k].dtype), rtol=0, atol=0)


def test_plain_weights_only_load_refuses_official_file(weights_n):
    """Why the restricted unpickler exists: torch's own safe mode refuses the official format."""
    with pytest.raises(Exception, match="models.yolo"):
        torch.load(weights_n, map_location="cpu", weights_only=True)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["model", "extra"])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    payload = {"model": _Exploit(marker)} if where == "model" else {"model": None, "opt": _Exploit(marker)}
    torch.save(payload, bad)
    with pytest.raises(ck.CheckpointError, match=r"evil.pt: refused to load: .*system.*nothing from it was executed"):
        ck.load_checkpoint(bad)
    assert not marker.exists()


def test_truncated_file(tmp_path, weights_n):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(weights_n.read_bytes()[:200_000])
    with pytest.raises(ck.CheckpointError, match=r"cut.pt: not a readable PyTorch checkpoint, truncated or corrupt"):
        ck.load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path, bus):
    with pytest.raises(ck.CheckpointError, match=r"bus.jpg: not a PyTorch checkpoint"):
        ck.load_checkpoint(bus)
    other = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), other)
    with pytest.raises(ck.CheckpointError, match=r"tensor.pt: not a YOLOv5 checkpoint"):
        ck.load_checkpoint(other)


def test_own_checkpoint_roundtrip_opens_with_weights_only(tmp_path):
    model = DetectionModel("yolov5n.yaml", nc=3)
    model.names = ["a", "b", "c"]
    path = ck.save_checkpoint({"model": ck.model_record(model), "epoch": 4}, tmp_path / "w" / "last.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["epoch"] == 4 and raw["format"] == ck.FORMAT
    loaded = ck.load_model(path, fuse=False)
    assert loaded.names == ["a", "b", "c"] and loaded.nc == 3
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    assert not list(tmp_path.glob("w/.*.tmp")), "temporary file left behind"


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint({"model": None, "epoch": 1}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint({"model": None, "epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_weights_offline_message(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"yolov5s.pt not found locally and the download from "
                                                r"https://github.com/.*/yolov5s.pt failed.*put it at"):
        ck.attempt_download("yolov5s.pt")
    with pytest.raises(FileNotFoundError, match="my_weights.pt"):
        ck.attempt_download("my_weights.pt")
