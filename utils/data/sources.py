"""Inference sources for detect.py: images, folders, globs, `.txt` lists, videos, webcams, streams.

Every source yields :class:`Frame` records holding the original BGR image; videos, webcams
and streams all go through the same `cv2.VideoCapture` path.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.logging import LOGGER

IMG_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"}
VID_FORMATS = {"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://", "udp://")


@dataclass
class Frame:
    """One image to run on. `frame` counts video frames (0 for still images)."""

    path: str
    image: np.ndarray  # BGR, HxWx3
    is_video: bool = False
    frame: int = 0
    n_frames: int = 0
    fps: float = 30.0
    index: int = 1  # position among the source's files
    total: int = 1

    @property
    def description(self) -> str:
        if self.is_video:
            return f"video {self.index}/{self.total} ({self.frame}/{self.n_frames or '?'}) {self.path}"
        return f"image {self.index}/{self.total} {self.path}"


def _suffix(p: str | Path) -> str:
    return Path(str(p)).suffix[1:].lower()


def expand_source(source: str | Path) -> list[str]:
    """Files named by `source`: a file, a folder (sorted), a glob, or a `.txt` list of paths."""
    s = str(source)
    if s.endswith(".txt") and Path(s).is_file():
        base = Path(s).parent
        items = [ln.strip() for ln in Path(s).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        files: list[str] = []
        for item in items:
            p = Path(item) if Path(item).is_absolute() else base / item
            if not p.exists() and Path(item).exists():
                p = Path(item)
            files += expand_source(p)
        return files
    if any(c in s for c in "*?["):
        return sorted(glob.glob(s, recursive=True))
    p = Path(s)
    if p.is_dir():
        return sorted(str(x) for x in p.iterdir() if x.is_file() and _suffix(x) in IMG_FORMATS | VID_FORMATS)
    if p.is_file():
        return [str(p)]
    raise FileNotFoundError(f"source {s!r} does not exist")


def is_stream(source: str | Path) -> bool:
    """A webcam index (`0`) or a network stream URL."""
    s = str(source)
    return s.isnumeric() or (s.lower().startswith(STREAM_PREFIXES) and _suffix(s) not in IMG_FORMATS)


def iter_frames(source: str | Path, vid_stride: int = 1) -> Iterator[Frame]:
    """Yield every image / video frame of `source`; unreadable files are skipped with a warning."""
    if is_stream(source):
        yield from _iter_capture(int(source) if str(source).isnumeric() else str(source), vid_stride, live=True)
        return
    files = expand_source(source)
    kept = [f for f in files if _suffix(f) in IMG_FORMATS | VID_FORMATS]
    if not kept:
        raise FileNotFoundError(f"no images or videos found in {source}. Supported: images {sorted(IMG_FORMATS)}, "
                                f"videos {sorted(VID_FORMATS)}")
    for k, f in enumerate(kept, 1):
        if _suffix(f) in VID_FORMATS:
            for fr in _iter_capture(f, vid_stride, live=False):
                fr.index, fr.total = k, len(kept)
                yield fr
            continue
        im = cv2.imread(f)
        if im is None:
            LOGGER.warning(f"WARNING: {f}: cannot be read as an image, skipped")
            continue
        yield Frame(f, im, index=k, total=len(kept))


def _iter_capture(target: int | str, vid_stride: int, live: bool) -> Iterator[Frame]:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {'stream' if live else 'video'} {target!r}")
    n = 0 if live else int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if np.isfinite(fps) and fps > 0 else 30.0
    i = 0
    try:
        while True:
            ok, im = cap.read()
            if not ok:
                break
            i += 1
            if (i - 1) % vid_stride:
                continue
            yield Frame(str(target), im, is_video=True, frame=i, n_frames=n // max(vid_stride, 1) if n else 0,
                        fps=fps / vid_stride)
    finally:
        cap.release()


def video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An mp4 writer for annotated video output (`size` = (w, h))."""
    path = Path(path).with_suffix(".mp4")
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
