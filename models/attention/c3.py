"""C3 blocks whose bottlenecks end with an attention block: ``C3<Name>`` for every block.

``C3CBAM(c1, c2, n, shortcut, g, e)`` is YOLOv5's C3 with each bottleneck computing
``x + attn(cv2(cv1(x)))`` (``attn(cv2(cv1(x)))`` without shortcut). The attention block is an
extra submodule ``m.<i>.attn`` of width ``c_ = int(c2 * e)``; every other parameter keeps C3's
name (``cv1``, ``cv2``, ``cv3``, ``m.0.cv1``, ``m.0.cv2`` ...), so pretrained C3 weights load by
name and only the ``attn`` entries are new.
"""

from __future__ import annotations

import torch
from torch import nn

from models.attention._base import AttentionBlock
from models.attention.channel import ECA, GC, NAM, SE, SK, SOCA
from models.attention.self_attention import CC, DA, MHSA, CoT, DoubleAttention, NonLocal
from models.attention.spatial import (
    BAM,
    CA,
    CBAM,
    EMA,
    GAM,
    LSK,
    LSKA,
    PSA,
    SGE,
    S2MLPv2,
    ShuffleAttention,
    SimAM,
    TripletAttention,
)
from models.common import C3, Bottleneck
from models.registry import Channels, register


class AttentionBottleneck(Bottleneck):
    """YOLOv5 bottleneck whose residual branch ends with an attention block `attn`."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5,
                 block: type[AttentionBlock] = CBAM):
        super().__init__(c1, c2, shortcut, g, e)
        self.attn = block(c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.cv2(self.cv1(x)))
        return x + y if self.add else y


class C3Attention(C3):
    """C3 with :class:`AttentionBottleneck` s; subclasses set the class attribute `block`."""

    block: type[AttentionBlock]

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(AttentionBottleneck(c_, c_, shortcut, g, 1.0, self.block) for _ in range(n)))


def c3_variant(block: type[AttentionBlock]) -> type[C3Attention]:
    """Define and register ``C3<block name>``."""
    name = f"C3{block.__name__}"
    cls = type(name, (C3Attention,), {
        "block": block,
        "__module__": __name__,
        "__doc__": f"C3 whose bottlenecks end with :class:`{block.__name__}` (``m.<i>.attn``).",
    })
    cls.__qualname__ = name
    register(name, cls, Channels.IN_OUT, repeats=True, attention=True)
    return cls


C3SE = c3_variant(SE)
C3ECA = c3_variant(ECA)
C3GC = c3_variant(GC)
C3SK = c3_variant(SK)
C3SOCA = c3_variant(SOCA)
C3NAM = c3_variant(NAM)
C3CBAM = c3_variant(CBAM)
C3BAM = c3_variant(BAM)
C3CA = c3_variant(CA)
C3GAM = c3_variant(GAM)
C3TripletAttention = c3_variant(TripletAttention)
C3SimAM = c3_variant(SimAM)
C3ShuffleAttention = c3_variant(ShuffleAttention)
C3EMA = c3_variant(EMA)
C3SGE = c3_variant(SGE)
C3PSA = c3_variant(PSA)
C3LSK = c3_variant(LSK)
C3LSKA = c3_variant(LSKA)
C3S2MLPv2 = c3_variant(S2MLPv2)
C3DA = c3_variant(DA)
C3CC = c3_variant(CC)
C3NonLocal = c3_variant(NonLocal)
C3MHSA = c3_variant(MHSA)
C3DoubleAttention = c3_variant(DoubleAttention)
C3CoT = c3_variant(CoT)

__all__ = ["AttentionBottleneck", "C3Attention", *(n for n in list(globals()) if n.startswith("C3") and n not in
                                                     ("C3", "C3Attention"))]
