"""The only place that picks devices, mixed precision and the distributed setup.

`--device` strings follow YOLOv5: ``''`` (first GPU if any, else CPU), ``cpu``, ``0``,
``0,1``, ``cuda:0``, ``mps``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.logging import LOGGER


def select_device(device: str | int | torch.device = "", batch_size: int = 0, verbose: bool = True) -> torch.device:
    """Turn a `--device` value into a torch.device; fails clearly when CUDA is asked for but absent."""
    if isinstance(device, torch.device):
        return device
    spec = str(device).strip().lower().replace("cuda:", "").replace("none", "")
    if spec == "cpu":
        chosen = torch.device("cpu")
    elif spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("--device mps requested but MPS is not available on this machine")
        chosen = torch.device("mps")
    elif spec:
        ids = [s for s in spec.split(",") if s != ""]
        if not torch.cuda.is_available() or any(int(i) >= torch.cuda.device_count() for i in ids):
            raise ValueError(f"--device {device} requested but CUDA is not available "
                             f"({torch.cuda.device_count()} GPUs visible); use --device cpu")
        n = len(ids)
        if n > 1 and batch_size > 0 and batch_size % n:
            raise ValueError(f"--batch-size {batch_size} must be a multiple of the GPU count {n}")
        local = int(os.getenv("LOCAL_RANK", -1))
        chosen = torch.device(f"cuda:{ids[local] if 0 <= local < n else ids[0]}")
    else:
        chosen = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if verbose:
        if chosen.type == "cuda":
            p = torch.cuda.get_device_properties(chosen)
            LOGGER.info(f"Using {chosen} ({p.name}, {p.total_memory / 2**30:.0f} GiB)")
        else:
            LOGGER.info(f"Using {chosen} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    return chosen


def amp_enabled(device: torch.device) -> bool:
    """Automatic mixed precision is used on CUDA only (CPU fp16 is slow and imprecise)."""
    return device.type == "cuda"


def autocast(device: torch.device, enabled: bool | None = None):
    """`torch.autocast` for training/inference on `device`; a no-op context when disabled."""
    on = amp_enabled(device) if enabled is None else enabled
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only when AMP is."""
    return torch.amp.GradScaler(device.type, enabled=amp_enabled(device))


def memory_gb(device: torch.device) -> float:
    """Reserved CUDA memory in GB (0 on the CPU), for progress bars."""
    return torch.cuda.memory_reserved(device) / 1e9 if device.type == "cuda" else 0.0


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank -1 = not distributed)."""

    rank: int = -1
    local_rank: int = -1
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank in (-1, 0)


def dist_info() -> DistInfo:
    """Read torchrun's environment variables."""
    return DistInfo(int(os.getenv("RANK", -1)), int(os.getenv("LOCAL_RANK", -1)), int(os.getenv("WORLD_SIZE", 1)))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up: NCCL on GPUs, Gloo on the CPU."""
    info = dist_info()
    if info.local_rank != -1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo")
    return info


@contextlib.contextmanager
def main_process_first(local_rank: int):
    """Let the main process of each node do a job (dataset cache, download) before the others."""
    if local_rank not in (-1, 0):
        dist.barrier()
    yield
    if local_rank == 0:
        dist.barrier()
