"""The YAML edit helper (models/yaml_edit.py, `python models/yolo.py --insert/--in-c3/--replace-c3`):
it reproduces the shipped configs, rewrites every index, and its output for a user's own YAML
builds, passes the graph check and takes the user's weights completely."""

from __future__ import annotations

import pytest
import torch
import yaml

from models.attention.make_configs import HEADER, OUT
from models.transfer import transfer_weights
from models.yaml_edit import in_c3, insert_block, render, replace_c3
from models.yolo import DetectionModel, ModelConfigError, edit_cfg, load_cfg, main

pytestmark = pytest.mark.usefixtures("one_thread")

USER_YAML = """\
# my two-level detector: a custom head reading P4 and P5
nc: 4
depth_multiple: 0.33
width_multiple: 0.25
activation: nn.ReLU()
anchors:
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
  [[-1, 1, Conv, [32, 6, 2, 2]],
   [-1, 1, Conv, [64, 3, 2]],
   [-1, 1, C3, [64]],
   [-1, 1, Conv, [128, 3, 2]],
   [-1, 2, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],
   [-1, 2, C3, [256]],
   [-1, 1, Conv, [512, 3, 2]],
   [-1, 1, C3, [512]],
   [-1, 1, SPPF, [512, 5]],       # 9
  ]
head:
  [[-1, 1, Conv, [256, 1, 1]],    # 10
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 6], 1, Concat, [1]],
   [-1, 1, C3, [256, False]],     # 13 P4 output
   [-1, 1, Conv, [256, 3, 2]],
   [[-1, 10], 1, Concat, [1]],
   [-1, 1, C3, [512, False]],     # 16 P5 output
   [[13, 16], 1, Detect, [nc, anchors]],
  ]
"""


def _rows(d: dict) -> list[list]:
    return d["backbone"] + d["head"]


def test_reproduces_the_shipped_cbam_config():
    text = render(insert_block(load_cfg("yolov5s.yaml"), "CBAM", 9), ["YOLOv5s with CBAM before SPPF", *HEADER])
    assert text == (OUT / "yolov5s_CBAM.yaml").read_text()


def test_cli_writes_the_shipped_layout(tmp_path):
    out = tmp_path / "my_CBAM.yaml"
    main(["--cfg", "yolov5s.yaml", "--insert", "CBAM@9", "--save", str(out)])
    mine, shipped = out.read_text().splitlines(), (OUT / "yolov5s_CBAM.yaml").read_text().splitlines()
    assert mine[:2] == ["# my_CBAM: yolov5s.yaml --insert CBAM@9",
                        f"# Written by python models/yolo.py --cfg yolov5s.yaml --insert CBAM@9 --save {out}"]
    assert mine[2:] == shipped[3:]  # only the comment header differs
    assert DetectionModel(out).model[9].type == "CBAM"


def test_c3_forms_equal_the_shipped_ones():
    s = load_cfg("yolov5s.yaml")
    for d, name in ((edit_cfg(s, in_c3=["CBAM"]), "yolov5s_C3CBAM.yaml"),
                    (edit_cfg(s, replace_c3=["SE@2,4,6,8"]), "yolov5s_SE-replace.yaml")):
        assert _rows(d) == _rows(yaml.safe_load((OUT / name).read_text()))


def test_insert_indices_refer_to_the_input_yaml():
    """A block on each Detect input of yolov5n: every later index moves, Detect reads the blocks."""
    d = edit_cfg("yolov5n.yaml", insert=["CBAM@18,21,24"])
    rows = _rows(d)
    assert [i for i, r in enumerate(rows) if r[2] == "CBAM"] == [18, 22, 26]
    assert rows[-1][0] == [18, 22, 26]
    assert [r[0] for r in rows if r[2] == "Concat"] == [[-1, 6], [-1, 4], [-1, 14], [-1, 10]]


@pytest.mark.parametrize("at", [3, 9, 12, 13])
def test_relative_references_are_rewritten(at):
    """A YAML writing its P4 skip as [-1, -6] (= layer 6 from layer 12) gets the same graph as [-1, 6]."""
    from models.graph_check import abs_froms

    rel = load_cfg("yolov5n.yaml")
    assert rel["head"][2][0] == [-1, 6]
    rel["head"][2][0] = [-1, -6]
    a, b = insert_block(rel, "CBAM", at), insert_block(load_cfg("yolov5n.yaml"), "CBAM", at)
    assert abs_froms(_rows(a)) == abs_froms(_rows(b))


def test_bad_edits_are_refused():
    s = load_cfg("yolov5s.yaml")
    with pytest.raises(ModelConfigError, match=r"Conv does not keep its input width"):
        insert_block(s, "Conv", 9)
    with pytest.raises(ModelConfigError, match=r"cannot insert CBAM at 25: the index must be 1..24"):
        insert_block(s, "CBAM", 25)
    with pytest.raises(ModelConfigError, match=r"unknown module 'CBAMM'"):
        insert_block(s, "CBAMM", 9)
    with pytest.raises(ModelConfigError, match=r"layer 13 \(C3\) turns 1024 channels into 512; CBAM keeps the width"):
        replace_c3(s, "CBAM", [13])
    with pytest.raises(ModelConfigError, match=r"layer\(s\) \[3\] are not C3 layers"):
        in_c3(s, "CBAM", [3])
    with pytest.raises(ModelConfigError, match=r"--insert 'CBAM': give the index"):
        edit_cfg(s, insert=["CBAM"])


def test_user_yaml_with_custom_head(tmp_path, log_warnings):
    """Blocks before SPPF, on both Detect inputs and inside two C3: builds silently, transfers 100%,
    starts as the user's model."""
    user = tmp_path / "mine.yaml"
    user.write_text(USER_YAML)
    torch.manual_seed(0)
    src = DetectionModel(user).eval()
    edited = edit_cfg(user, insert=["CBAM@9", "SE@14", "CBAM@17"], in_c3=["ECA@4,6"])
    assert _rows(edited)[-1][0] == [15, 19]
    out = tmp_path / "mine_att.yaml"
    out.write_text(render(edited, ["mine with attention"]))
    dst = DetectionModel(out)
    assert log_warnings == []
    assert [dst.model[i].type for i in (4, 6, 9, 15, 19)] == ["C3ECA", "C3ECA", "CBAM", "SE", "CBAM"]
    res = transfer_weights(src.state_dict(), src.yaml, dst)
    assert res.transferred == res.total == len(src.state_dict())
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x)[0], src(x)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("flag", ["--replace-c3", "--in-c3"])
def test_c3_edit_on_a_yaml_without_c3_is_refused(tmp_path, log_warnings, flag):
    """A backbone without C3 layers (here: plain Convs): the edit must not silently do nothing."""
    d = load_cfg("yolov5n.yaml")
    d["backbone"] = [[f, n, "Conv", [a[0], 3, 1]] if m == "C3" else [f, n, m, a] for f, n, m, a in d["backbone"]]
    cfg = tmp_path / "noc3.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in d.items() if k != "yaml_file"}, sort_keys=False))
    out = tmp_path / "out.yaml"
    with pytest.raises(SystemExit) as e:
        main(["--cfg", str(cfg), flag, "SE", "--save", str(out)])
    assert e.value.code == 2 and not out.exists()
    (err,) = log_warnings
    assert f"noc3.yaml: {flag} SE: the backbone has no C3 layer, so there is nothing to change" in err
    assert f"{flag} SE@I,J" in err and "--insert SE@K" in err
    edited = edit_cfg(cfg, **{flag[2:].replace("-", "_"): ["SE@20"]})  # a head C3 named explicitly
    assert [r[2] for r in edited["head"]].count("C3") == 3
    assert edited["head"][20 - 10][2] == ("SE" if flag == "--replace-c3" else "C3SE")
