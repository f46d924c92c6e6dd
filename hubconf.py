"""torch.hub entry points (see ``models/hub.py`` for the Python API they return).

    model = torch.hub.load("path/to/this/repo", "custom", path="best.pt", source="local")
    model = torch.hub.load("path/to/this/repo", "yolov5n_CBAM", pretrained=False, source="local")
    model = torch.hub.load("path/to/this/repo", "yolov5s", source="local")  # needs yolov5s.pt (downloaded if online)
    results = model("bus.jpg")

Every model config under ``models/`` is an entry point by its name, at every scale
(``yolov5n_CBAM``, ``yolov5s_C3SE``, ...), with the arguments of :func:`yolov5s`.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

dependencies = ["torch", "torchvision", "yaml", "cv2", "numpy", "PIL", "pandas"]

_SCALE = re.compile(r"^yolov5[nsmlx](6?)(.*)$")


def custom(path: str = "yolov5s.pt", autoshape: bool = True, device: str | None = None, half: bool = False):
    """A checkpoint file (``best.pt``) or export as a :class:`models.hub.Detector` (or the bare model,
    ``autoshape=False``); `half` as in :func:`models.hub.load`."""
    from models.hub import load

    return load(path, autoshape=autoshape, device=device, half=half)


def _config(name: str, pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            device: str | None = None):
    from models.hub import load

    return load(name, pretrained=pretrained, channels=channels, classes=classes, autoshape=autoshape, device=device)


def yolov5s(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            device: str | None = None):
    """YOLOv5s: official weights (``yolov5s.pt``, downloaded when missing and online) or, with
    ``pretrained=False``, random weights for `channels` inputs and `classes` classes."""
    return _config("yolov5s", pretrained, channels, classes, autoshape, device)


yolov5n = functools.partial(_config, "yolov5n")
yolov5m = functools.partial(_config, "yolov5m")
yolov5l = functools.partial(_config, "yolov5l")
yolov5x = functools.partial(_config, "yolov5x")


@functools.cache
def _config_names() -> tuple[str, ...]:
    """Every config stem under models/, at each of the five scales."""
    names = set()
    for f in (_ROOT / "models").rglob("yolov5*.yaml"):
        m = _SCALE.match(f.stem)
        if m:
            names.update(f"yolov5{s}{m.group(1)}{m.group(2)}" for s in "nsmlx")
    return tuple(sorted(names))


def __getattr__(name: str):
    if name in _config_names():
        return functools.partial(_config, name)
    raise AttributeError(f"hubconf has no entry point {name!r}; model configs: {', '.join(_config_names()[:8])}, ...")


def __dir__() -> list[str]:
    return sorted({*globals(), *_config_names()})
