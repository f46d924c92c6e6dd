"""Inference sources for detect.py: images, folders, globs, `.txt` lists, videos, webcams, streams.

Every source yields :class:`Frame` records holding the original BGR image; videos, webcams
and streams all go through the same `cv2.VideoCapture` path.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data.images import read_image
from utils.logging import LOGGER

IMG_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"}
VID_FORMATS = {"asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://", "udp://")


@dataclass
class Frame:
    """One image to run on. `frame` is the video frame's number, 1-based, of `n_frames` in the
    file (0 when the container does not say); 0 for still images."""

    path: str
    image: np.ndarray  # BGR, HxWx3
    is_video: bool = False
    frame: int = 0
    n_frames: int = 0
    fps: float = 30.0
    index: int = 1  # position among the source's files
    total: int = 1
    rel: Path = Path()  # output name: the file's path below the source's common folder

    @property
    def description(self) -> str:
        if self.is_video:
            count = f"{self.frame}/{self.n_frames}" if self.n_frames >= self.frame else f"frame {self.frame}"
            return f"video {self.index}/{self.total} ({count}) {self.path}"
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


def common_root(files: list[str]) -> Path:
    """The deepest folder holding every file of `files` (their outputs keep the path below it)."""
    if not files:
        return Path(".")
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]))


def relative_name(file: str | Path, root: Path) -> Path:
    """`file`'s path below `root` (its bare name when it lies elsewhere): the output name of `file`.

    Two inputs with one name in different folders (``camA/frame_1.jpg``, ``camB/frame_1.jpg``)
    get distinct outputs, ``camA/frame_1.jpg`` and ``camB/frame_1.jpg`` under the run folder."""
    p = Path(os.path.abspath(file))
    try:
        return p.relative_to(root)
    except ValueError:
        return Path(p.name)


@dataclass
class Skipped:
    """A source file left out of the run, and why."""

    path: str
    reason: str


def iter_frames(source: str | Path, vid_stride: int = 1, skipped: list[Skipped] | None = None) -> Iterator[Frame]:
    """Yield every image / video frame of `source`.

    A file that cannot be read (an unreadable image, a video that does not open or yields no
    frame) is skipped with a warning naming it and, when `skipped` is given, appended to it:
    one bad file never ends a run over many. A webcam or stream that does not open raises
    FileNotFoundError, as does a `source` naming nothing. Each frame's `rel` is its file's
    path below the common folder of all files (see :func:`relative_name`).
    """
    skipped = [] if skipped is None else skipped
    if is_stream(source):
        for fr in _iter_capture(int(source) if str(source).isnumeric() else str(source), vid_stride, live=True):
            fr.rel = Path(Path(str(source)).name or "stream")
            yield fr
        return
    files = expand_source(source)
    kept = [f for f in files if _suffix(f) in IMG_FORMATS | VID_FORMATS]
    if not kept:
        raise FileNotFoundError(f"no images or videos found in {source}. Supported: images {sorted(IMG_FORMATS)}, "
                                f"videos {sorted(VID_FORMATS)}")
    root = common_root(kept)
    for k, f in enumerate(kept, 1):
        rel = relative_name(f, root)
        if _suffix(f) in VID_FORMATS:
            n = 0
            try:
                for fr in _iter_capture(f, vid_stride, live=False):
                    fr.index, fr.total, fr.rel = k, len(kept), rel
                    n += 1
                    yield fr
            except FileNotFoundError as e:
                _skip(skipped, f, str(e))
                continue
            if n == 0:
                _skip(skipped, f, "the video opens but no frame decodes (empty or not a video)")
            continue
        try:
            im = read_image(f)
        except (OSError, ValueError) as e:
            _skip(skipped, f, str(e))
            continue
        yield Frame(f, im, index=k, total=len(kept), rel=rel)


def _skip(skipped: list[Skipped], f: str, reason: str) -> None:
    LOGGER.warning(f"WARNING: {f}: skipped, {reason}")
    skipped.append(Skipped(f, reason))


def frame_count(cap: cv2.VideoCapture) -> int:
    """A video's frame count, or 0 when the container does not say (OpenCV then reports -1 or
    a huge negative number, which must never be printed as a count)."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if np.isfinite(n) and 0 < n < 2**31 else 0


def _iter_capture(target: int | str, vid_stride: int, live: bool) -> Iterator[Frame]:
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {'stream' if live else 'video'} {target!r}")
    n = 0 if live else frame_count(cap)
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
            yield Frame(str(target), im, is_video=True, frame=i, n_frames=n, fps=fps / vid_stride)
    finally:
        cap.release()


def video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An mp4 writer for annotated video output (`size` = (w, h))."""
    path = Path(path).with_suffix(".mp4")
    return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
