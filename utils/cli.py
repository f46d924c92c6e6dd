"""Helpers shared by the command-line scripts: run folders, image sizes, argument echo."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from utils.logging import LOGGER

ROOT = Path(__file__).resolve().parents[1]


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False, sep: str = "") -> Path:
    """`runs/exp` -> `runs/exp2`, `runs/exp3`, ... the first name not taken (unless `exist_ok`)."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        pat = re.compile(rf"^{re.escape(stem.name)}{re.escape(sep)}(\d+)$")
        taken = [int(m.group(1)) for p in stem.parent.glob(f"{stem.name}{sep}*")
                 if (m := pat.match(p.with_suffix("").name if suffix else p.name))]
        n = max([1, *taken]) + 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_img_size(imgsz: int | list[int], s: int = 32, floor: int = 0) -> int | list[int]:
    """Round image size(s) up to a multiple of the stride `s`, warning when it changes."""
    if isinstance(imgsz, int):
        new = max(math.ceil(imgsz / s) * s, floor)
    else:
        new = type(imgsz)(max(math.ceil(x / s) * s, floor) for x in imgsz)
    if new != imgsz:
        LOGGER.warning(f"WARNING: --img-size {imgsz} must be a multiple of max stride {s}, updating to {new}")
    return new


def print_args(name: str, opt: argparse.Namespace | dict) -> None:
    """Log a script's arguments on one line."""
    d = vars(opt) if isinstance(opt, argparse.Namespace) else opt
    LOGGER.info(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()))


def parse_imgsz(values: list[int]) -> tuple[int, int]:
    """`--imgsz 640` or `--imgsz 480 640` -> (height, width)."""
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
