"""The only place that picks devices, mixed precision and the distributed setup, and that
knows what the CPU can do (its ISA features, whether it has native bf16).

`--device` strings follow YOLOv5: ``''`` (first GPU if any, else CPU), ``cpu``, ``0``,
``0,1``, ``cuda:0``, ``mps``.

Inference precision: FP32 unless reduced precision is asked for (``--half``), which means
FP16 on CUDA and bf16 on a CPU with native bf16 (AVX512_BF16 or AMX); see :func:`half_dtype`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator
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


# (label, /proc/cpuinfo flags any of which means the feature) for the ISA features that decide
# which precisions run fast on a CPU
CPU_FEATURES = (
    ("AVX2", ("avx2",)),
    ("AVX-512", ("avx512f",)),
    ("VNNI", ("avx512_vnni", "avx_vnni")),
    ("AVX512_BF16", ("avx512_bf16",)),
    ("AMX", ("amx_bf16", "amx_int8", "amx_tile")),
)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN reads these at start-up; BF16 / TF32 / ANY there lower torch's float32 convolutions
ONEDNN_FPMATH_ENV = ("ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The text of /proc/cpuinfo -> (the first processor's model name, its feature flags).
    x86 lists flags under 'flags', ARM under 'Features'; ('unknown', empty) when neither is there."""
    name, flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and name == "unknown":
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return name, flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """This machine's CPU: (model name, feature flags), read once from /proc/cpuinfo. Where there is
    no /proc/cpuinfo (macOS, Windows) the flags are empty, so no native bf16 is assumed."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or "unknown", frozenset()
    return parse_cpuinfo(text)


def cpu_seconds() -> float:
    """CPU time (user + system, seconds) used so far by this process and by its children that have
    exited (DataLoader workers, once joined): the difference around a training run is its CPU time,
    which unlike wall time does not grow when other jobs share the cores. NaN where the ``resource``
    module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512_BF16 or AMX-BF16: Intel Cooper Lake,
    Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere bf16 is emulated and slower than FP32."""
    return bool(NATIVE_BF16_FLAGS & cpu_info()[1])


def cpu_summary() -> str:
    """One line naming the CPU and the ISA features that matter for inference precision, e.g.
    'Intel(R) Xeon(R) Processor: AVX2 yes, AVX-512 yes, VNNI yes, AVX512_BF16 yes, AMX yes'."""
    name, flags = cpu_info()
    told = ", ".join(f"{label} {'yes' if flags & set(names) else 'no'}" for label, names in CPU_FEATURES)
    return f"{name}: {told}" if flags else f"{name} (ISA features unknown: no /proc/cpuinfo)"


def half_dtype(device: torch.device) -> torch.dtype | None:
    """What reduced precision (``--half``) means on `device`: torch.float16 on CUDA, torch.bfloat16
    on a CPU with native bf16, None where there is no fast reduced precision (FP32 is used)."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def no_half_reason(device: torch.device) -> str:
    """Why `half_dtype(device)` is None, in words for a one-line message."""
    if device.type == "cpu":
        return "this CPU has no native bf16 (AVX512_BF16 or AMX), where FP32 is faster and exact"
    return f"no reduced precision is supported on {device.type}"


def lowered_fpmath_env() -> str | None:
    """'NAME=VALUE' for an oneDNN environment variable that lowers torch's float32 CPU math below
    IEEE FP32 (e.g. ONEDNN_DEFAULT_FPMATH_MODE=BF16), or None."""
    for name in ONEDNN_FPMATH_ENV:
        value = os.environ.get(name, "")
        if value and value.strip().upper() != "STRICT":
            return f"{name}={value}"
    return None


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Run torch's float32 CPU convolutions and matrix products at IEEE FP32 inside, whatever the
    process set before (torch.set_float32_matmul_precision('medium') or
    torch.backends.mkldnn.*.fp32_precision = 'bf16' make oneDNN compute them in bf16 on CPUs with
    native bf16). The previous settings are restored on exit."""
    parts = [getattr(torch.backends.mkldnn, k, None) for k in ("conv", "matmul", "rnn")]
    parts = [p for p in parts if p is not None and hasattr(p, "fp32_precision")]
    old = [p.fp32_precision for p in parts]
    try:
        for p in parts:
            p.fp32_precision = "ieee"
        yield
    finally:
        for p, v in zip(parts, old):
            p.fp32_precision = v
