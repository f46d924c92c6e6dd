"""Semantic checks of a model YAML: does the layer graph compute what the author meant?

`parse_model` builds any YAML whose shapes fit together; these checks catch the configs that
build but are wrong. Each message names the YAML file, the layer and what to do.

Channel arguments of channel-keeping blocks (:func:`strip_channel_args`, while parsing)
    A ``Channels.KEEP`` block takes its width from its input, so a YAML gives it only options
    (a reduction ratio, a kernel size). Blog recipes write a channel count anyway
    (``[-1, 1, CBAM, [1024]]``, ``[-1, 1, CA, [1024, 1024]]``). Rule, for the first
    ``spec.channel_args`` arguments: an integer equal to the layer's input width before
    ``width_multiple`` (what every number of a YAML means) is a channel count; it is dropped
    and one warning per model says so. An integer that equals the input width after
    ``width_multiple`` (when that differs) or some other width written in the YAML (the
    ``args[0]`` of a width-setting layer, or a sum of them at a Concat) is a wrong channel
    count: ModelConfigError. Any other value is the block's first option.
    (A block option that happens to equal a YAML width, e.g. ``SGE [64]``, must then be
    written after the channel count: ``[<input width>, 64]``.)

Graph (:func:`check_graph`, after the model is built)
    - a layer whose output no later layer reads (and that is not the last layer): error.
      When the YAML becomes clean by shifting the indices after one inserted
      channel-keeping layer, the message says so and gives the insert command.
    - Detect reading a Concat (where branches meet, not an output): error.
    - Detect reading a layer whose output continues, at the same resolution, into a layer that
      reads nothing else (the branch goes on past what Detect sees): error; when that layer
      is a channel-keeping block (Detect skips an attention block placed on its input),
      a warning, since the model still makes sense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.registry import BlockSpec, Channels, lookup
from utils.logging import LOGGER

Rebuild = Callable[[list[list]], list]  # rows -> each layer's output size (raises ModelConfigError)
INSERT_HELP = "python models/yolo.py --cfg <yaml> --insert <Block>@<index> --save <new yaml>"


def config_error(msg: str) -> Exception:
    """A ModelConfigError with `msg` (models.yolo defines the class and imports this module)."""
    from models.yolo import ModelConfigError

    return ModelConfigError(msg)


# ---- channel arguments ---------------------------------------------------------------------


def strip_channel_args(spec: BlockSpec, args: list, c_in: int, c_in0: int, widths: set[int],
                       where: str) -> tuple[list, list[int]]:
    """Split the blog-style channel counts off a channel-keeping block's YAML arguments.

    `c_in` / `c_in0`: the layer's input width after / before ``width_multiple``; `widths`: every
    width the YAML writes (before ``width_multiple``). Returns the remaining arguments (the
    block's options) and the numbers dropped. Raises ModelConfigError for a channel count that
    is not the input width (see the module doc for the rule).
    """
    dropped: list[int] = []
    while len(dropped) < spec.channel_args and args and type(args[0]) is int:
        v = args[0]
        if v == c_in0:
            dropped.append(v)
            args = args[1:]
        elif v in widths or v == c_in:
            raise config_error(f"{where}: {v} looks like a channel count, but this layer's input has {c_in0} "
                               f"channels ({c_in} after width_multiple). {spec.name} keeps its input width and takes no "
                               f"channel argument: write [] (or only its options). If {v} is meant as its first "
                               f"option, write the input width before it: [{c_in0}, {v}].")
        else:
            break
    return args, dropped


def log_dropped_channels(src: str, dropped: dict[int, tuple[str, list[int]]]) -> None:
    """The one warning per model listing the channel counts :func:`strip_channel_args` dropped."""
    if not dropped:
        return
    layers = ", ".join(f"layer {i} ({name} {nums})" for i, (name, nums) in dropped.items())
    LOGGER.warning(f"WARNING: {src}: {layers}: the input width (before width_multiple) given as a channel count, "
                   "the blog style; ignored. Channel-keeping blocks take their width from the previous layer: "
                   "write [] there (or only the block's options).")


# ---- graph ---------------------------------------------------------------------------------


@dataclass
class Finding:
    """One problem of a layer graph; `error` ones stop the build."""

    layer: int
    error: bool
    text: str


def abs_froms(rows: list[list]) -> list[list[int]]:
    """Absolute input indices of every layer (``-1`` is the previous layer)."""
    out = []
    for i, row in enumerate(rows):
        f = row[0]
        out.append([j % i if j < 0 else j for j in ([f] if isinstance(f, int) else f)] if i else [])
    return out


def _spec(row: list) -> BlockSpec | None:
    try:
        return lookup(str(row[2]))
    except KeyError:
        return None


def _rule(row: list) -> Channels | None:
    s = _spec(row)
    return s.channels if s else None


def find_problems(rows: list[list], sizes: list | None = None) -> list[Finding]:
    """The problems of a layer list (YAML rows, backbone + head). `sizes`: each layer's output
    (height, width) on some input (None for non-tensor outputs); without it the resolution
    rule is skipped."""
    froms = abs_froms(rows)
    users: dict[int, list[int]] = {i: [] for i in range(len(rows))}
    for i, fs in enumerate(froms):
        for j in fs:
            users.setdefault(j, []).append(i)
    found = [Finding(i, True, f"layer {i} ({rows[i][2]}) is computed but no later layer reads it")
             for i in range(len(rows) - 1) if not users[i]]
    for d, row in enumerate(rows):
        if _rule(row) is Channels.DETECT:
            found += _detect_inputs(rows, d, froms[d], users, froms, sizes)
    return found


def _detect_inputs(rows, d: int, inputs: list[int], users, froms, sizes) -> list[Finding]:
    concats = [j for j in inputs if _rule(rows[j]) is Channels.CONCAT]
    found = [Finding(d, True, f"Detect (layer {d}) reads Concat layer(s) {', '.join(map(str, concats))}: branches "
                              "meet there, a level's output is the block after it")] if concats else []
    for j in inputs:
        name = rows[j][2]
        if j in concats or sizes is None or sizes[j] is None:
            continue
        for u in users[j]:
            if u != d and froms[u] == [j] and sizes[u] == sizes[j]:
                keep = _rule(rows[u]) is Channels.KEEP
                found.append(Finding(d, not keep, f"Detect (layer {d}) reads layer {j} ({name}), but its branch goes on "
                                                  f"into layer {u} ({rows[u][2]}) at the same resolution: "
                                                  f"Detect probably should read layer {u}"))
                break
    return found


def shift_after_insert(rows: list[list], k: int, redirect: bool = True) -> list[list]:
    """`rows` after a layer was inserted at index `k` (already in `rows`, the later rows still
    numbered as before it): every absolute ``from`` index >= k of the later layers grows by
    one; with `redirect` the references to layer k-1 move to k too (the new layer takes over
    its input's outputs). ``-1`` stays (the layer after the new one reads it); other relative
    references are recomputed the same way."""
    def move(j: int) -> int:
        return j + 1 if (j >= k or (redirect and j == k - 1)) else j

    def ref(j: int, i: int) -> int:
        if j == -1:
            return j
        return move(j) if j >= 0 else move(i - 1 + j) - i  # a relative j counted from old index i - 1

    out = [list(r) for r in rows]
    for i in range(k + 1, len(out)):
        f = out[i][0]
        out[i][0] = ref(f, i) if isinstance(f, int) else [ref(j, i) for j in f]
    return out


def _unshifted_insert(rows: list[list], rebuild: Rebuild | None) -> tuple[int, list[list]] | None:
    """The index of an inserted channel-keeping block whose later indices were left unshifted,
    with the repaired rows, if shifting them gives a clean graph (that builds, with `rebuild`)."""
    for k in range(1, len(rows) - 1):
        if rows[k][0] != -1 or _rule(rows[k]) is not Channels.KEEP:
            continue
        for redirect in (True, False):
            fixed = shift_after_insert(rows, k, redirect)
            if any(j >= i for i, fs in enumerate(abs_froms(fixed)) for j in fs) or find_problems(fixed):
                continue
            if rebuild is not None:
                try:
                    if any(x.error for x in find_problems(fixed, rebuild(fixed))):
                        continue
                except ValueError:  # ModelConfigError: the repaired YAML does not build
                    continue
            return k, fixed
    return None


def check_graph(rows: list[list], src: str, sizes: list | None = None,
                log: Callable[[str], None] = LOGGER.warning, rebuild: Rebuild | None = None) -> list[Finding]:
    """Raise ModelConfigError for a real mistake in the layer graph; log the warnings.

    The error message names `src` (the YAML file), the layers and the fix; when an inserted
    block's later indices were not shifted, it says so and gives the insert helper's command.
    `rebuild(rows)` returns the layer sizes of the same model with other rows (raising
    ModelConfigError if they do not build): it confirms that diagnosis. Returns the findings
    (warnings only, if it returns).
    """
    found = find_problems(rows, sizes)
    errors = [x for x in found if x.error]
    if errors:
        problems = "; ".join(x.text for x in errors)
        hit = _unshifted_insert(rows, rebuild)
        if hit is None:
            raise config_error(f"{src}: {problems}. Fix the 'from' indices (a layer inserted by hand shifts "
                               f"every later index; the insert helper does it: {INSERT_HELP}).")
        k, fixed = hit
        detect = [r[0] for r in fixed if _rule(r) is Channels.DETECT]
        raise config_error(f"{src}: layer {k} ({rows[k][2]}) was probably inserted without shifting the indices "
                           f"after it: {problems}. Every later 'from' index >= {k} must grow by one"
                           + (f" (Detect would read {detect[0]})" if detect else "")
                           + f"; let the insert helper write it: python models/yolo.py --cfg <the YAML without layer "
                             f"{k}> --insert {rows[k][2]}@{k} --save <new yaml>.")
    for x in found:
        log(f"WARNING: {src}: {x.text}.")
    return found
