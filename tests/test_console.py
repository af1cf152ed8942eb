"""Training progress on the console: bars on a terminal, one line per epoch in a log."""

import io

from napari_ccdseg.console import TrainProgressPrinter
from napari_ccdseg.updates import EpochUpdate, LogUpdate, StepUpdate

ROW = {"train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "val_f1_cluster": 0.7}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_two_epochs(stream) -> str:
    printer = TrainProgressPrinter(stream)
    printer(LogUpdate("training on cpu"))
    for epoch in (1, 2):
        for step in range(1, 51):
            printer(StepUpdate(epoch, 2, step, 50, 0.5))
        printer(EpochUpdate(epoch, 2, ROW, saved=epoch == 1))
    return stream.getvalue()


def test_a_log_file_gets_one_line_per_epoch_and_no_bar_fragments():
    text = run_two_epochs(io.StringIO())
    assert "\r" not in text
    assert text.splitlines() == [
        "training on cpu",
        "epoch 1/2: train loss 0.5000, val loss 0.4000, accuracy 0.9000, cluster F1 0.700  [saved]",
        "epoch 2/2: train loss 0.5000, val loss 0.4000, accuracy 0.9000, cluster F1 0.700",
    ]


def test_a_terminal_gets_a_bar_through_each_epoch():
    text = run_two_epochs(Terminal())
    assert "\r" in text and "epoch 1/2:" in text and "50/50" in text
