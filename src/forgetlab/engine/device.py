"""Where a run executes: the device, the numeric precision and the peak memory it used.

Example:
    >>> device = resolve_device("cpu")
    >>> autocast, scaler = mixed_precision("fp32", device)
    >>> reset_peak_memory(device)
    >>> scaler is None, peak_memory_bytes(device) > 0
    (True, True)
"""

from __future__ import annotations

import contextlib
import resource
import sys
from typing import Any

import torch

from forgetlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise ConfigError(f"The 'device' parameter must be one of {', '.join(DEVICES)}. Got {device!r} instead.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("The 'device' parameter is 'cuda' but no CUDA device is available. Use --device cpu or auto.")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast is fast on ``device``: CUDA, or a CPU whose oneDNN has native
    bf16 kernels (AVX-512 BF16 / AMX). On an AVX2-only CPU bf16 is emulated: a width-32 BN VGG
    train step ran 12x slower than fp32 (24 vs 300 img/s, one thread, 2026-12-02)."""
    if device.type != "cpu":
        return True
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mixed_precision(precision: str, device: torch.device) -> tuple[Any, Any]:
    """``(autocast context, gradient scaler or None)`` for ``train.precision``.

    ``fp32`` autocasts nothing; ``bf16`` autocasts to bfloat16 (no scaler: bfloat16 has
    float32's range); ``fp16`` autocasts to float16 with a ``GradScaler`` and needs CUDA.
    """
    if precision == "fp32":
        return contextlib.nullcontext(), None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision='fp16' needs a CUDA device (this run is on {device.type}). "
            f"Use train.precision=bf16 on a CPU."
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    autocast = torch.autocast(device_type=device.type, dtype=dtype)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return autocast, scaler


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window for :func:`peak_memory_bytes` (per run, not per process).

    CUDA: the allocator's peak. CPU on Linux: the resident-set high-water mark, reset
    through ``/proc/self/clear_refs``; elsewhere the process's lifetime peak is kept.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory since :func:`reset_peak_memory`: CUDA allocator peak, or resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
