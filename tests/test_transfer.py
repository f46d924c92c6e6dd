"""Pretrained weights into modified architectures: layer alignment, honest counts, identity start."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from models.checkpoint import load_checkpoint, model_from_record
from models.graph_check import abs_froms
from models.transfer import align_layers, load_pretrained, transfer_weights
from models.yaml_edit import insert_block
from models.yolo import DetectionModel, edit_cfg, load_cfg
from utils.logging import LOGGER

ZOO = Path(__file__).resolve().parents[1] / "models" / "attention" / "configs"
# placements that keep every base layer: a block before SPPF, or inside the C3 bottlenecks
KEEPING = sorted(p.name.replace("yolov5s", "yolov5n") for p in ZOO.glob("yolov5s_*.yaml") if "-replace" not in p.name)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_record(weights_n):
    return load_checkpoint(weights_n)["model"]


@pytest.fixture(scope="module")
def images(bus, zidane):
    """Two real images letterboxed to 160x160, as a float batch."""
    out = []
    for p in (bus, zidane):
        im = cv2.imread(str(p))
        r = 160 / max(im.shape[:2])
        im = cv2.resize(im, (round(im.shape[1] * r), round(im.shape[0] * r)))
        canvas = np.full((160, 160, 3), 114, np.uint8)
        canvas[: im.shape[0], : im.shape[1]] = im
        out.append(torch.from_numpy(canvas[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.fixture(scope="module")
def base_out(base_record, images):
    m = model_from_record(base_record).eval()
    with torch.no_grad():
        return m(images)[0]


def _insert_before_sppf(cfg: dict, row: list) -> dict:
    """A hand-made YAML: `row` inserted as backbone layer 9, later absolute references shifted."""
    cfg = copy.deepcopy(cfg)
    cfg["backbone"].insert(9, row)

    def shift(f):
        if isinstance(f, int):
            return f + 1 if f >= 9 else f
        return [shift(x) for x in f]

    cfg["head"] = [[shift(r[0]), *r[1:]] for r in cfg["head"]]
    return cfg


def test_align_identity_insert():
    base = load_cfg("yolov5n.yaml")
    mod = _insert_before_sppf(base, [-1, 1, "nn.Identity", []])
    mapping, exact = align_layers(base, mod)
    n = len(base["backbone"]) + len(base["head"])
    assert mapping == {i: (i if i < 9 else i + 1) for i in range(n)}
    assert exact == set(mapping.values())


def test_align_variant_and_replacement():
    base = load_cfg("yolov5n.yaml")
    var = copy.deepcopy(base)
    var["backbone"][2] = [-1, 3, "C3CBAM", [128]]
    mapping, exact = align_layers(base, var)
    assert mapping[2] == 2 and 2 not in exact and 3 in exact
    rep = copy.deepcopy(base)
    rep["backbone"][4] = [-1, 1, "CBAM", []]
    mapping, _ = align_layers(base, rep)
    assert 4 not in mapping and mapping[5] == 5 and mapping[24] == 24  # Detect still paired


def test_transfer_into_inserted_identity(base_record, images, base_out):
    cfg = _insert_before_sppf(base_record["yaml"], [-1, 1, "nn.Identity", []])
    m = DetectionModel(cfg)
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], m)
    assert (res.transferred, res.total) == (349, 349)
    # matching by key name would have kept only layers 0-8
    by_name = sum(1 for k, v in base_record["state_dict"].items()
                  if k in m.state_dict() and m.state_dict()[k].shape == v.shape)
    assert by_name < 200
    with torch.no_grad():
        assert torch.equal(m.eval()(images)[0], base_out)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_cbam_349_and_identity_start(base_record, images, base_out, log_warnings):
    torch.manual_seed(0)
    m = DetectionModel("yolov5n_CBAM.yaml")
    h = _Lines()
    LOGGER.addHandler(h)
    try:
        res = load_pretrained(base_record, m, source="yolov5n.pt")
    finally:
        LOGGER.removeHandler(h)
    assert "Transferred 349/349 items from yolov5n.pt" in h.lines and log_warnings == []
    assert res.identity == ["model.9"] and m.model[9].gate.item() == 0
    with torch.no_grad():
        assert torch.equal(m.eval()(images)[0], base_out)
    # without the identity start a fresh CBAM changes every output after it
    torch.manual_seed(0)
    raw = DetectionModel("yolov5n_CBAM.yaml")
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], raw, identity_start=False)
    assert res.new_blocks == ["model.9"] and res.identity == [] and raw.model[9].gate.item() == 1
    with torch.no_grad():
        assert (raw.eval()(images)[0] - base_out).abs().max() > 1.0


@pytest.mark.parametrize("cfg", KEEPING)
def test_zoo_configs_keep_base_outputs(cfg, base_record, images, base_out):
    torch.manual_seed(0)
    m = DetectionModel(cfg)
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], m)
    assert (res.transferred, res.total) == (349, 349), cfg
    assert res.identity, cfg
    with torch.no_grad():
        out = m.eval()(images)[0]
    assert torch.allclose(out, base_out, atol=1e-4, rtol=0), (cfg, (out - base_out).abs().max().item())


def test_replace_config_partial_and_honest(base_record):
    m = DetectionModel("yolov5n_CBAM-replace.yaml")
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], m)
    # the four backbone C3 blocks are gone; everything else moves
    c3 = sum(1 for k in base_record["state_dict"] if k.split(".")[1] in ("2", "4", "6", "8"))
    assert res.transferred == res.total - c3 and res.total == 349
    assert len(res.skipped) == c3


def test_other_class_count_skips_head(base_record):
    m = DetectionModel("yolov5n.yaml", nc=3)
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], m)
    assert res.transferred == 349 - 6  # Detect's three 1x1 convs (weight + bias) change shape
    assert sorted(res.skipped) == sorted(f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias"))


def test_trained_attention_keeps_its_gate():
    """A checkpoint that already holds the block: its weights and gate transfer, no reset."""
    torch.manual_seed(0)
    src = DetectionModel("yolov5n_CBAM.yaml")
    with torch.no_grad():
        src.model[9].gate.fill_(0.7)
    dst = DetectionModel("yolov5n_CBAM.yaml")
    res = transfer_weights(src.state_dict(), src.yaml, dst)
    assert res.transferred == res.total and not res.identity
    assert dst.model[9].gate.item() == pytest.approx(0.7)


@pytest.fixture(scope="module")
def base_val_256(base_record, coco128, tmp_path_factory):
    """yolov5n.pt's own coco128 metrics at 256 px: (P, R, mAP50, mAP50-95)."""
    import val

    m = model_from_record(base_record)
    res = val.run("coco128.yaml", model=m.eval(), batch_size=32, imgsz=256, workers=2,
                  save_dir=tmp_path_factory.mktemp("val"), plots=False)[0]
    return tuple(res[:4])


@pytest.mark.parametrize("cfg", ["yolov5n_CBAM.yaml", "yolov5n_SE.yaml", "yolov5n_CA.yaml", "yolov5n_GAM.yaml",
                                 "yolov5n_C3CBAM.yaml", "yolov5n_CC.yaml"])
def test_val_identity_start_equals_base(cfg, base_record, base_val_256, tmp_path):
    """Before any training step an attention config scores exactly yolov5n.pt's coco128 P, R and mAP
    (the fine-tune's first batch also runs with gate 0: models/gates.py). 256 px keeps it fast; every
    other shipped config is held to the base's outputs by test_zoo_configs_keep_base_outputs."""
    import val

    torch.manual_seed(0)
    m = DetectionModel(cfg)
    load_pretrained(base_record, m, source="yolov5n.pt")
    m.names = base_record["names"]
    res = val.run("coco128.yaml", model=m.eval(), batch_size=32, imgsz=256, workers=2, save_dir=tmp_path,
                  plots=False)[0]
    assert tuple(res[:4]) == base_val_256, cfg
    assert base_val_256[3] > 0.2  # a real detector at 256 px, not an empty comparison


# ---- inserted channel-keeping blocks anywhere, Detect's inputs included (issue 11) ----------------


def _starts_as_base(cfg: dict, base_record, images, base_out) -> DetectionModel:
    """Build `cfg`, transfer yolov5n.pt: all 349 tensors, and exactly the pretrained output."""
    torch.manual_seed(0)
    m = DetectionModel(cfg)
    res = transfer_weights(base_record["state_dict"], base_record["yaml"], m)
    assert (res.transferred, res.total) == (349, 349)
    with torch.no_grad():
        assert torch.equal(m.eval()(images)[0], base_out)
    return m


@pytest.mark.parametrize("k", range(1, 25))
def test_cbam_after_every_layer(k, base_record, images, base_out):
    """CBAM as layer k (after layer k-1) of yolov5n.yaml, indices rewritten by the insert helper."""
    base = load_cfg(base_record["yaml"])
    cfg = insert_block(base, "CBAM", k)
    # every base edge j -> i is now new(j) -> new(i), except that edges leaving layer k-1 pass the CBAM
    new = [i + (i >= k) for i in range(25)]
    src, dst = abs_froms(base["backbone"] + base["head"]), abs_froms(cfg["backbone"] + cfg["head"])
    for i, froms in enumerate(src):
        assert dst[new[i]] == [k if j == k - 1 else new[j] for j in froms], (k, i)
    assert dst[k] == [k - 1]
    _starts_as_base(cfg, base_record, images, base_out)


def test_block_feeding_detect_case(base_record, images, base_out, log_warnings):
    """The issue's case 3: CBAM after layer 23, Detect on [17, 20, 24]: 349/349 (342 before), Detect's
    convolutions and anchors included, and the pretrained output."""
    cfg = insert_block(load_cfg(base_record["yaml"]), "CBAM", 24)
    assert cfg["head"][-1][0] == [17, 20, 24]
    m = _starts_as_base(cfg, base_record, images, base_out)
    torch.testing.assert_close(m.model[25].anchors, model_from_record(base_record).model[24].anchors, rtol=0, atol=0)
    assert log_warnings == []


def test_blocks_on_all_detect_inputs(base_record, images, base_out, log_warnings):
    cfg = edit_cfg(base_record["yaml"], insert=["CBAM@18,21,24"])
    assert cfg["head"][-1][0] == [18, 22, 26]
    _starts_as_base(cfg, base_record, images, base_out)
    assert log_warnings == []


# ---- weights of another scale; transfers below 90% --------------------------------------------------


def test_other_scale_weights_warn(base_record, log_warnings):
    """The issue's case 4: yolov5n.pt into yolov5s_CBAM.yaml moved 61/349 tensors without a word."""
    m = DetectionModel("yolov5s_CBAM.yaml")
    res = load_pretrained(base_record, m, source="yolov5n.pt")
    assert res.transferred == 61
    assert res.source_layers == 25 and len(m.model) == 26  # yolov5n.pt's layers, for --freeze
    scale, low = log_warnings
    assert scale.startswith("WARNING: yolov5n.pt is YOLOv5n (depth_multiple 0.33, width_multiple 0.25) but "
                            "yolov5s_CBAM.yaml builds YOLOv5s (depth_multiple 0.33, width_multiple 0.5)")
    assert "--cfg yolov5n_CBAM.yaml for these weights or --weights yolov5s.pt for this config" in scale
    assert low.startswith("WARNING: only 61/349 tensors (17%) of yolov5n.pt fit this model; layers left with new "
                          "weights: 0 (Conv), 1 (Conv), 2 (C3)")
    assert "25 (Detect)" in low


def test_custom_scale_and_low_transfer_warn(base_record, log_warnings):
    cfg = load_cfg("yolov5n.yaml")
    cfg["width_multiple"], cfg["yaml_file"] = 0.3, "mine.yaml"
    load_pretrained(base_record, DetectionModel(cfg), source="yolov5n.pt")
    assert "but mine.yaml builds a custom scale (depth_multiple 0.33, width_multiple 0.3)" in log_warnings[0]
    assert log_warnings[0].endswith("Set depth_multiple and width_multiple in mine.yaml to the weights' values, "
                                    "0.33 and 0.25.")
    assert log_warnings[1].startswith("WARNING: only ")


def test_replaced_blocks_below_90_percent_warn(base_record, log_warnings):
    """Same scale, but the backbone's C3 gone (CBAM-replace): no scale message, the new layers listed."""
    res = load_pretrained(base_record, DetectionModel("yolov5n_CBAM-replace.yaml"), source="yolov5n.pt")
    assert res.transferred < 0.9 * res.total
    assert len(log_warnings) == 1
    assert log_warnings[0].endswith("layers left with new weights: 2 (CBAM), 4 (CBAM), 6 (CBAM), 8 (CBAM)")


def test_compare_refuses_other_scale(weights_n, tmp_path):
    import compare

    with pytest.raises(ValueError, match=r"yolov5n.pt is YOLOv5n .* but yolov5s_CBAM.yaml builds YOLOv5s .*refuses"):
        compare.run(cfg=["yolov5s_CBAM.yaml"], data="coco128.yaml", weights=str(weights_n), epochs=1,
                    project=str(tmp_path))
    assert not any(tmp_path.iterdir())  # refused before measuring anything


def test_block_feeding_detect_keeps_the_pretrained_map(base_record, coco128, tmp_path):
    """Case 3 scored on 8 coco128 images before any training: the pretrained model's mAP (the
    342/349 transfer started at 0)."""
    import val

    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:8]
    (tmp_path / "eight.txt").write_text("".join(f"{p}\n" for p in images))
    data = {"path": str(coco128), "train": str(tmp_path / "eight.txt"), "val": str(tmp_path / "eight.txt"),
            "nc": len(base_record["names"]), "names": base_record["names"]}
    scores = []
    for cfg in (base_record["yaml"], insert_block(load_cfg(base_record["yaml"]), "CBAM", 24)):
        m = DetectionModel(cfg)
        load_pretrained(base_record, m, source="yolov5n.pt")
        m.names = base_record["names"]
        (_, _, map50, map5095, *_), _, _ = val.run(data, model=m.eval(), batch_size=8, imgsz=320, workers=0,
                                                   save_dir=tmp_path, plots=False)
        scores.append((map50, map5095))
    assert scores[0] == scores[1] and scores[0][0] > 0.3, scores


def test_scale_hint_names_only_configs_that_resolve(base_record, tmp_path, log_warnings):
    """A config outside models/ (yolov5s_mine.yaml, not a shipped name): no --cfg it cannot find;
    the multiples to set and the weights that fit instead. A shipped one: its other scale, which resolves."""
    from models.transfer import scale_mismatch
    from models.yolo import resolve_cfg

    d = load_cfg("yolov5s_CBAM.yaml")
    d["head"][0] = [-1, 1, "Conv", [256, 1, 1]]  # a head of its own: no other-scale twin under models/
    path = tmp_path / "yolov5s_mine.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in d.items() if k != "yaml_file"}, sort_keys=False))
    msg = scale_mismatch(base_record["yaml"], DetectionModel(path).yaml, "yolov5n.pt", path.name)
    assert "--cfg" not in msg
    assert msg.endswith("Use --weights yolov5s.pt for this config, or set depth_multiple and width_multiple in "
                        "yolov5s_mine.yaml to the weights' values, 0.33 and 0.25.")
    with pytest.raises(FileNotFoundError):
        resolve_cfg("yolov5n_mine.yaml")
    own = tmp_path / "yolov5s_CBAM.yaml"  # a shipped name, another architecture: its twin does not fit either
    own.write_text(path.read_text())
    assert "--cfg" not in scale_mismatch(base_record["yaml"], DetectionModel(own).yaml, "yolov5n.pt", own.name)
    shipped = scale_mismatch(base_record["yaml"], DetectionModel("yolov5s_CBAM.yaml").yaml, "yolov5n.pt",
                             "yolov5s_CBAM.yaml")
    assert "--cfg yolov5n_CBAM.yaml for these weights" in shipped
    assert resolve_cfg("yolov5n_CBAM.yaml").is_file()
