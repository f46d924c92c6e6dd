"""The semantic check of model YAMLs: blog-style channel counts, unused layers, Detect inputs,
indices left unshifted after an insertion. Every fault is a YAML generated here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from models.attention.make_configs import block_names
from models.registry import lookup
from models.yaml_edit import insert_block
from models.yolo import DetectionModel, ModelConfigError, load_cfg

SHARED_CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def _save(tmp_path: Path, d: dict, name: str) -> Path:
    """`d` written as a YAML file (the error messages name the file)."""
    d = {k: v for k, v in d.items() if k != "yaml_file"}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def _with_layer(cfg: str, i: int, row: list) -> dict:
    d = load_cfg(cfg)
    nb = len(d["backbone"])
    (d["backbone"] if i < nb else d["head"])[i if i < nb else i - nb] = row
    return d


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- case 1: a channel count given to a channel-keeping block ----------------------------


@pytest.mark.parametrize("row,block_params", [
    ([-1, 1, "CBAM", [1024]], 32_867),  # the figures: 1,123 before the fix
    ([-1, 1, "CA", [1024, 1024]], 25_633),  # 1,575,937 before
    ([-1, 1, "CoordAtt", [1024]], 25_633),
])
def test_blog_channel_count_is_dropped_with_one_warning(tmp_path, log_warnings, row, block_params):
    p = _save(tmp_path, _with_layer("yolov5s_CBAM.yaml", 9, row), "blog.yaml")
    m = DetectionModel(p)
    assert _params(m.model[9]) == block_params
    assert _params(m) == _params(DetectionModel(f"yolov5s_{lookup(row[2]).cls.__name__}.yaml"))
    assert len(log_warnings) == 1
    assert f"blog.yaml: layer 9 ({row[2]} {row[3]})" in log_warnings[0] and "write []" in log_warnings[0]


@pytest.mark.parametrize("name", block_names())
def test_every_keeping_block_takes_the_blog_form(name, tmp_path, log_warnings):
    """yolov5n: layer 8 is written [1024] (256 after width_multiple); `[1024]` at the block is dropped."""
    p = _save(tmp_path, insert_block(load_cfg("yolov5n.yaml"), name, 9, [1024]), f"n_{name}.yaml")
    m = DetectionModel(p)
    torch.manual_seed(0)
    assert _params(m.model[9]) == _params(lookup(name).cls(256))
    assert len(log_warnings) == 1 and "layer 9" in log_warnings[0]


def test_one_warning_per_model_for_several_layers(tmp_path, log_warnings):
    d = insert_block(insert_block(load_cfg("yolov5n.yaml"), "SE", 9, [1024]), "CBAM", 5, [256])
    DetectionModel(_save(tmp_path, d, "two.yaml"))
    assert len(log_warnings) == 1
    assert "layer 5 (CBAM [256])" in log_warnings[0] and "layer 10 (SE [1024])" in log_warnings[0]


@pytest.mark.parametrize("cfg,row,what", [
    ("yolov5s_CBAM.yaml", [-1, 1, "CBAM", [512]], r"option r=512 is a reduction ratio \(hidden width 512 // r\): it "
                                                 r"must be 1..511 .*; 512 looks like a channel count"),  # hidden width 1
    ("yolov5s_CBAM.yaml", [-1, 1, "CA", [1024, 512]], r"option r=512 is a reduction ratio.*looks like a channel count"),
    ("yolov5n_CBAM.yaml", [-1, 1, "CBAM", [2048]], r"option r=2048 is a reduction ratio .*must be 1..255"),  # not a width
    ("yolov5n_CBAM.yaml", [-1, 1, "CBAM", [1024.0]], r"option r=1024.0 must be an integer.*; 1024 looks like a channel"),
    ("yolov5n_CBAM.yaml", [-1, 1, "CBAM", [0]], r"option r=0 is a reduction ratio"),
    ("yolov5n_CBAM.yaml", [-1, 1, "SGE", [512]], r"option groups=512 is a group count: it must be 1..256"),
    ("yolov5n_CBAM.yaml", [-1, 1, "CBAM", [16, 7, 3]], r"CBAM takes at most 2 option\(s\) \(r, k\), got 3"),
])
def test_unusable_block_option_is_refused(tmp_path, cfg, row, what):
    """Fix of the hidden width of 1: a number the block cannot use (a ratio >= the width, a float,
    a group count above the width) is refused, naming file, layer and what to write."""
    p = _save(tmp_path, _with_layer(cfg, 9, row), "wrong.yaml")
    with pytest.raises(ModelConfigError, match=rf"wrong.yaml: layer 9 \({row[2]}\): {row[2]} .*{what}.*Write \[\] for "
                                               r"the paper's defaults, or \[1024\]"):
        DetectionModel(p)


def test_every_ratio_block_refuses_a_ratio_at_the_width():
    """The hook covers the whole kind: every block with a reduction ratio refuses r >= C and a float."""
    ratio_blocks = [n for n in block_names() if "r" in inspect.signature(lookup(n).cls.__init__).parameters]
    assert len(ratio_blocks) >= 10
    for name in ratio_blocks:
        cls = lookup(name).cls
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]
        before = [p.default for p in params[:[p.name for p in params].index("r")]]  # options ahead of r
        assert cls.check_args(64) == [] and cls.check_args(64, *before, 4) == []
        for bad in (64, 128, 0, 8.0):
            with pytest.raises(ValueError, match="option r=.*(reduction ratio|must be an integer)"):
                cls.check_args(64, *before, bad)


@pytest.mark.parametrize("row", [[-1, 1, "SGE", [64]], [-1, 1, "SE", [64]], [-1, 1, "CBAM", [8]], [-1, 1, "CBAM", [1024, 64]]])
def test_option_equal_to_a_yaml_width_is_accepted(tmp_path, log_warnings, row):
    """SGE's own default group count (64) is also a width of yolov5s.yaml: a valid option, not a
    channel count; only the layer's own input width (1024) is read as one."""
    m = DetectionModel(_save(tmp_path, _with_layer("yolov5s_CBAM.yaml", 9, row), "opt.yaml"))
    assert [w for w in log_warnings if "blog style" not in w] == []
    assert len(log_warnings) == (1 if row[3][0] == 1024 else 0)
    ref = lookup(row[2]).cls(512, *[a for a in row[3] if a != 1024])
    assert _params(m.model[9]) == _params(ref)


def test_implausible_option_equal_to_a_width_warns(tmp_path, log_warnings):
    """CBAM [256] at a 512-channel layer: usable (hidden width 2) but 256 is a width of the YAML."""
    m = DetectionModel(_save(tmp_path, _with_layer("yolov5s_CBAM.yaml", 9, [-1, 1, "CBAM", [256]]), "odd.yaml"))
    assert m.model[9].mlp[0].out_channels == 2
    assert len(log_warnings) == 1
    assert "odd.yaml: layer 9 (CBAM): CBAM [256]: reduction ratio r=256 leaves a hidden width of 2" in log_warnings[0]
    assert "256 looks like a channel count" in log_warnings[0]


def test_block_options_are_not_channel_counts(tmp_path, log_warnings):
    """A reduction ratio (not a width of the YAML) stays an option; after a channel count too."""
    for args in ([8], [1024, 8]):
        m = DetectionModel(_save(tmp_path, _with_layer("yolov5s_CBAM.yaml", 9, [-1, 1, "CBAM", args]), "opt.yaml"))
        assert m.model[9].mlp[0].out_channels == 512 // 8
    assert len(log_warnings) == 1  # only the [1024, 8] form


# ---- case 2: head indices not shifted after an insertion -----------------------------------


@pytest.mark.parametrize("k", range(1, 25))
def test_unshifted_insertion_is_explained(tmp_path, k):
    """A CBAM added as layer k of yolov5n.yaml with every index left as it was."""
    d = load_cfg("yolov5n.yaml")
    rows = d["backbone"] + d["head"]
    rows.insert(k, [-1, 1, "CBAM", []])
    nb = len(d["backbone"]) + (k <= len(d["backbone"]))
    d["backbone"], d["head"] = rows[:nb], rows[nb:]
    with pytest.raises(ModelConfigError) as e:
        DetectionModel(_save(tmp_path, d, "noshift.yaml"))
    msg = str(e.value)
    assert msg.startswith(f"noshift.yaml: layer {k} (CBAM) was probably inserted without shifting the indices")
    assert f"--insert CBAM@{k}" in msg


def test_unshifted_insertion_before_sppf_names_the_dead_layer(tmp_path):
    """The issue's input: layer 24 (a C3) computed and never used, Detect on three Concat layers."""
    d = load_cfg("yolov5n.yaml")
    d["backbone"].insert(9, [-1, 1, "CBAM", []])
    with pytest.raises(ModelConfigError) as e:
        DetectionModel(_save(tmp_path, d, "noshift.yaml"))
    msg = str(e.value)
    assert "layer 24 (C3) is computed but no later layer reads it" in msg
    assert "Detect (layer 25) reads Concat layer(s) 17, 20, 23" in msg
    assert "Detect would read [18, 21, 24]" in msg and "--insert CBAM@9" in msg


def test_unused_layer_without_insertion_pattern(tmp_path):
    d = load_cfg("yolov5n.yaml")
    d["head"].insert(-1, [-1, 1, "Conv", [256, 1, 1]])  # layer 24, Detect still reads 17, 20, 23
    with pytest.raises(ModelConfigError, match=r"dead.yaml: layer 24 \(Conv\) is computed but no later layer reads it.*"
                                               r"Fix the 'from' indices"):
        DetectionModel(_save(tmp_path, d, "dead.yaml"))


# ---- Detect inputs ---------------------------------------------------------------------------


def test_detect_reading_a_concat_is_an_error(tmp_path):
    d = load_cfg("yolov5n.yaml")
    d["head"][-1][0] = [16, 20, 23]
    d["head"][-2][0] = -1
    with pytest.raises(ModelConfigError, match=r"concat.yaml: .*Detect \(layer 24\) reads Concat layer\(s\) 16: "):
        DetectionModel(_save(tmp_path, d, "concat.yaml"))


def test_detect_reading_two_layers_of_one_resolution_is_an_error(tmp_path):
    """Detect on layer 13 (C3, stride 16) and 20 (stride 16): two levels with one stride."""
    d = load_cfg("yolov5n.yaml")
    d["head"][-1][0] = [13, 20, 23]
    with pytest.raises(ModelConfigError, match=r"mid.yaml: Detect \(layer 24\) reads layers 13 and 20 at the same "
                                               r"resolution"):
        DetectionModel(_save(tmp_path, d, "mid.yaml"))


FPN_HEAD = [  # a plain top-down FPN: every C3 output is both a Detect level and the input of a lateral 1x1 Conv
    [-1, 3, "C3", [1024, False]],  # 10 (P5)
    [-1, 1, "Conv", [512, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],
    [-1, 3, "C3", [512, False]],  # 14 (P4)
    [-1, 1, "Conv", [256, 1, 1]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],
    [-1, 3, "C3", [256, False]],  # 18 (P3)
    [[18, 14, 10], 1, "Detect", ["nc", "anchors"]],
]
UPSTREAM_FPN_HEAD = [  # the layout of upstream's yolov5-fpn.yaml: upsample first, 1x1 Conv after the Concat
    [-1, 3, "C3", [1024, False]],  # 10 (P5)
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],
    [-1, 1, "Conv", [512, 1, 1]],
    [-1, 3, "C3", [512, False]],  # 14 (P4)
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],
    [-1, 1, "Conv", [256, 1, 1]],
    [-1, 3, "C3", [256, False]],  # 18 (P3)
    [[18, 14, 10], 1, "Detect", ["nc", "anchors"]],
]


@pytest.mark.parametrize("head", [FPN_HEAD, UPSTREAM_FPN_HEAD])
def test_fpn_heads_pass(tmp_path, log_warnings, head):
    """A layer read by Detect that also feeds a lateral Conv or an upsample is a legitimate level."""
    d = load_cfg("yolov5n.yaml")
    d["head"] = [list(r) for r in head]
    m = DetectionModel(_save(tmp_path, d, "fpn.yaml"))
    assert m.stride.tolist() == [8.0, 16.0, 32.0]
    assert log_warnings == []


def test_detect_skipping_its_attention_block_warns(tmp_path, log_warnings):
    """A CBAM on the P3 output that Detect does not read: sensible (it feeds P4), but said."""
    d = insert_block(load_cfg("yolov5n.yaml"), "CBAM", 18)
    assert d["head"][-1][0] == [18, 21, 24]
    d["head"][-1][0] = [17, 21, 24]
    DetectionModel(_save(tmp_path, d, "skip.yaml"))
    assert len(log_warnings) == 1
    assert "skip.yaml: Detect (layer 25) reads layer 17 (C3), but its branch goes on into layer 18 (CBAM)" \
        in log_warnings[0]


# Every shipped config passes silently: asserted where each is built anyway
# (tests/test_models.py, tests/test_attention_configs.py).


# ---- the reported inputs, as filed ---------------------------------------------------------


def test_reported_case_files(log_warnings):
    if not SHARED_CASES.is_dir():
        pytest.fail(f"test fixture missing: {SHARED_CASES}")
    for name in ("yolov5s_cbam_chan.yaml", "yolov5s_ca_chan.yaml", "yolov5s_coordatt_chan.yaml"):
        DetectionModel(SHARED_CASES / name)
    assert len(log_warnings) == 3 and all("blog style" in w for w in log_warnings)
    with pytest.raises(ModelConfigError, match=r"yolov5n_cbam_noshift.yaml: layer 9 \(CBAM\) was probably inserted"):
        DetectionModel(SHARED_CASES / "yolov5n_cbam_noshift.yaml")
    for name in ("yolov5n_p5CBAM.yaml", "yolov5n_neckCBAM.yaml"):  # valid: no message
        DetectionModel(SHARED_CASES / name)
    assert len(log_warnings) == 3


def test_blog_warning_once_per_run(tmp_path, log_warnings):
    """The unshifted-insert diagnosis re-parses the YAML, and train.py builds a model more than once:
    the blog-style warning is still given once per file and layer in a run of the program."""
    d = load_cfg("yolov5n.yaml")
    d["backbone"].insert(9, [-1, 1, "CBAM", [1024]])  # blog style and indices left unshifted
    p = _save(tmp_path, d, "both.yaml")
    with pytest.raises(ModelConfigError, match=r"layer 9 \(CBAM\) was probably inserted without shifting"):
        DetectionModel(p)
    assert len(log_warnings) == 1 and "both.yaml: layer 9 (CBAM [1024])" in log_warnings[0]
    blog = _save(tmp_path, insert_block(load_cfg("yolov5n.yaml"), "CBAM", 9, [1024]), "blog.yaml")
    for _ in range(2):
        DetectionModel(blog)
    assert len(log_warnings) == 2 and "blog.yaml: layer 9 (CBAM [1024])" in log_warnings[1]
