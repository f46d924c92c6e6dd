"""The project's one logger. Scripts call `set_logging()` once; modules use `LOGGER`."""

from __future__ import annotations

import logging
import os
import re
import sys

LOGGER = logging.getLogger("yolov5")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (so redirection and test capture work)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def set_logging(verbose: bool = True, rank: int | None = None) -> logging.Logger:
    """Plain messages on stderr; only rank 0 (or a single process) logs at INFO."""
    rank = int(os.getenv("RANK", -1)) if rank is None else rank
    level = logging.INFO if verbose and rank in (-1, 0) else logging.WARNING
    if not LOGGER.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(level)
    return LOGGER


def table(rows: list[dict], floatfmt: str = ".3g") -> str:
    """Render a list of dicts (same keys) as an aligned plain-text table."""
    if not rows:
        return ""
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, float) and floatfmt.endswith("g") and 1e3 <= abs(v) < 1e15:
            return f"{v:.0f}"  # 1234.5 ms reads as 1234 or 1235, not 1.23e+03
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


set_logging()


def markdown_table(rows: list[dict]) -> str:
    """A GitHub markdown table of a list of dicts (same keys)."""
    keys = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], stem: str | os.PathLike, note: str = "") -> None:
    """Write benchmark rows as `<stem>.csv` and `<stem>.md` (the note goes above the markdown table)."""
    import csv
    from pathlib import Path

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".md").write_text((note.strip() + "\n\n" if note else "") + markdown_table(rows))


_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^/\s]*@(?=[^@/\s]*(?:[:/]|$|\s))")


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it (``scheme://user:password@host``) shown as ``***``:
    for log lines, opt.yaml and checkpoints, which must not carry a database password."""
    return _URL_PASSWORD.sub(r"\1***@", text)
