"""Attention blocks for YOLOv5 configs: each a small self-contained module, registered by name.

Every module in this package registers its blocks with :func:`models.registry.register`
when imported; `__all__` lists the public block classes. `models.common` re-exports them,
so ``from models.common import CBAM`` works as in other YOLOv5 forks.

- :mod:`.channel`: SE, ECA, GC, SK, SOCA, NAM
- :mod:`.spatial`: CBAM, BAM, CA, GAM, TripletAttention, SimAM, ShuffleAttention, EMA, SGE, PSA,
  LSK, LSKA, S2MLPv2
- :mod:`.self_attention`: DA, CC, NonLocal, MHSA, DoubleAttention, CoT
- :mod:`.c3`: ``C3<Name>`` for each of them (the block inside C3's bottlenecks)
- :mod:`.control`: Control, C3Control: plain capacity controls of the same parameters (compare.py --control)
- :mod:`._base`: :class:`AttentionBlock` (identity-start gate) and :func:`identity_start`

Configs (``yolov5s_<Name>.yaml``, ``yolov5s_C3<Name>.yaml``, ``yolov5s_<Name>-replace.yaml``) are
generated into ``models/attention/configs`` by ``python models/attention/make_configs.py``.
"""

from models.attention import c3, channel, self_attention, spatial
from models.attention import control as control  # Control, C3Control: compare.py --control
from models.attention._base import AttentionBlock
from models.attention._base import identity_start as identity_start  # the model-level helper
from models.attention.c3 import *  # noqa: F403
from models.attention.channel import *  # noqa: F403
from models.attention.self_attention import *  # noqa: F403
from models.attention.spatial import *  # noqa: F403

__all__ = ["AttentionBlock", *channel.__all__, *spatial.__all__, *self_attention.__all__, *c3.__all__]

# If this package was imported before models.common, common's `from models.attention import *`
# ran while this module was still empty: hand it the names now.
from models import common as _common  # noqa: E402

for _name in __all__:
    setattr(_common, _name, globals()[_name])
del _name
