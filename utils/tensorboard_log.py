"""TensorBoard logging for train.py (``torch.utils.tensorboard``; view with ``tensorboard --logdir runs/train``).

Per epoch (step = epoch): every results.csv column under its CSV name (``train/box_loss``,
``metrics/mAP_0.5``, ``x/lr0`` ...; the ``gate/`` columns excepted) and the gate of every
attention block, given by the caller (train.py reads them from the EMA model, the one
validated, with models.gates.attention_gates), as ``gates/<module path>``
(``gates/model.9.attn`` ...; see models/attention/_base.py).
Once: the first training batch's first image (a mosaic, as the model sees it) as ``train/mosaic``.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TensorBoardLogger:
    """Event files in `log_dir` (the run folder). Inactive (every method a no-op) when `enabled` is False."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.writer = None
        self.mosaic_logged = False
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, row: dict, gates: dict[str, float], epoch: int) -> None:
        """Scalars of one epoch: `row` (results.csv keys -> numbers; ``epoch`` and the ``gate/``
        columns are skipped) and `gates` (module path -> gate value, one per attention block)."""
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and not k.startswith("gate/"):
                self.writer.add_scalar(k, float(v), epoch)
        for name, g in gates.items():
            self.writer.add_scalar(f"gates/{name}", g, epoch)
        self.writer.flush()

    def log_first_mosaic(self, imgs: torch.Tensor) -> None:
        """The first image of the first batch, (3, H, W) RGB float in [0, 1] (once per run)."""
        if self.writer is None or self.mosaic_logged:
            return
        self.writer.add_image("train/mosaic", imgs[0].detach().float().cpu().clamp(0, 1), 0, dataformats="CHW")
        self.mosaic_logged = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
