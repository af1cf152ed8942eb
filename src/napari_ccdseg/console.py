"""Terminal output for long work: tqdm bars and one line per epoch from typed updates."""

from __future__ import annotations

from tqdm import tqdm

from .updates import EpochUpdate, LogUpdate, StepUpdate, Update


class TrainProgressPrinter:
    """tqdm bar per epoch and one printed line per epoch, from typed training updates."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, update: Update) -> None:
        if isinstance(update, StepUpdate):
            if self.bar is None:
                self.bar = tqdm(total=update.steps, desc=f"epoch {update.epoch}/{update.epochs}", leave=False)
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{update.loss:.4f}")
        elif isinstance(update, EpochUpdate):
            self.close()
            row = update.row
            tqdm.write(
                f"epoch {update.epoch}/{update.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {row['val_loss']:.4f}, accuracy {row['val_accuracy']:.4f}, "
                f"cluster F1 {row['val_f1_cluster']:.3f}" + ("  [saved]" if update.saved else "")
            )
        elif isinstance(update, LogUpdate):
            self.close()
            tqdm.write(update.message)

    def close(self) -> None:
        """End the current epoch's bar (before a line is printed, or on Ctrl-C)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
