"""Edit model YAMLs without touching an index by hand: insert a block, put it in C3, replace C3.

The three placements the project documents, for any YAML (dicts as :func:`models.yolo.load_cfg`
returns them; the input is never modified):

:func:`insert_block`  ``<Block>@K``: the block becomes layer K, reading layer K-1. Every later
                      absolute ``from`` index >= K grows by one, and references to layer K-1
                      now read the block (it refines K-1's output for every consumer, Detect
                      included). Relative ``-1`` references stay as they are.
:func:`in_c3`         ``C3`` layers become ``C3<Block>`` (the block ends every bottleneck);
                      indices unchanged.
:func:`replace_c3`    ``C3`` layers become the block itself; only C3 layers that keep their
                      width can be replaced by a channel-keeping block. Indices unchanged.

:func:`render` writes a dict in the layout of the shipped configs (flow lists, ``# N`` index
comments), so ``models/attention/make_configs.py`` produces the zoo with these functions.
Command line: ``python models/yolo.py --cfg yolov5s.yaml --insert CBAM@9 --save my_CBAM.yaml``.
"""

from __future__ import annotations

import copy

from models.graph_check import abs_froms, config_error, shift_after_insert
from models.registry import Channels, lookup

BARE = {"None", "nc", "anchors"}  # names parse_model resolves; other strings are quoted
CONFIG_KEYS = ("nc", "depth_multiple", "width_multiple")  # written first, in this order


def _keeping_block(name: str, src: str) -> None:
    try:
        spec = lookup(name)
    except KeyError as e:
        raise config_error(f"{src}: {e.args[0]}") from None
    if spec.channels is not Channels.KEEP:
        raise config_error(f"{src}: {name} does not keep its input width ({spec.channels.value}); only channel-keeping "
                     "blocks can be inserted or put in place of C3 without other edits")


def _rows(cfg: dict) -> list[list]:
    return [list(r) for r in cfg["backbone"]] + [list(r) for r in cfg["head"]]


def _split(cfg: dict, rows: list[list], nb: int) -> dict:
    out = copy.deepcopy(cfg)
    out["backbone"], out["head"] = rows[:nb], rows[nb:]
    return out


def insert_block(cfg: dict, name: str, at: int, args: list | None = None) -> dict:
    """`cfg` with ``[-1, 1, name, args]`` inserted as layer `at` (1 <= at <= index of the last layer),
    every index after it rewritten (see the module doc). Raises ModelConfigError for an unknown or
    width-changing block or an index out of range."""
    src = cfg.get("yaml_file", "<dict>")
    _keeping_block(name, src)
    rows, nb = _rows(cfg), len(cfg["backbone"])
    if not 1 <= at <= len(rows) - 1:
        raise config_error(f"{src}: cannot insert {name} at {at}: the index must be 1..{len(rows) - 1} "
                     f"(the block reads layer {at} - 1 and becomes layer {at})")
    rows.insert(at, [-1, 1, name, list(args or [])])
    return _split(cfg, shift_after_insert(rows, at), nb + (at <= nb))


def c3_layers(cfg: dict, layers: list[int] | None = None, edit: str = "--in-c3 CBAM") -> list[int]:
    """`layers` checked to be C3 layers of `cfg`; None: every C3 of the backbone. Raises
    ModelConfigError naming the file when there is none (`edit`, e.g. ``--replace-c3 SE``, is the
    edit asked for; the message suggests explicit layers or ``--insert``)."""
    rows = _rows(cfg)
    if layers is None:
        found = [i for i, r in enumerate(cfg["backbone"]) if r[2] == "C3"]
        if not found:
            name = edit.split()[-1]
            raise config_error(f"{cfg.get('yaml_file', '<dict>')}: {edit}: the backbone has no C3 layer, so there "
                               f"is nothing to change; name the layers ({edit}@I,J for C3 layers of the head) or "
                               f"insert the block where you want it: --insert {name}@K")
        return found
    bad = [i for i in layers if not 0 <= i < len(rows) or rows[i][2] != "C3"]
    if bad:
        raise config_error(f"{cfg.get('yaml_file', '<dict>')}: layer(s) {bad} are not C3 layers")
    return list(layers)


def in_c3(cfg: dict, name: str, layers: list[int] | None = None) -> dict:
    """`cfg` with the C3 `layers` (default: the backbone's) replaced by ``C3<name>``, same args."""
    src = cfg.get("yaml_file", "<dict>")
    try:
        lookup(f"C3{name}")
    except KeyError as e:
        raise config_error(f"{src}: {e.args[0]}") from None
    rows = _rows(cfg)
    for i in c3_layers(cfg, layers, f"--in-c3 {name}"):
        rows[i][2] = f"C3{name}"
    return _split(cfg, rows, len(cfg["backbone"]))


def replace_c3(cfg: dict, name: str, layers: list[int] | None = None) -> dict:
    """`cfg` with the C3 `layers` (default: the backbone's) replaced by ``[from, 1, name, []]``.
    Raises ModelConfigError when such a C3 changes the width (a channel-keeping block cannot)."""
    src = cfg.get("yaml_file", "<dict>")
    _keeping_block(name, src)
    rows, widths = _rows(cfg), nominal_widths(cfg)
    froms = abs_froms(rows)
    for i in c3_layers(cfg, layers, f"--replace-c3 {name}"):
        c_in = sum(widths[j] for j in froms[i])
        if c_in != rows[i][3][0]:
            raise config_error(f"{src}: layer {i} (C3) turns {c_in} channels into {rows[i][3][0]}; {name} keeps the "
                         "width, so it cannot replace this C3 (insert it after the C3 instead)")
        rows[i] = [rows[i][0], 1, name, []]
    return _split(cfg, rows, len(cfg["backbone"]))


def nominal_widths(cfg: dict) -> list[int]:
    """Each layer's output width as the YAML writes it (before width_multiple); 0 for Detect."""
    widths: list[int] = []
    for i, (f, _, m, args) in enumerate(_rows(cfg)):
        froms = [f] if isinstance(f, int) else list(f)
        ins = [widths[j] if i else cfg.get("ch", 3) for j in froms]
        rule = lookup(str(m)).channels
        widths.append(args[0] if rule is Channels.IN_OUT else sum(ins) if rule is Channels.CONCAT
                      else 0 if rule is Channels.DETECT else ins[0])
    return widths


def _fmt(v) -> str:
    """A YAML flow value the way the stock configs spell it."""
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return v if v in BARE else repr(v)
    return str(v)


def _render_rows(rows: list[list], start: int) -> str:
    lines = []
    for i, (f, n, m, args) in enumerate(rows, start):
        row = f"[{_fmt(f)}, {n}, {m}, {_fmt(args)}],"  # module names bare, as in yolov5s.yaml
        lines.append(f"   {row:<50}# {i}")
    lines[0] = "  [" + lines[0][3:]
    return "\n".join(lines) + "\n  ]\n"


def render(d: dict, header: list[str]) -> str:
    """YAML text of a model dict: `header` as comment lines, then the keys, anchors and layers
    (every layer row followed by its ``# index`` comment)."""
    keys = [k for k in CONFIG_KEYS if k in d]
    keys += [k for k in d if k not in (*CONFIG_KEYS, "anchors", "backbone", "head", "yaml_file")]
    anchors = d.get("anchors", 3)
    anchors = "\n" + "\n".join(f"  - {_fmt(a)}" for a in anchors) if isinstance(anchors, list) else f" {anchors}"
    return ("".join(f"# {h}\n" for h in header)
            + "".join(f"{k}: {d[k]}\n" for k in keys)
            + f"anchors:{anchors}\n\n"
            "# [from, repeats, module, args]\n"
            f"backbone:\n{_render_rows(d['backbone'], 0)}\n"
            f"head:\n{_render_rows(d['head'], len(d['backbone']))}")
