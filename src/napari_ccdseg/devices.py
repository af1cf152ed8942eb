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
