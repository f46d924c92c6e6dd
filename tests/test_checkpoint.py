"""Checkpoints: official ones load without running code from the pickle; ours open with weights_only."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
import torch

from models import checkpoint as ck
from models.yolo import DetectionModel


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


# ---- checkpoints written under older model-building rules (issue 11 QA) ---------------------


def _record(yaml_dict: dict, layers: torch.nn.Module) -> dict:
    """A checkpoint's model record: the literal YAML and the state dict of `layers` (model.<i>...)."""
    sd = {f"model.{k}": v.clone() for k, v in layers.state_dict().items()}
    return {"yaml": yaml_dict, "state_dict": sd, "names": None, "stride": [8.0, 16.0, 32.0]}


def _n_cbam(args: list) -> dict:
    from models.yolo import load_cfg

    d = load_cfg("yolov5n_CBAM.yaml")
    d["backbone"][9] = [-1, 1, "CBAM", args]
    return d


def test_old_blog_style_checkpoint_rebuilds_as_trained(tmp_path, log_warnings):
    """Before the channel-count rule, `CBAM [1024]` was built as CBAM(256, r=1024): a hidden width of 1.
    Its checkpoint must load as that model (not as CBAM(256) with the 1024 dropped)."""
    from models.attention.spatial import CBAM

    torch.manual_seed(0)
    model = DetectionModel(_n_cbam([]))
    model.model[9] = CBAM(256, 1024)  # what the old code built from the literal row
    model.model[9].i, model.model[9].f, model.model[9].type = 9, -1, "CBAM"
    path = ck.save_checkpoint({"model": _record(_n_cbam([1024]), model.model)}, tmp_path / "old_blog.pt")
    loaded = ck.load_model(path, fuse=False)
    assert loaded.model[9].mlp[0].out_channels == 1
    for k, v in model.state_dict().items():
        if not k.endswith("anchors"):
            torch.testing.assert_close(loaded.state_dict()[k], v, msg=k)
    assert loaded.yaml["backbone"][9] == [-1, 1, "CBAM", [1024]]  # saved again, it rebuilds the same


@pytest.mark.parametrize("kind", ["unshifted", "same_level"])
def test_old_checkpoint_with_graph_findings_loads_with_warnings(tmp_path, log_warnings, kind):
    """YAMLs the graph check now refuses (indices left unshifted after an insert; Detect on two
    layers of one resolution) were trained before it existed: they load, the findings are warnings."""
    from models.yolo import load_cfg, parse_model

    d = load_cfg("yolov5n.yaml")
    if kind == "unshifted":
        d["backbone"].insert(9, [-1, 1, "CBAM", []])
    else:
        d["head"][-1][0] = [13, 20, 23]
    with pytest.raises(Exception, match="yolov5n.yaml"):
        DetectionModel(d)  # refused as a new config
    layers, _ = parse_model(load_cfg(d), [3], verbose=False)  # what the old code built
    path = ck.save_checkpoint({"model": _record(d, layers)}, tmp_path / f"old_{kind}.pt")
    loaded = ck.load_model(path, fuse=False)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in layers.parameters())
    assert log_warnings and all("(kept: the model is rebuilt as it was trained)" in w for w in log_warnings)


def test_new_models_store_the_normalised_yaml(tmp_path, log_warnings):
    """A blog-style row is stored without its channel count, so the checkpoint rebuilds silently."""
    model = DetectionModel(_n_cbam([1024]))
    assert model.yaml["backbone"][9] == [-1, 1, "CBAM", []] and model.model[9].mlp[0].out_channels == 16
    assert len(log_warnings) == 1 and "blog style" in log_warnings[0]
    path = ck.save_checkpoint({"model": ck.model_record(model)}, tmp_path / "new.pt")
    loaded = ck.load_model(path, fuse=False)
    assert loaded.model[9].mlp[0].out_channels == 16 and len(log_warnings) == 1


def test_checkpoint_from_before_normalised_yaml_loads_with_a_warning(tmp_path, log_warnings):
    """YAML row still `CBAM [1024]` but weights built with it dropped (hidden width 16)."""
    model = DetectionModel(_n_cbam([]))
    path = ck.save_checkpoint({"model": _record(_n_cbam([1024]), model.model)}, tmp_path / "mid.pt")
    loaded = ck.load_model(path, fuse=False)
    assert loaded.model[9].mlp[0].out_channels == 16
    assert any("mid.pt: its weights fit the config with the blog-style channel counts dropped" in w for w in log_warnings)


def test_weights_that_do_not_fit_name_the_file_and_layer(tmp_path):
    from models.attention.spatial import CBAM

    model = DetectionModel(_n_cbam([]))
    model.model[9] = CBAM(256, 64)  # hidden width 4, the YAML says the default (16)
    path = ck.save_checkpoint({"model": _record(_n_cbam([]), model.model)}, tmp_path / "misfit.pt")
    with pytest.raises(ck.CheckpointError, match=r"misfit.pt: weights do not fit the model built from its config: "
                                                 r"layer 9 \(CBAM\): model.9.mlp.0.weight is \(4, 256, 1, 1\) in the "
                                                 r"file, \(16, 256, 1, 1\) in the model"):
        ck.load_model(path)


@pytest.mark.parametrize("resume", [True, False])
def test_train_rebuilds_an_old_checkpoint_as_trained(tmp_path, resume):
    """train.py's two checkpoint paths: --resume, and --weights without --cfg (the checkpoint's own
    config): the old blog-style model comes back with its hidden width of 1 and every tensor."""
    import argparse

    import train
    from models.attention.spatial import CBAM

    model = DetectionModel(_n_cbam([]))
    model.model[9] = CBAM(256, 1024)
    model.model[9].i, model.model[9].f, model.model[9].type = 9, -1, "CBAM"
    rec = _record(_n_cbam([1024]), model.model)
    path = ck.save_checkpoint({"model": rec, "ema": rec, "epoch": 0, "optimizer": {}}, tmp_path / "last.pt")
    opt = argparse.Namespace(cfg="", no_identity_start=False, freeze=[0], imgsz=64)
    run = train._Run(opt=opt, device=torch.device("cpu"), save_dir=tmp_path, epochs=3, batch_size=1,
                     weights=str(path), resume=resume, plots=False, main_proc=True, hyp_cfg={}, nc=80)
    train._setup_model(run)
    assert run.model.model[9].mlp[0].out_channels == 1
    for k, v in rec["state_dict"].items():
        if not k.endswith("anchors"):
            torch.testing.assert_close(run.model.state_dict()[k], v, msg=k)
