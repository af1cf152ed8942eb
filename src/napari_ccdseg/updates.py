"""Typed progress updates from long work (training, prediction) to whoever shows them.

The CLI turns them into tqdm bars and log lines; the napari workers yield them to the widgets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepUpdate:
    """One optimiser step (training) or one batch of tiles (prediction) done."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None


@dataclass(frozen=True)
class EpochUpdate:
    """An epoch ended: its history row (losses, accuracy, per-class F1) and whether it was saved."""

    epoch: int
    epochs: int
    row: dict
    saved: bool


@dataclass(frozen=True)
class LogUpdate:
    """A line for the user: which device, where files went, why a run stopped."""

    message: str


Update = StepUpdate | EpochUpdate | LogUpdate
