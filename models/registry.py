"""One table of every block a model YAML may name, and how its channels are derived.

`parse_model` never tests a module's type: it looks the YAML name up here and lets the
entry's :class:`Channels` rule say how to turn the YAML arguments into constructor
arguments and what the output channel count is. Adding a block is one call:

    register("CBAM", CBAM, Channels.KEEP)

Rules
-----
``IN_OUT``  ``args[0]`` is the output width (scaled by ``width_multiple``); the input width
            is inserted in front: ``Conv(c1, c2, *rest)``.
``KEEP``    a channel-preserving block: the input width is inserted in front of whatever the
            YAML gives (block options such as a reduction ratio), the output width equals
            the input width. A YAML never states channels for these blocks.
``PASS``    arguments are passed through unchanged, the output width equals the input width
            (``nn.Upsample``, ``nn.Identity``).
``CONCAT``  the output width is the sum of the input widths.
``DETECT``  a detection head: the list of input widths is appended to the arguments, an
            integer anchor count becomes that many unset (zero) anchors per level,
            which AutoAnchor computes before training (utils/autoanchor.py).
``BN``      ``nn.BatchNorm2d``: the only argument is the input width.

``channel_args`` (KEEP blocks only) is how many leading YAML arguments blog recipes write as
channel counts: 1 for most blocks (``[-1, 1, CBAM, [1024]]``), 2 for coordinate attention,
whose reference code takes ``(inp, oup)`` (``[-1, 1, CA, [1024, 1024]]``). `parse_model`
reads such a number as a channel count only when it equals the layer's input width before
``width_multiple`` (:func:`models.graph_check.strip_channel_args`); the options left are
validated by the class's ``check_args(c1, *args)`` classmethod when it has one
(:meth:`models.attention._base.AttentionBlock.check_args`).

``repeats=True`` marks blocks that take the YAML's repeat count as their own ``n`` argument
(C3 and its variants) instead of being stacked ``n`` times.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import nn


class Channels(enum.Enum):
    IN_OUT = "c1 -> c2 from args[0]"
    KEEP = "keeps channels"
    PASS = "args unchanged, keeps channels"
    CONCAT = "sums input channels"
    DETECT = "detection head"
    BN = "batch norm of input channels"


@dataclass(frozen=True)
class BlockSpec:
    """How `parse_model` builds one YAML module name."""

    name: str
    cls: type[nn.Module]
    channels: Channels
    repeats: bool = False
    attention: bool = False  # an attention block (or a block containing one)
    channel_args: int = 0  # leading YAML args that recipes write as channel counts (KEEP blocks)


BLOCKS: dict[str, BlockSpec] = {}


def register(
    name: str,
    cls: type[nn.Module],
    channels: Channels,
    *,
    repeats: bool = False,
    attention: bool = False,
    aliases: tuple[str, ...] = (),
    channel_args: int | None = None,
) -> type[nn.Module]:
    """Make `cls` available to model YAMLs under `name` (and `aliases`).

    `channel_args` defaults to 1 for ``Channels.KEEP`` blocks and 0 otherwise (see the module doc).
    """
    if channel_args is None:
        channel_args = 1 if channels is Channels.KEEP else 0
    for key in (name, *aliases):
        if key in BLOCKS and BLOCKS[key].cls is not cls:
            raise ValueError(f"block name {key!r} is already registered to {BLOCKS[key].cls.__name__}")
        BLOCKS[key] = BlockSpec(key, cls, channels, repeats, attention, channel_args)
    return cls


def lookup(name: str) -> BlockSpec:
    """The spec registered under `name`; raises KeyError listing close names otherwise."""
    _ensure_loaded()
    try:
        return BLOCKS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(BLOCKS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown module {name!r}.{hint} Known: {', '.join(sorted(BLOCKS))}") from None


def attention_names() -> list[str]:
    """Names of all registered attention blocks (aliases excluded), sorted."""
    _ensure_loaded()
    return sorted({s.cls.__name__ for s in BLOCKS.values() if s.attention})


def _ensure_loaded() -> None:
    # Registration happens at import time of the modules that define blocks.
    import models.common  # noqa: F401
    import models.yolo  # noqa: F401  (Detect)
