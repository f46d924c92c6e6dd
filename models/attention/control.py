"""Capacity controls: a plain block of about an attention block's parameter count, at its place.

A fine-tune into an attention config adds parameters and newly trained layers as well as
attention. To tell the two apart, ``compare.py --control`` adds for each attention config a
*control* config in which every attention block is replaced by :class:`Control`, a residual
1x1-conv bottleneck ``x + W2 SiLU(W1 x + b1) + b2`` whose hidden width is chosen so that its
parameter count is closest to the block it stands for. It derives from
:class:`~models.attention._base.AttentionBlock`, so it is inserted, identity-started (gate 0) and
faded in exactly as the attention block is. Blocks inside C3 (``C3CBAM``) become
:class:`C3Control` with the same per-bottleneck match.

FLOPs differ where the matched block works on pooled descriptors (SE, CBAM's channel MLP):
a 1x1 convolution of the same parameters runs at every pixel. compare.py shows both columns.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.attention._base import AttentionBlock
from models.attention.c3 import AttentionBottleneck, C3Attention
from models.common import C3
from models.registry import BLOCKS, Channels, lookup, register


def _matched_block(match: str) -> type[nn.Module]:
    """The attention block class registered as `match`; ValueError for anything else."""
    spec = BLOCKS.get(match)
    if spec is None or not spec.attention or spec.channels is not Channels.KEEP:
        known = sorted(n for n, s in BLOCKS.items() if s.attention and s.channels is Channels.KEEP)
        raise ValueError(f"Control matches a channel-keeping attention block, not {match!r} (one of {', '.join(known)})")
    return spec.cls


def hidden_width(c1: int, params: int) -> int:
    """Hidden width h >= 1 whose bottleneck (h * (2 c1 + 1) + c1 parameters) is closest to `params`."""
    return max(1, round((params - c1) / (2 * c1 + 1)))


class Control(AttentionBlock):
    """Residual 1x1-conv bottleneck with the parameter count of the attention block `match`
    (built with `match_args` on `c1` channels; its gate not counted). Shape-preserving:
    (B, c1, H, W) -> (B, c1, H, W)."""

    zero_layers = ("cv2",)  # zero_start: see AttentionBlock.zero_layers

    def __init__(self, c1: int, match: str = "CBAM", *match_args):
        super().__init__()
        block = _matched_block(match)(c1, *match_args)
        params = sum(p.numel() for n, p in block.named_parameters() if not n.endswith("gate"))
        self.match = match
        h = hidden_width(c1, params)
        self.cv1 = nn.Conv2d(c1, h, 1)
        self.act = nn.SiLU()
        self.cv2 = nn.Conv2d(h, c1, 1)

    @classmethod
    def check_args(cls, c1: int, *args) -> list[str]:
        """`args` = (match, *match_args): the matched block's name and its own options, checked by it."""
        if not args:
            return []
        if not isinstance(args[0], str):
            raise ValueError(f"Control's first option names the attention block it matches (e.g. 'CBAM'), got {args[0]!r}")
        block = _matched_block(args[0])
        return block.check_args(c1, *args[1:]) if hasattr(block, "check_args") else []

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.act(self.cv1(x)))


class C3Control(C3Attention):
    """C3 whose bottlenecks end with a :class:`Control` matched to the attention block `match`
    (``C3Control(c1, c2, n, shortcut, g, e, 'CBAM')`` stands for ``C3CBAM(c1, c2, n, shortcut, g, e)``);
    pretrained C3 weights load by name, as for every C3 variant."""

    block = Control

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 match: str = "CBAM"):
        C3.__init__(self, c1, c2, n, shortcut, g, e)
        _matched_block(match)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(AttentionBottleneck(c_, c_, shortcut, g, 1.0, lambda c: Control(c, match))
                                 for _ in range(n)))


register("Control", Control, Channels.KEEP, channel_args=0)  # not an attention block: no zoo config
register("C3Control", C3Control, Channels.IN_OUT, repeats=True)

C3_DEFAULTS = (True, 1, 0.5)  # C3's shortcut, g, e after c2


def control_row(row: list) -> list:
    """A model-YAML layer row with its attention block replaced by its control (other rows unchanged)."""
    f, n, name, args = row
    spec = lookup(name) if isinstance(name, str) and name in BLOCKS else None
    if spec is None or not spec.attention or name in ("Control", "C3Control"):
        return row
    args = list(args or [])
    if spec.channels is Channels.KEEP:
        return [f, n, "Control", [name, *args]]
    inner = getattr(spec.cls, "block", None)
    if inner is None or not issubclass(spec.cls, C3Attention):
        raise ValueError(f"no capacity control for {name}: only attention blocks and their C3 forms have one")
    c3_args = args[:1] + (args[1:] + list(C3_DEFAULTS)[len(args) - 1:])[:3] if args else args
    return [f, n, "C3Control", [*c3_args, inner.__name__]]


def control_config(cfg: str | Path) -> dict | None:
    """The model dict of `cfg` with every attention block replaced by its control; None when `cfg`
    has no attention block."""
    from models.yolo import load_cfg

    d = load_cfg(cfg)
    rows = {k: [control_row(r) for r in d[k]] for k in ("backbone", "head")}
    if rows == {k: d[k] for k in ("backbone", "head")}:
        return None
    return {**d, **rows}


def control_configs(cfgs: list[str], folder: str | Path) -> list[str]:
    """`cfgs` with, after each attention config, its control written to `folder`/<stem>_control.yaml
    (model files and configs without attention blocks get none). The baseline stays first."""
    from models.yaml_edit import render

    folder = Path(folder)
    out = []
    for c in cfgs:
        out.append(c)
        d = control_config(c)
        if d is None:
            continue
        stem = Path(c).stem
        path = folder / f"{stem}_control.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        d.pop("yaml_file", None)
        text = render(d, [f"capacity control of {stem}: every attention block replaced by a residual 1x1-conv "
                          "bottleneck of about its parameters (compare.py --control)"])
        if not path.is_file() or path.read_text() != text:  # unchanged text: same digest, the runs resume
            path.write_text(text)
        out.append(str(path))
    return out
