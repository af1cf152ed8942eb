"""Terminal output for long work: tqdm bars and one line per epoch from typed updates."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from .updates import EpochUpdate, LogUpdate, StepUpdate, Update


class TrainProgressPrinter:
    """One printed line per epoch (and per log message) from typed training updates; on a terminal,
    also a tqdm bar through each epoch.

    Not on a terminal (a log file, a batch job) there is no bar: every bar refresh would land in the
    log as a carriage-return fragment, thousands per run. ``stream`` defaults to the current stdout.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.bar: tqdm | None = None

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stdout  # looked up late: tests and callers may swap sys.stdout

    def __call__(self, update: Update) -> None:
        if isinstance(update, StepUpdate):
            if self.bar is None and self.out.isatty():
                self.bar = tqdm(total=update.steps, desc=f"epoch {update.epoch}/{update.epochs}", leave=False, file=self.out)
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{update.loss:.4f}")
        elif isinstance(update, EpochUpdate):
            row = update.row
            self._line(
                f"epoch {update.epoch}/{update.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.4f}, "
                f"cluster F1 {row['val_f1_cluster']:.3f}" + ("  [saved]" if update.saved else "")
            )
        elif isinstance(update, LogUpdate):
            self._line(update.message)

    def _line(self, text: str) -> None:
        """End the epoch's bar, then print the line at once (a log shows it as the run goes)."""
        self.close()
        tqdm.write(text, file=self.out)
        self.out.flush()

    def close(self) -> None:
        """End the current epoch's bar (before a line is printed, or on Ctrl-C)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
