"""torch.hub entry points (see ``models/hub.py`` for the Python API they return).

    model = torch.hub.load("path/to/this/repo", "custom", path="best.pt", source="local")
    model = torch.hub.load("path/to/this/repo", "yolov5n_CBAM", pretrained=False, source="local")
    model = torch.hub.load("path/to/this/repo", "yolov5s", source="local")  # needs yolov5s.pt (downloaded if online)
    results = model("bus.jpg")

Every model config under ``models/`` is an entry point by its name, at every scale
(``yolov5n_CBAM``, ``yolov5s_C3SE``, ...), with the arguments of :func:`yolov5s`.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib
import importlib.machinery
import re
import sys
import types
from pathlib import Path

_ROOT = Path(__file__).resolve().parent

dependencies = ["torch", "torchvision", "yaml", "cv2", "numpy", "PIL", "pandas"]

_SCALE = re.compile(r"^yolov5[nsmlx](6?)(.*)$")

# ---------------------------------------------------------------------------------------------
# Isolation from the calling program. torch.hub runs this file inside someone else's process,
# which may have its own top-level `models`, `utils`, ... Our modules are therefore imported
# under a private package name (``_yolov5_attention_<hash of this folder>.models.hub``) and
# each of them gets an ``__import__`` that maps our top-level names to that package, also for
# imports made later inside functions. The caller's sys.modules entries and sys.path are never
# touched; only new private entries are added. When the caller already uses this repository's
# own modules (this project's tests, a script in the repository), those are used as they are.

_TOP_NAMES = frozenset({p.stem for p in _ROOT.glob("*.py")}
                       | {p.parent.name for p in _ROOT.glob("*/__init__.py")})
_PREFIX = "_yolov5_attention_" + hashlib.sha1(str(_ROOT).encode()).hexdigest()[:10]


def _private_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - __import__'s signature
    """``__import__`` of our modules: absolute imports of our top-level names go to the private package."""
    top = name.partition(".")[0]
    if level == 0 and top in _TOP_NAMES:
        module = builtins.__import__(f"{_PREFIX}.{name}", globals, locals, fromlist, 0)
        return module if fromlist else sys.modules[f"{_PREFIX}.{top}"]
    return builtins.__import__(name, globals, locals, fromlist, level)


_BUILTINS = {**vars(builtins), "__import__": _private_import}


class _PrivateLoader(importlib.machinery.SourceFileLoader):
    """Runs one of our source files as a private module whose imports go through :func:`_private_import`."""

    def exec_module(self, module: types.ModuleType) -> None:
        module.__builtins__ = _BUILTINS
        super().exec_module(module)


class _PrivateFinder:
    """Finds ``<_PREFIX>.x.y`` as this repository's ``x/y.py`` (meta path finder for the private package only)."""

    @staticmethod
    def find_spec(fullname: str, path=None, target=None):
        if not fullname.startswith(_PREFIX + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _PrivateLoader(fullname, spec.origin)
        return spec


def _uses_our_modules() -> bool:
    """True when the caller's `models` is this repository's and no top-level name of ours is another's."""
    def ours(m: types.ModuleType) -> bool:
        f = getattr(m, "__file__", None)
        return f is not None and Path(f).resolve().is_relative_to(_ROOT)

    present = [sys.modules[n] for n in _TOP_NAMES if n in sys.modules]
    return "models" in sys.modules and all(ours(m) for m in present)


def _module(name: str) -> types.ModuleType:
    """Our module `name` (``models.hub``): the caller's copy when it is ours, else the private one."""
    if _uses_our_modules():
        return importlib.import_module(name)
    if _PREFIX not in sys.modules:  # the first hub load in this process: the private package
        pkg = types.ModuleType(_PREFIX, f"yolov5-attention at {_ROOT}, imported privately by hubconf.py")
        pkg.__path__ = [str(_ROOT)]
        sys.modules[_PREFIX] = pkg
        sys.meta_path.insert(0, _PrivateFinder)
    return importlib.import_module(f"{_PREFIX}.{name}")


def custom(path: str = "yolov5s.pt", autoshape: bool = True, device: str | None = None, half: bool = False):
    """A checkpoint file (``best.pt``) or export as a :class:`models.hub.Detector` (or the bare model,
    ``autoshape=False``); `half` as in :func:`models.hub.load`."""
    return _module("models.hub").load(path, autoshape=autoshape, device=device, half=half)


def _config(name: str, pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            device: str | None = None):
    return _module("models.hub").load(name, pretrained=pretrained, channels=channels, classes=classes,
                                      autoshape=autoshape, device=device)


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
