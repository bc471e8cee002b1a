"""Precision, chosen once at setup for both apps: whether bf16 is fast here, and autocast.

`--precision auto` means bf16 autocast where the hardware has bf16 units (GPUs that support it,
CPUs with AMX or AVX512-BF16); elsewhere plain float32, or fp16 on older GPUs for the apps
that scale their loss for it (vision). fp32 is exact and the same everywhere.
"""

import contextlib
from contextlib import AbstractContextManager

import torch

from torchtutor.runtime.errors import UserError


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 units (AMX or AVX512-BF16; Linux's /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on GPUs that support it and on CPUs with bf16 units."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def autocast_dtype(precision: str, device: torch.device, cpu_auto_bf16: bool = True,
                   fp16: bool = False) -> torch.dtype | None:
    """The autocast dtype for a --precision choice on `device`, or None for plain float32.

    `cpu_auto_bf16`: whether `auto` may pick bf16 on a CPU (a model too small to gain from it
    says no); `fp16`: whether the caller scales its loss, so that `auto` may fall back to fp16
    on a GPU without bf16 and `fp16` may be asked for.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "fp16":
        if not fp16 or device.type != "cuda":
            raise UserError("--precision fp16 needs CUDA; on the CPU use bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if bf16_is_fast(device) else (torch.float16 if fp16 else None)
    return torch.bfloat16 if cpu_auto_bf16 and bf16_is_fast(device) else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """The autocast context for `dtype` on `device` (a no-op for None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
