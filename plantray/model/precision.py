"""Where the model runs and in which precision."""

from __future__ import annotations

import torch


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def native_bf16_cpu() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays.

    Elsewhere oneDNN emulates bf16 and it is slower than fp32 (``bench/precision.py`` measures both).
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's capability probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``; other values unchanged.

    Resolved where the model runs (each actor, on its own node), so a cluster mixing CPU generations
    gets the right choice per node. bench/precision.py measured Top-1 agreement with fp32 >= 99.5%.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16_cpu() else "fp32"
