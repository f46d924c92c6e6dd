"""Moving pretrained weights into a modified architecture.

Inserting a block into a YOLOv5 YAML renumbers every later layer (``model.9`` becomes
``model.10``), so copying state-dict entries by name loses most of the pretrained network.
Here the two YAML layer lists are aligned first, like two sequences: a dynamic programme
finds the longest order-preserving pairing of source and target layers whose modules are
the same block (or the target block is a variant of it, e.g. ``C3CBAM`` for ``C3``), and
whose ``from`` references agree under the pairing found so far. Layers only in the target
(inserted attention) stay unpaired. Every source tensor ``model.<i>.<rest>`` is then copied
to ``model.<pair(i)>.<rest>`` when that key exists in the target with the same shape.

Inserted attention blocks get an *identity start* (see
:meth:`models.attention._base.AttentionBlock.identity_start`) when their weights are new, so
the pretrained network computes exactly what it did before training opens them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import optional_block_entry
from models.registry import Channels, lookup
from utils.logging import LOGGER

_KEY = re.compile(r"^model\.(\d+)\.(.+)$")


@dataclass
class TransferResult:
    """What `transfer_weights` did: counts, the layer pairing and the blocks set to identity."""

    transferred: int = 0  # source tensors copied
    total: int = 0  # tensors in the source state dict
    mapping: dict[int, int] = field(default_factory=dict)  # source layer -> target layer
    source_layers: int = 0  # layers in the source model (0 .. source_layers - 1)
    exact: set[int] = field(default_factory=set)  # target layers paired with the very same block type
    skipped: list[str] = field(default_factory=list)  # source keys not copied
    new_keys: list[str] = field(default_factory=list)  # target keys that kept their initial values
    new_blocks: list[str] = field(default_factory=list)  # attention blocks whose weights are new
    identity: list[str] = field(default_factory=list)  # those of them given an identity start

    def summary(self, source: str = "") -> str:
        return f"Transferred {self.transferred}/{self.total} items" + (f" from {source}" if source else "")


def _rows(cfg: dict) -> list[list]:
    return list(cfg.get("backbone", [])) + list(cfg.get("head", []))


def _block_class(name: str) -> type | None:
    try:
        return lookup(str(name)).cls
    except KeyError:
        return None


def _froms(f) -> list[int]:
    return [f] if isinstance(f, int) else list(f)


def _compatible(src_row: list, dst_row: list) -> int:
    """0: different blocks; 1: the target is a variant of the source block; 2: the same block."""
    sm, dm = str(src_row[2]), str(dst_row[2])
    sc, dc = _block_class(sm), _block_class(dm)
    if sc is not None and sc is dc:
        return 2
    if sm == dm:
        return 2
    if sc is not None and dc is not None and issubclass(dc, sc):
        return 1
    # naming convention of block variants: C3 -> C3CBAM, C3_CBAM, C3SE, ...
    if re.match(rf"^{re.escape(sm.split('.')[-1])}[_A-Z]", dm.split(".")[-1]):
        return 1
    return 0


def align_layers(src_cfg: dict, dst_cfg: dict) -> tuple[dict[int, int], set[int]]:
    """Pair source layers with target layers (order preserved, maximal count).

    Returns ``{source index: target index}`` and the target indices paired with the same
    block type (not merely a variant). ``from`` references are checked after the pairing:
    a pair whose absolute references point at layers that are not paired with each other
    is dropped (its tensors then only move if nothing else claims them).
    """
    src, dst = _rows(src_cfg), _rows(dst_cfg)
    n, m = len(src), len(dst)
    comp = [[_compatible(src[i], dst[j]) for j in range(m)] for i in range(n)]
    # score[i][j]: best (pairs, exact pairs) aligning src[i:] with dst[j:]
    score = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best = max(score[i + 1][j], score[i][j + 1])
            c = comp[i][j]
            if c:
                p, e = score[i + 1][j + 1]
                best = max(best, (p + 1, e + (c == 2)))
            score[i][j] = best
    mapping: dict[int, int] = {}
    exact: set[int] = set()
    i = j = 0
    while i < n and j < m:
        c = comp[i][j]
        if c and score[i][j] == (score[i + 1][j + 1][0] + 1, score[i + 1][j + 1][1] + (c == 2)):
            mapping[i] = j
            if c == 2:
                exact.add(j)
            i, j = i + 1, j + 1
        elif score[i + 1][j] >= score[i][j + 1]:
            i += 1
        else:
            j += 1

    # from-consistency: absolute references must pair up (relative -1 refers to the previous
    # *executed* layer, which may legitimately be an inserted block); a target reference to an
    # inserted channel-keeping block counts as a reference to the layer the block refines
    paired = set(mapping.values())
    for si, dj in list(mapping.items()):
        sf, df = _froms(src[si][0]), _froms(dst[dj][0])
        if len(sf) != len(df):
            mapping.pop(si)
            exact.discard(dj)
            continue
        for a, b in zip(sf, df):
            a_abs = a % si if a != -1 else None
            b_abs = _through_inserted(b % dj, dst, paired) if b != -1 else None
            if a_abs is not None and a_abs in mapping and mapping[a_abs] != b_abs:
                mapping.pop(si)
                exact.discard(dj)
                break
    return mapping, exact


def _through_inserted(j: int, rows: list[list], paired: set[int]) -> int:
    """Follow layer `j` back through unpaired single-input channel-keeping layers (blocks
    inserted into the source architecture) to the layer they refine."""
    while j not in paired and isinstance(rows[j][0], int) and _keeps(rows[j]):
        f = rows[j][0]
        j = j + f if f < 0 else f
    return j


def _keeps(row: list) -> bool:
    try:
        return lookup(str(row[2])).channels in (Channels.KEEP, Channels.PASS, Channels.BN)
    except KeyError:
        return False


def transfer_weights(src_sd: dict[str, torch.Tensor], src_cfg: dict | None, model: nn.Module,
                     identity_start: bool = True) -> TransferResult:
    """Copy `src_sd` (a YOLOv5 state dict built from `src_cfg`) into `model` by layer structure."""
    dst_cfg = model.yaml
    if src_cfg is None:  # no config to align: same layer numbering assumed
        mapping = {i: i for i in range(len(model.model))}
        exact = set(mapping.values())
    else:
        mapping, exact = align_layers(src_cfg, dst_cfg)
    dst_sd = model.state_dict()
    # the target's own anchor sizes win over the source's; a target with an anchor count only
    # (unset anchors) takes the source's when their shape fits
    dst_anchors = dst_cfg.get("anchors")
    same_anchors = src_cfg is None or not isinstance(dst_anchors, list) or src_cfg.get("anchors") == dst_anchors
    res = TransferResult(total=len(src_sd), mapping=mapping, exact=exact,
                         source_layers=len(model.model) if src_cfg is None else len(_rows(src_cfg)))
    new_sd: dict[str, torch.Tensor] = {}
    filled: set[str] = set()
    for k, v in src_sd.items():
        mk = _KEY.match(k)
        dk = f"model.{mapping[int(mk.group(1))]}.{mk.group(2)}" if mk and int(mk.group(1)) in mapping else None
        if dk is not None and k.endswith(".anchors") and not same_anchors:
            dk = None  # the target config asks for its own anchors
        if dk is not None and dk not in dst_sd and dk not in filled and optional_block_entry(model, dk):
            new_sd[dk] = v.float()  # the block takes its insertion start's scale on loading
            filled.add(dk)
            continue
        if dk is None or dk not in dst_sd or dst_sd[dk].shape != v.shape or dk in filled:
            res.skipped.append(k)
            continue
        new_sd[dk] = v.to(dst_sd[dk].dtype)
        filled.add(dk)
    model.load_state_dict(new_sd, strict=False)
    res.transferred = len(new_sd)
    res.new_keys = [k for k in dst_sd if k not in filled]
    if res.transferred:
        res.new_blocks = _new_attention_blocks(model, filled, mapping, exact, reset=identity_start)
        res.identity = list(res.new_blocks) if identity_start else []
    return res


def _new_attention_blocks(model: nn.Module, filled: set[str], mapping: dict[int, int],
                          exact: set[int], reset: bool = True) -> list[str]:
    """Attention blocks whose weights did not come from the source; with `reset`, each is
    given an identity start.

    A block is new when its layer was inserted (not paired), or when none of its tensors
    (other than its gate) were transferred and either it has such tensors or its layer
    was paired with a plain block (``C3`` -> ``C3CBAM``). The outermost such block is reset.
    """
    paired = set(mapping.values())
    done: list[str] = []

    def tensors(prefix: str, m: nn.Module) -> list[str]:
        return [f"{prefix}{k}" for k in m.state_dict() if k != "gate" and not k.endswith(".gate")]

    def visit(prefix: str, m: nn.Module, layer: int) -> None:
        if callable(getattr(m, "identity_start", None)):
            keys = tensors(prefix, m)
            if layer not in paired:
                new = True
            else:
                new = not any(k in filled for k in keys) and (bool(keys) or layer not in exact)
            if new:
                if reset:
                    m.identity_start()
                done.append(prefix.rstrip("."))
                return
        for name, child in m.named_children():
            visit(f"{prefix}{name}.", child, layer)

    for j, layer in enumerate(model.model):
        visit(f"model.{j}.", layer, j)
    return done


def load_pretrained(record: dict, model: nn.Module, source: str = "weights",
                    identity_start: bool = True) -> TransferResult:
    """Transfer a checkpoint's model record (``{yaml, state_dict, ...}``) into `model` and log it.

    Warns (before any training) when the record's scale differs from the model's (see
    :func:`scale_mismatch`) and whenever fewer than 90% of the source tensors were transferred,
    listing the target layers left with new weights.
    """
    res = transfer_weights(record["state_dict"], record.get("yaml"), model, identity_start=identity_start)
    LOGGER.info(res.summary(source))
    mismatch = scale_mismatch(record.get("yaml"), model.yaml, source, model.yaml.get("yaml_file", "the config"))
    if mismatch:
        LOGGER.warning(f"WARNING: {mismatch}")
    if res.transferred < MIN_TRANSFER * res.total:
        LOGGER.warning(f"WARNING: only {res.transferred}/{res.total} tensors ({res.transferred / res.total:.0%}) of "
                       f"{source} fit this model; layers left with new weights: {_new_layers(model, res)}")
    changed = anchor_count_change(record["state_dict"], model)
    if changed:
        LOGGER.info(f"{changed}, {source} has {anchor_count(record['state_dict'])}: the head's output convolutions "
                    "start new (not transferred)")
    inserted = sorted(set(range(len(model.model))) - set(res.mapping.values()))
    if inserted:
        LOGGER.info(f"New layers (not in {source}): {inserted}")
    if res.identity:
        LOGGER.info(f"Identity start for {len(res.identity)} new attention block(s): {', '.join(res.identity)}")
    elif res.new_blocks:
        LOGGER.info(f"{len(res.new_blocks)} new attention block(s) start as in their papers (no identity start): "
                    f"{', '.join(res.new_blocks)}")
    return res


def calibrate_new_blocks(model: nn.Module, blocks: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Give each block of `blocks` (module names, as ``TransferResult.identity``) the output scale that
    keeps the pretrained network's feature statistics when its gate opens
    (:meth:`models.attention._base.AttentionBlock.calibrate`).

    `images` (B, 3, H, W), float in 0..1, is the calibration batch. One forward pass in eval mode
    with the gates as they are (0 after identity start, so every block sees exactly the features
    of the pretrained network); each block is calibrated on its own input. The model's outputs
    are unchanged at gate 0. Returns ``{block: scale (C,)}``; raises KeyError for a name not in
    `model` and ValueError when `images` is not a (B, 3, H, W) batch.
    """
    from models.attention._base import AttentionBlock

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"calibration images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
    modules = dict(model.named_modules())
    missing = [b for b in blocks if b not in modules]
    if missing:
        raise KeyError(f"attention block(s) {', '.join(missing)} not in the model")
    targets = {b: modules[b] for b in blocks if isinstance(modules[b], AttentionBlock)}
    scales: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def pre(mod: nn.Module, args: tuple) -> None:
            scales[name] = mod.calibrate(args[0])
        return pre

    handles = [m.register_forward_pre_hook(hook(b)) for b, m in targets.items()]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(images.to(device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return scales


def zero_start_new_blocks(model: nn.Module, blocks: list[str]) -> list[str]:
    """:meth:`~models.attention._base.AttentionBlock.zero_start` for each block of `blocks` (module
    names, as ``TransferResult.identity``); call before :func:`calibrate_new_blocks` and before the
    optimizer is built (the residual form adds a parameter). Returns the blocks given a zero start
    (every attention block among them: zeroed layers or the residual form); raises KeyError for a
    name not in `model`."""
    from models.attention._base import AttentionBlock

    modules = dict(model.named_modules())
    missing = [b for b in blocks if b not in modules]
    if missing:
        raise KeyError(f"attention block(s) {', '.join(missing)} not in the model")
    return [b for b in blocks if isinstance(modules[b], AttentionBlock) and modules[b].zero_start()]


def anchor_count(sd: dict[str, torch.Tensor]) -> int | None:
    """Anchors per output layer of the head in state dict `sd` (its ``*.anchors`` buffer, (nl, na, 2))."""
    keys = [k for k in sd if k.endswith(".anchors") and sd[k].ndim == 3]
    return int(sd[keys[-1]].shape[1]) if keys else None


def anchor_count_change(src_sd: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """'Detect layer 24 has 4 anchors per output layer' when `model`'s head has another anchor count
    than the head of `src_sd` (its output convolutions cannot be transferred then); else None."""
    head = model.model[-1]
    na, src_na = getattr(head, "na", None), anchor_count(src_sd)
    if na is None or src_na is None or na == src_na:
        return None
    return f"{type(head).__name__} layer {len(model.model) - 1} has {na} anchors per output layer"


MIN_TRANSFER = 0.9  # below this share of the source tensors, a transfer is reported as a warning


def _new_layers(model: nn.Module, res: TransferResult) -> str:
    """'3 (Conv), 4 (C3), ...': target layers with at least one tensor (other than a gate) not transferred."""
    layers = sorted({int(m.group(1)) for k in res.new_keys if (m := _KEY.match(k)) and not k.endswith("gate")})
    return ", ".join(f"{i} ({model.model[i].type})" for i in layers)


def scale_name(cfg: dict) -> str:
    """'YOLOv5s (depth_multiple 0.33, width_multiple 0.5)'; 'a custom scale (...)' off the five standard ones."""
    from models.yolo import SCALES

    gd, gw = float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0))
    letter = next((k for k, v in SCALES.items() if v == (gd, gw)), None)
    return f"{f'YOLOv5{letter}' if letter else 'a custom scale'} (depth_multiple {gd:g}, width_multiple {gw:g})"


def scale_mismatch(src_cfg: dict | None, dst_cfg: dict, source: str, target: str) -> str | None:
    """None when the weights' depth and width multiples equal the config's; otherwise a message
    naming both scales and the config (same architecture, the weights' scale letter) or the
    weights (the config's scale) that would fit."""
    if not src_cfg:
        return None
    multiples = ("depth_multiple", "width_multiple")
    src, dst = (tuple(float(c.get(k, 1.0)) for k in multiples) for c in (src_cfg, dst_cfg))
    if src == dst:
        return None
    from models.yolo import SCALES

    letters = {v: k for k, v in SCALES.items()}
    cfg = _same_config_at(letters.get(src), target, dst_cfg)
    fits = [f"--cfg {cfg} for these weights"] if cfg else []
    if dst in letters:
        fits.append(f"--weights yolov5{letters[dst]}.pt for this config")
    hint = ("Use " + " or ".join(fits)) if fits else ""
    if not cfg:
        set_ = f"et depth_multiple and width_multiple in {target} to the weights' values, {src[0]:g} and {src[1]:g}"
        hint = f"{hint}, or s{set_}" if hint else f"S{set_}"
    return (f"{source} is {scale_name(src_cfg)} but {target} builds {scale_name(dst_cfg)}: layers of another "
            f"depth or width cannot take its weights. {hint}.")


def _same_config_at(letter: str | None, target: str, dst_cfg: dict) -> str | None:
    """The name of `target` at scale `letter` (``yolov5s_CBAM.yaml`` -> ``yolov5n_CBAM.yaml``) when
    :func:`models.yolo.resolve_cfg` finds it and it has the same layers as `dst_cfg`; else None
    (a config outside ``models/``, a name without a scale letter, another architecture)."""
    from models.yolo import load_cfg

    if letter is None or not re.match(r"^yolov5[nsmlx]", target):
        return None
    name = f"yolov5{letter}{target[7:]}"
    try:
        cand = load_cfg(name)
    except (FileNotFoundError, ValueError):
        return None
    return name if _rows(cand) == _rows(dst_cfg) else None


def require_same_scale(weights: str | Path, cfgs: list[str]) -> None:
    """Raise ValueError when `weights` (a checkpoint) has another scale than any of `cfgs` (compare.py)."""
    from models.checkpoint import attempt_download, load_checkpoint
    from models.yolo import load_cfg

    ckpt = load_checkpoint(attempt_download(weights))
    src = (ckpt.get("ema") or ckpt["model"]).get("yaml")
    for c in cfgs:
        msg = scale_mismatch(src, load_cfg(c), Path(weights).name, Path(c).name)
        if msg:
            raise ValueError(f"{msg} (compare.py compares like with like, so it refuses this)")
