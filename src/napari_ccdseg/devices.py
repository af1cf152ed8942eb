"""Which torch device to run on, and how to say so to the user."""

from __future__ import annotations

import torch

from .errors import InputError


def available_devices() -> list[str]:
    """``cpu`` and every CUDA device found, in the form ``--device`` and the widgets accept."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r}: no CUDA device is available here (use 'cpu' or 'auto')")
        device = torch.device(text if ":" in text else "cuda:0")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) found"
            )
        return device
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")


def describe_device(device: torch.device) -> str:
    """A line for logs and the widgets, e.g. ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


PRECISIONS = ("auto", "float32", "bfloat16")
"""Arithmetic for prediction. ``auto`` takes bfloat16 where the hardware runs it natively."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 in hardware: CUDA GPUs that support it, and CPUs
    with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":  # Ampere (compute capability 8.0) and later
        return torch.cuda.get_device_capability(device) >= (8, 0)
    # torch exposes the CPU feature checks only as private helpers; without them, assume none.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def check_precision(precision: str) -> None:
    """Refuse an unknown precision before any work is done."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype that ``precision`` means on ``device``.

    Where bfloat16 is native it predicts faster than float32 with the same per-class scores to
    two digits: docs/benchmarks.md ("Prediction") has the current timings, from
    benchmarks/bench_predict.py.
    """
    check_precision(precision)
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32
