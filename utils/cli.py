"""Helpers shared by the command-line scripts: run folders, image sizes, argument echo."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from utils.logging import LOGGER, hide_passwords

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


def holds_files(path: Path) -> bool:
    """True when `path` holds at least one file (at any depth)."""
    return any(p.is_file() for p in Path(path).rglob("*"))


def holds_training_results(path: Path) -> bool:
    """True when a training run folder holds a checkpoint or a results.csv row: worth keeping."""
    return any(Path(path).rglob("*.pt")) or (Path(path) / "results.csv").is_file()


@contextlib.contextmanager
def run_folder(path: str | Path, worth_keeping: Callable[[Path], bool] = holds_files) -> Iterator[Path]:
    """Make the run folder `path` and hand it to the block; when the block raises and the folder
    did not exist before and holds nothing `worth_keeping` (default: no file at all), remove it,
    together with the parent folders this call created that are left empty (``runs/train`` and
    ``runs`` on a fresh clone), so a run that fails before doing anything leaves no empty folders."""
    path = Path(path)
    created = _missing_folders(path)  # deepest first
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created and path.is_dir() and not worth_keeping(path):
            shutil.rmtree(path, ignore_errors=True)
            LOGGER.info(f"removed the run folder {path}: the run failed before writing any result")
            for parent in created[1:]:
                with contextlib.suppress(OSError):  # not empty (another run wrote there): keep it
                    parent.rmdir()
        raise


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first (empty if `path` exists)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def check_img_size(imgsz: int | list[int], s: int = 32, floor: int = 0) -> int | list[int]:
    """Round image size(s) up to a multiple of the stride `s` and at least `floor` pixels,
    warning (with the rule that changed it) when it changes.

    Raises ValueError for a size below 1 pixel (``--img 0``, ``--img -64``), which no rounding can mend.
    """
    sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if any(int(x) < 1 for x in sizes):
        raise ValueError(f"--img-size {imgsz}: image sizes must be positive numbers of pixels, e.g. --img 640")
    if isinstance(imgsz, int):
        new = max(math.ceil(imgsz / s) * s, floor)
    else:
        new = type(imgsz)(max(math.ceil(x / s) * s, floor) for x in imgsz)
    if new != imgsz:
        sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz)
        why = []
        if any(x % s for x in sizes):
            why.append(f"must be a multiple of the max stride {s}")
        if any(x < floor for x in sizes):
            why.append(f"must be at least {floor} (2 x max stride {s}: smaller inputs leave 1x1 feature maps)")
        LOGGER.warning(f"WARNING: --img-size {imgsz} {' and '.join(why)}; updating to {new}")
    return new


def print_args(name: str, opt: argparse.Namespace | dict) -> None:
    """Log a script's arguments on one line."""
    d = vars(opt) if isinstance(opt, argparse.Namespace) else opt
    LOGGER.info(hide_passwords(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items())))


def positive_int(text: str, unit: str = "", below: str = "must be at least 1") -> int:
    """argparse type of counts that must be at least 1 (--nc, ...); ArgumentTypeError otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{unit}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: {below}")
    return value


def image_size(text: str) -> int:
    """argparse type of the --imgsz flags: a positive whole number of pixels, refused at parse time."""
    return positive_int(text, " of pixels, e.g. 640", "image sizes must be positive numbers of pixels, e.g. 640")


def parse_imgsz(values: list[int]) -> tuple[int, int]:
    """`--imgsz 640` or `--imgsz 480 640` -> (height, width); ValueError for none or more than two values."""
    if not 1 <= len(values) <= 2:
        raise ValueError(f"--imgsz takes one size or two (height width), got {len(values)}: {values}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])

HALF_HELP = ("reduced precision: FP16 on CUDA, bf16 on a CPU with native bf16 (AVX512_BF16 or AMX); "
             "elsewhere FP32, said in one line")
