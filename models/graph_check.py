"""Semantic checks of a model YAML: does the layer graph compute what the author meant?

`parse_model` builds any YAML whose shapes fit together; these checks catch the configs that
build but are wrong. Each message names the YAML file, the layer and what to do.

Channel arguments of channel-keeping blocks (:func:`strip_channel_args`, while parsing)
    A ``Channels.KEEP`` block takes its width from its input, so a YAML gives it only options
    (a reduction ratio, a kernel size). Blog recipes write a channel count anyway
    (``[-1, 1, CBAM, [1024]]``, ``[-1, 1, CA, [1024, 1024]]``). Rule, for the first
    ``spec.channel_args`` arguments: an integer equal to the layer's input width before
    ``width_multiple`` (what every number of a YAML means) is a channel count; it is dropped,
    the model's YAML keeps the normalised row, and one warning per YAML file and layer and run
    of the program says so. Any other number is the block's option, validated by the block
    class's ``check_args`` hook (:func:`check_block_args`): a value the block cannot use (a
    reduction ratio >= the channel count, a float for an integer) is an error; when such a
    value is also a width of the YAML, the message says it looks like a channel count.
    (``[<input width>, option]`` states an option after the blog-style channel count.)

Graph (:func:`check_graph`, after the model is built)
    - a layer whose output no later layer reads (and that is not the last layer): error.
      When the YAML becomes clean by shifting the indices after one inserted
      channel-keeping layer, the message says so and gives the insert command.
    - Detect reading a Concat (where branches meet, not an output): error.
    - Detect reading two layers of the same resolution (two levels with one stride): error.
    - Detect reading a layer whose only continuation at the same resolution is a
      channel-keeping block refining it (an attention block Detect skips): a warning. A layer
      that also feeds other paths (an FPN lateral conv, an upsample) is fine.

Checkpoints are rebuilt *leniently* (``lenient=True``): arguments are taken literally and every
finding is a warning, so a model trained before a rule existed still loads as it was trained.
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


_WARNED: set[tuple] = set()  # (file, layer, text) already reported in this run of the program


def warn_once(key: tuple, msg: str, log: Callable[[str], None] | None = None) -> None:
    """Log `msg` unless a message with the same `key` was logged before in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    (log or LOGGER.warning)(msg)


def reset_warnings() -> None:
    """Forget which warnings were given (tests)."""
    _WARNED.clear()


def strip_channel_args(spec: BlockSpec, args: list, c_in0: int) -> tuple[list, list[int]]:
    """Split the blog-style channel counts off a channel-keeping block's YAML arguments.

    `c_in0`: the layer's input width before ``width_multiple``. Returns the remaining
    arguments (the block's options) and the numbers dropped: leading integers (at most
    ``spec.channel_args``) equal to `c_in0`. Any other value stays (see :func:`check_block_args`).
    """
    dropped: list[int] = []
    while len(dropped) < spec.channel_args and args and type(args[0]) is int and args[0] == c_in0:
        dropped.append(args[0])
        args = args[1:]
    return args, dropped


def check_block_args(spec: BlockSpec, args: list, c_in: int, c_in0: int, widths: set[int], where: str,
                     lenient: bool = False) -> None:
    """Validate a channel-keeping block's options with its class's ``check_args(c1, *args)`` hook.

    `c_in` / `c_in0`: the input width after / before ``width_multiple``; `widths`: the widths
    the YAML writes. Raises ModelConfigError naming `where` and what to write instead (a
    warning with `lenient`); the hook's notes on unusual values are warnings (once per run).
    """
    hook = getattr(spec.cls, "check_args", None)
    if hook is None:
        return
    alike = [v for v in args[:spec.channel_args] if isinstance(v, (int, float)) and not isinstance(v, bool)
             and (v in widths or v in (c_in, c_in0))]
    chan = (f"; {alike[0]:g} looks like a channel count, but {spec.name} keeps its input width ({c_in0} channels, "
            f"{c_in} after width_multiple) and takes no channel argument") if alike else ""
    fix = f". Write [] for the paper's defaults, or [{c_in0}] (the input width, the blog style)"
    try:
        notes = hook(c_in, *args) or []
    except ValueError as e:
        msg = f"{where}: {spec.name} {list(args)}: {e}{chan}{fix}."
        if not lenient:
            raise config_error(msg) from None
        warn_once((where, msg), f"WARNING: {msg} (kept: the model is rebuilt as it was trained)")
        return
    for note in notes:
        warn_once((where, note), f"WARNING: {where}: {spec.name} {list(args)}: {note}{chan}{fix if chan else ''}.")


def log_dropped_channels(src: str, dropped: dict[int, tuple[str, list[int]]]) -> None:
    """The one warning per model listing the channel counts :func:`strip_channel_args` dropped
    (layers already reported in this run are left out)."""
    new = {i: v for i, v in dropped.items() if (src, i, v[0], tuple(v[1])) not in _WARNED}
    if not new:
        return
    _WARNED.update((src, i, v[0], tuple(v[1])) for i, v in new.items())
    layers = ", ".join(f"layer {i} ({name} {nums})" for i, (name, nums) in new.items())
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
    if sizes is None:
        return found
    level: dict[tuple, int] = {}  # resolution -> the first input of Detect at it
    for j in inputs:
        if sizes[j] is None:
            continue
        if sizes[j] in level:
            found.append(Finding(d, True, f"Detect (layer {d}) reads layers {level[sizes[j]]} and {j} at the same "
                                          f"resolution: two detection levels would share one stride (each level "
                                          f"reads the last layer of its own resolution)"))
        level.setdefault(sizes[j], j)
        if j in concats:
            continue
        refine = [u for u in users[j] if u not in inputs and u != d and froms[u] == [j] and sizes[u] == sizes[j]
                  and _rule(rows[u]) is Channels.KEEP]
        if refine:  # an attention block refines j, and Detect skips it; a lateral conv or upsample is fine
            u = refine[0]
            found.append(Finding(d, False, f"Detect (layer {d}) reads layer {j} ({rows[j][2]}), but its branch goes on "
                                           f"into layer {u} ({rows[u][2]}), a channel-keeping block refining it: "
                                           f"Detect probably should read layer {u}"))
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
                log: Callable[[str], None] = LOGGER.warning, rebuild: Rebuild | None = None,
                lenient: bool = False) -> list[Finding]:
    """Raise ModelConfigError for a real mistake in the layer graph; log the warnings.

    The error message names `src` (the YAML file), the layers and the fix; when an inserted
    block's later indices were not shifted, it says so and gives the insert helper's command.
    `rebuild(rows)` returns the layer sizes of the same model with other rows (raising
    ModelConfigError if they do not build): it confirms that diagnosis. With `lenient` (a model
    rebuilt from a checkpoint) every finding is a warning. Each warning is logged once per run.
    Returns the findings (warnings only, unless `lenient`).
    """
    found = find_problems(rows, sizes)
    errors = [x for x in found if x.error]
    if errors and not lenient:
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
        note = " (kept: the model is rebuilt as it was trained)" if x.error else ""
        warn_once((src, x.layer, x.text), f"WARNING: {src}: {x.text}{note}.", log)
    return found
