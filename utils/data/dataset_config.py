"""Dataset YAMLs: finding them, resolving their paths, downloading a missing dataset.

A dataset YAML has ``path`` (the dataset root), ``train``, ``val`` and optionally ``test``
(each a folder, a ``.txt`` list of images, a glob, or a list of these, relative to ``path``),
``names`` (a list, or a dict ``{id: name}`` with ids 0..nc-1), optionally ``nc``, and
optionally ``download``.

Where datasets live: a relative ``path`` resolves against the datasets folder, which is

1. the environment variable ``YOLO_DATASETS_DIR`` when set, else
2. ``../datasets`` beside the repository (as upstream YOLOv5).

A YAML without ``path`` uses its own folder as the root.

``download`` may be

* a URL of a ``.zip`` / ``.tar`` / ``.tar.gz`` archive, unpacked into the datasets folder
  (the archive holds the dataset's top folder, e.g. ``coco128/``);
* a list whose items are such URLs or ``{url: ..., dir: ...}`` mappings, ``dir`` being where
  to unpack relative to the dataset root;
* a command starting with ``python`` or ``bash``, run from the repository root with ``{path}``
  replaced by the dataset root (``python data/synthetic.py --out {path}`` generates a dataset).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import yaml

from utils.logging import LOGGER

ROOT = Path(__file__).resolve().parents[2]
DATASETS_ENV = "YOLO_DATASETS_DIR"
DOWNLOAD_TIMEOUT = 30  # seconds without data before a download is abandoned


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


def datasets_dir() -> Path:
    """The folder relative dataset paths resolve against (see the module docstring)."""
    env = os.getenv(DATASETS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (ROOT.parent / "datasets").resolve()


def find_data_yaml(data: str | Path) -> Path:
    """A dataset YAML given as a path, or by name from the repository's ``data/`` folder
    (``coco128.yaml`` or just ``coco128``)."""
    p = Path(data).expanduser()
    names = [p] if p.suffix in (".yaml", ".yml") else [p, p.with_name(p.name + ".yaml")]
    for q in names:
        for c in (q, ROOT / "data" / q):
            if c.is_file():
                return c.resolve()
    raise FileNotFoundError(f"dataset YAML '{data}' not found (looked in {Path.cwd()} and {ROOT / 'data'})")


def _names_list(names, nc) -> list[str]:
    if names is None:
        if nc is None:
            raise ValueError("needs 'names' (or at least 'nc')")
        return [f"class{i}" for i in range(int(nc))]
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise ValueError(f"'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    return [str(n) for n in names]


def _resolve(item, root: Path) -> str | list[str] | None:
    if item is None or item == "":
        return None
    if isinstance(item, (list, tuple)):
        return [_resolve(x, root) for x in item]
    p = Path(str(item)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _exists(p: str) -> bool:
    if any(ch in p for ch in "*?["):
        import glob

        return bool(glob.glob(p, recursive=True))
    return Path(p).exists()


def check_dataset(data: str | Path | dict, autodownload: bool = True) -> dict:
    """Read a dataset YAML (path, name or already-loaded dict) and make sure its data is there.

    Returns the YAML's dict with ``path`` absolute, ``train`` / ``val`` / ``test`` as absolute
    paths (str, list of str or None), ``names`` as a list, ``nc`` and ``yaml_file``. A missing
    dataset is downloaded when the YAML says how (and `autodownload`); otherwise, or when that
    fails, :class:`DatasetNotFoundError` says which folder was searched.
    """
    if isinstance(data, dict):
        cfg = dict(data)
        yaml_file = Path(cfg["yaml_file"]) if cfg.get("yaml_file") else None
    else:
        yaml_file = find_data_yaml(data)
        cfg = yaml.safe_load(yaml_file.read_text()) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"{yaml_file}: a dataset YAML must be a mapping")
    where = yaml_file or "dataset dict"
    for key in ("train", "val"):
        if not cfg.get(key):
            raise ValueError(f"{where}: missing '{key}'")
    try:
        names = _names_list(cfg.get("names"), cfg.get("nc"))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if cfg.get("nc") is not None and int(cfg["nc"]) != len(names):
        raise ValueError(f"{where}: nc={cfg['nc']} but {len(names)} names")
    cfg["names"], cfg["nc"] = names, len(names)

    p = cfg.get("path")
    if p in (None, ""):
        root = yaml_file.parent if yaml_file else Path.cwd()
    else:
        root = Path(str(p)).expanduser()
        if not root.is_absolute():
            root = datasets_dir() / root
    root = root.resolve()
    cfg["path"] = str(root)
    for key in ("train", "val", "test"):
        cfg[key] = _resolve(cfg.get(key), root)
    cfg["yaml_file"] = str(yaml_file) if yaml_file else None

    missing = _missing(cfg)
    if missing:
        spec = cfg.get("download")
        if not spec or not autodownload:
            how = "no 'download' in the YAML" if not spec else "autodownload is off"
            raise DatasetNotFoundError(_not_found(root, missing, how))
        verb = "generating" if _is_command(spec) else "downloading"
        LOGGER.info(f"Dataset not found at {root}, {verb} it ({_describe(spec, root)}) ...")
        try:
            download_dataset(spec, root)
        except Exception as e:
            raise DatasetNotFoundError(_not_found(root, missing, f"download from {_describe(spec, root)} failed: "
                                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")) from None
        missing = _missing(cfg)
        if missing:
            raise DatasetNotFoundError(_not_found(root, missing, f"{_describe(spec, root)} did not provide it"))
        LOGGER.info(f"Dataset ready at {root}")
    return cfg


def _missing(cfg: dict) -> list[str]:
    out = []
    for key in ("val", "train"):
        items = cfg[key] if isinstance(cfg[key], list) else [cfg[key]]
        out += [p for p in items if not _exists(p)]
    return out


def _not_found(root: Path, missing: list[str], why: str) -> str:
    env = os.getenv(DATASETS_ENV)
    src = f"{DATASETS_ENV}={env}" if env else f"default; set {DATASETS_ENV} to change it"
    return (f"Dataset not found: {missing[0]} is missing (dataset root {root}, datasets folder "
            f"{datasets_dir()} [{src}]); {why}")


def _is_command(spec) -> bool:
    """A ``download`` entry that is a command to run (``python ...``, ``bash ...``), not a URL."""
    return isinstance(spec, str) and bool(spec.split()) and spec.split()[0] in ("python", "python3", "bash", "sh")


def _describe(spec, root: Path | None = None) -> str:
    """The ``download`` entry as shown to the user, with ``{path}`` replaced by the dataset root."""
    if isinstance(spec, (list, tuple)):
        return ", ".join(_describe(s, root) for s in spec)
    if isinstance(spec, dict):
        return str(spec.get("url"))
    return str(spec).replace("{path}", str(root)) if root is not None else str(spec)


def download_dataset(spec, root: Path) -> None:
    """Fetch a dataset as described by a YAML's ``download`` entry (see the module docstring)."""
    if _is_command(spec):
        args = shlex.split(spec.replace("{path}", shlex.quote(str(root))))
        if args[0].startswith("python"):
            args[0] = sys.executable
        subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True)
        return
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    for item in items:
        if isinstance(item, dict):
            fetch_and_unpack(str(item["url"]), root / str(item.get("dir", "")))
        else:
            fetch_and_unpack(str(item), root.parent)


def fetch_and_unpack(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download `url` into `dest` (urllib, with a timeout) and unpack it when it is an archive."""
    dest.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.request.urlparse(url).path).name or "download"
    target = dest / name
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    if zipfile.is_zipfile(target):
        with zipfile.ZipFile(target) as z:
            z.extractall(dest)  # zipfile drops absolute paths and '..' components
        target.unlink()
    elif tarfile.is_tarfile(target):
        with tarfile.open(target) as t:
            t.extractall(dest, filter="data")  # refuses paths that escape `dest`
        target.unlink()
    return dest


def dataset_names(data: str | Path) -> list[str]:
    """The class names of a dataset YAML (path or name under ``data/``), without checking its
    images exist. Raises FileNotFoundError (no such YAML) or ValueError (bad ``names``/``nc``),
    naming the file."""
    f = find_data_yaml(data)
    cfg = yaml.safe_load(f.read_text()) or {}
    try:
        return _names_list(cfg.get("names"), cfg.get("nc"))
    except ValueError as e:
        raise ValueError(f"{f}: {e}") from None
