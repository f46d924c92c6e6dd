"""Does a dataset's val split hold images of its train split? (A "leak": the score then measures
how well training images were learnt, not how well the model generalises.)

An image is shared when the same file is in both splits, or when a val file has the same bytes
as a train file under another name (found by size first, then by a SHA-1 of the candidates, so a
large train set costs one ``stat`` per file). Re-encoded or resized copies are not found.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

from utils.data.verify import list_image_files
from utils.logging import LOGGER

_WARNED: set[tuple[str, str]] = set()


def _digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def shared_images(train: list[str], val: list[str]) -> list[str]:
    """The val images (absolute paths, sorted) that are also in `train`: the same file (path or
    inode), or a file of the same bytes."""
    def ident(p: str) -> tuple[int, int]:
        st = os.stat(p)
        return st.st_dev, st.st_ino

    train_ids = {ident(p) for p in train}
    same_file = {p for p in val if ident(p) in train_ids}
    by_size: dict[int, list[str]] = defaultdict(list)
    for p in train:
        by_size[os.path.getsize(p)].append(p)
    rest = [p for p in val if p not in same_file and os.path.getsize(p) in by_size]
    sizes = {os.path.getsize(p) for p in rest}
    train_digests = {_digest(p) for s in sizes for p in by_size[s]}
    same_bytes = {p for p in rest if _digest(p) in train_digests}
    return sorted(same_file | same_bytes)


def warn_if_val_in_train(data: dict, prefix: str = "") -> int:
    """Warn once per (train, val) pair of a dataset dict (check_dataset's, with absolute ``train``
    and ``val``) when val images are also train images; returns how many are. Missing or unreadable
    splits are not this check's business (the loaders name them): 0."""
    train, val = data.get("train"), data.get("val")
    if not train or not val:
        return 0
    try:
        tr, va = list_image_files(train), list_image_files(val)
    except (FileNotFoundError, OSError):
        return 0
    shared = shared_images(tr, va)
    key = (str(train), str(val))
    if shared and key not in _WARNED:
        _WARNED.add(key)
        name = Path(str(data.get("yaml_file") or "the dataset")).name
        LOGGER.warning(f"WARNING: {prefix}{len(shared)} of {len(va)} val images of {name} are also train images "
                       f"(e.g. {Path(shared[0]).name}): its val score measures how well training images were "
                       "learnt, not how well the model generalises; validate on held-out images to judge a model")
    return len(shared)
