"""Train widget: training pairs from the viewer (and a folder), settings, device, live progress and plot.

Start runs :func:`napari_ccdseg.train.train` in a worker; Stop ends the run after the current step
and keeps the best checkpoint. "Fine-tune on corrections" starts from the model that made the
``<image> prediction`` layers and trains on those layers, as the user corrected them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from ..bundled import resolve_model
from ..classes import CLASS_WEIGHTINGS
from ..dataset import LabelledFrame
from ..devices import available_devices, describe_device, resolve_device
from ..io import validated_labels
from ..errors import InputError
from ..train import OPTIMISERS, TrainConfig, TrainResult, keeps_readout_axes
from ..unet import UNET_CONFIGS
from ..updates import EpochUpdate, LogUpdate, StepUpdate
from ._common import (
    PathEdit, WorkerWidget, combo, dspin, form, report_error, session, spin, user_folder, wrapped_label,
)
from ._layers import LABEL_KINDS, full_name, image_layers, labels_name, paired_labels, watch_layers
from .workers import TrainSettings, train_worker

_PAIR_ROLE = Qt.UserRole


def default_model_path() -> str:
    """A fresh, timestamped model file in the user's data folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(user_folder("models") / f"model-{stamp}.safetensors")


class LossPlot:
    """Loss (train, validation) and validation accuracy / cluster F1 per epoch, redrawn on each epoch."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.2, 2.3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.loss_axes, self.score_axes = self.figure.subplots(1, 2)
        self.rows: list[dict] = []
        self.draw()

    def reset(self) -> None:
        self.rows = []
        self.draw()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.draw()

    def draw(self) -> None:
        epochs = [row["epoch"] for row in self.rows]
        for axes in (self.loss_axes, self.score_axes):
            axes.clear()
            axes.set_xlabel("epoch", fontsize=8)
            axes.tick_params(labelsize=7)
        self.loss_axes.set_title("loss", fontsize=9)
        self.score_axes.set_title("validation", fontsize=9)
        self.score_axes.set_ylim(0, 1.02)
        if self.rows:
            self.loss_axes.plot(epochs, [r["train_loss"] for r in self.rows], "o-", ms=3, label="train")
            self.loss_axes.plot(epochs, [r["val_loss"] for r in self.rows], "o-", ms=3, label="validation")
            self.score_axes.plot(epochs, [r.get("val_accuracy", np.nan) for r in self.rows], "o-", ms=3, label="accuracy")
            self.score_axes.plot(
                epochs, [r.get("val_f1_cluster", np.nan) for r in self.rows], "o-", ms=3, color="#e03030", label="cluster F1"
            )
            for axes in (self.loss_axes, self.score_axes):
                axes.legend(fontsize=7)
        self.canvas.draw_idle()


class TrainWidget(WorkerWidget):
    """Pairs, architecture and optimiser settings, device; Start / Stop / Fine-tune on corrections."""

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(napari_viewer, parent)
        self.session = session(napari_viewer)
        self.result: TrainResult | None = None
        self.steps_done = 0
        self._checked: dict[tuple[str, str], bool] = {}
        data, settings = self._data_section(), self._settings_section()
        self.set_sections(data, settings, self._run_section())
        self.busy_widgets = [self.start_button, self.finetune_button, data, settings]
        self.refresh_pairs()
        watch_layers(napari_viewer, self.refresh_pairs)

    def _data_section(self) -> QGroupBox:
        """Layer pairs, a dataset folder, domain-randomised frames."""
        self.pairs = QListWidget()
        self.pairs.setToolTip("image + labels layers to train on; 'X' pairs with 'X labels', 'X truth' or 'X prediction'")
        self.pairs.setMaximumHeight(130)
        self.folder = PathEdit(mode="folder", tip="optional: also train on a dataset folder (X.npy + X_labels.png)")
        self.folder.setText(self.session.training_folder)
        self.session.training_folder_changed.connect(self.folder.setText)
        self.randomised = spin(
            0, 0, 100000,
            "also train on this many simulated 256² frames, each from a randomly drawn detector, with "
            "exact truth (as ccdseg train --randomised N); the bundled default model used 800",
        )
        return form([self.pairs, ("Folder", self.folder), ("Randomised frames", self.randomised)], "Training data")

    def _settings_section(self) -> QGroupBox:
        """TrainConfig's fields (as the CLI names its options), device, model files."""
        defaults = TrainConfig()
        self.architecture = combo(
            list(UNET_CONFIGS), defaults.architecture, "small: fast on a CPU; seed: the original project's U-Net"
        )
        self.epochs = spin(defaults.epochs, 1, 100000)
        self.steps = spin(defaults.steps_per_epoch, 1, 100000, "optimiser steps per epoch")
        self.batch_size = spin(defaults.batch_size, 1, 1024)
        self.tile_size = spin(defaults.tile_size, 16, 4096, "training tile size (px)", step=16)
        self.learning_rate = dspin(defaults.learning_rate, 1e-6, 10.0, step=1e-4, decimals=6)
        self.optimiser = combo(OPTIMISERS, defaults.optimiser)
        self.val_split = dspin(defaults.val_split, 0.0, 0.9, "share of frames held out for validation", step=0.05)
        self.max_minutes = dspin(
            0.0, 0.0, 100000.0, "stop after this many minutes, keeping the best model (0: no limit)", step=1.0, decimals=1
        )
        self.class_weighting = combo(
            CLASS_WEIGHTINGS, defaults.class_weighting,
            "loss weights from the training labels: inverse class presence, its square root, or none",
        )
        self.seed = spin(defaults.seed, 0, 2**31 - 1, "random seed of tiles, augmentation and initial weights")
        self.augment = QCheckBox("Augmentation")
        self.augment.setChecked(defaults.augment)
        self.augment.setToolTip(
            "flips, scale and shift (and 90° turns and rotations for labels from the seed-v1 preset, whose "
            "images have alike rows and columns); thin strips of a frame's glowing band at tile edges; lone hot "
            "pixels with the frame's hot-pixel values"
        )
        devices = available_devices()
        self.device = combo(devices, devices[1] if len(devices) > 1 else "cpu", "CPU or a CUDA device")
        self.config_boxes = {  # TrainConfig field -> (row label, box); settings() reads them all
            "architecture": ("Architecture", self.architecture), "epochs": ("Epochs", self.epochs),
            "steps_per_epoch": ("Steps / epoch", self.steps), "batch_size": ("Batch size", self.batch_size),
            "tile_size": ("Tile size", self.tile_size), "learning_rate": ("Learning rate", self.learning_rate),
            "optimiser": ("Optimiser", self.optimiser), "val_split": ("Validation split", self.val_split),
            "max_minutes": ("Time limit (min)", self.max_minutes),
            "class_weighting": ("Class weighting", self.class_weighting), "seed": ("Seed", self.seed),
            "augment": ("", self.augment), "device": ("Device", self.device),
        }
        self.device_line = wrapped_label("")
        self.device.currentTextChanged.connect(self._device_changed)
        self._device_changed(self.device.currentText())
        self.model_path = PathEdit(default_model_path(), mode="save", filter="Model (*.safetensors)", tip="model file to write")
        self._auto_model_path = self.model_path.text()
        self.init_model = PathEdit(mode="open", filter="Model (*.safetensors)", tip="optional: fine-tune this model file")
        return form(
            [*self.config_boxes.values(), self.device_line, ("Save model to", self.model_path),
             ("Fine-tune from", self.init_model)],
            "Settings",
        )

    def _run_section(self) -> QWidget:
        """Start, Stop, Fine-tune on corrections; progress, status, loss plot, log."""
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.stop_button.setToolTip("end after the current step, keeping the best checkpoint")
        self.finetune_button = QPushButton("Fine-tune on corrections")
        self.finetune_button.setToolTip(
            "train the model that made the '… prediction' layers further, on those layers as you corrected them"
        )
        self.finetune_button.clicked.connect(self.fine_tune_on_corrections)
        self.plot = LossPlot()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(90)
        font = self.log.font()
        font.setPointSize(max(7, font.pointSize() - 2))
        self.log.setFont(font)
        return form([self.run_buttons(self.start_button), self.finetune_button, self.progress_bar, self.status,
                     self.plot.canvas, self.log])

    # ------------------------------------------------------------ pairs

    def refresh_pairs(self, *_) -> None:
        """List every (image, paired labels) candidate; remember check states across refreshes.

        New candidates start checked when they are the image's preferred pair: ``X labels``, else
        ``X truth``, else ``X prediction``.
        """
        for index in range(self.pairs.count()):
            item = self.pairs.item(index)
            self._checked[item.data(_PAIR_ROLE)] = item.checkState() == Qt.Checked
        self.pairs.clear()
        for image in image_layers(self.viewer):
            found = paired_labels(self.viewer, image)
            for rank, kind in enumerate(kind for kind in LABEL_KINDS if kind in found):
                key = (image.name, found[kind].name)
                item = QListWidgetItem(f"{image.name}  ⟵  {found[kind].name}")
                item.setData(_PAIR_ROLE, key)
                item.setToolTip(full_name(image))
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked if self._checked.get(key, rank == 0) else Qt.Unchecked)
                self.pairs.addItem(item)

    def checked_pairs(self) -> list[tuple[str, str]]:
        """(image layer, labels layer) names checked for training."""
        return [
            self.pairs.item(i).data(_PAIR_ROLE)
            for i in range(self.pairs.count())
            if self.pairs.item(i).checkState() == Qt.Checked
        ]

    def set_checked(self, keep) -> None:
        """Check exactly the pairs for which ``keep((image, labels))`` is true."""
        for index in range(self.pairs.count()):
            item = self.pairs.item(index)
            item.setCheckState(Qt.Checked if keep(item.data(_PAIR_ROLE)) else Qt.Unchecked)

    def frames(self) -> list[LabelledFrame]:
        """The checked pairs as the core's LabelledFrames (labels copied: painting may go on meanwhile)."""
        frames = []
        for image_name, labels_name_ in self.checked_pairs():
            if image_name not in self.viewer.layers or labels_name_ not in self.viewer.layers:
                continue
            image, labels = self.viewer.layers[image_name], self.viewer.layers[labels_name_]
            checked = validated_labels(f"layer '{labels_name_}'", labels.data)
            frames.append(LabelledFrame(image_name, np.asarray(image.data), checked, labels.metadata.get("ccdseg_instances")))
        return frames

    # ------------------------------------------------------------ device

    def _device_changed(self, spec: str) -> None:
        try:
            self.device_line.setText(f"Training on {describe_device(resolve_device(spec))}")
        except InputError as error:
            self.device_line.setText(str(error))

    # ------------------------------------------------------------ run

    def settings(self, init_model: str | None = None) -> TrainSettings:
        """Every field, read once, as the run's TrainSettings (raises InputError on a bad choice)."""
        config = TrainConfig.from_options({name: _value(box) for name, (_, box) in self.config_boxes.items()})
        init_model = init_model or self.init_model.text() or None
        init_model = init_model and str(resolve_model(init_model))  # a name, as the CLI reads it
        if init_model and not Path(init_model).is_file():
            raise InputError(f"{init_model}: model file to fine-tune not found")
        if not self.model_path.text():
            raise InputError("choose where to save the model")
        pairs = self.checked_pairs()
        metadata = {"trained_in": "napari", "pairs": [list(p) for p in pairs], "randomised_frames": self.randomised.value()}
        presets = {self.viewer.layers[name].metadata.get("label_preset") for _, name in pairs if name in self.viewer.layers}
        if len(presets) == 1 and None not in presets:
            metadata["label_preset"] = presets.pop()
            config = dataclasses.replace(config, keep_readout_axes=keeps_readout_axes(metadata["label_preset"]))
        settings = TrainSettings(
            config, self.model_path.text(), self.frames(), self.folder.text(), self.randomised.value(), init_model, metadata
        )
        if not (settings.frames or settings.folder or settings.randomised):
            raise InputError(
                "no training data: check at least one image + labels pair, choose a folder, or add randomised frames"
            )
        return settings

    def start(self, init_model: str | None = None) -> None:
        """Train on the checked pairs (and the folder, read in the worker) in a worker."""
        if self.busy:
            return
        try:
            settings = self.settings(init_model if isinstance(init_model, str) else None)
        except InputError as error:
            report_error(error, "training")
            return
        self.plot.reset()
        self.log.clear()
        folder = f" and the folder {settings.folder}" if settings.folder else ""
        self.status.setText(f"{len(settings.frames) + settings.randomised} frame(s){folder}; starting …")
        self.result = None
        self.steps_done = 0
        config = settings.config
        self.start_worker(
            train_worker(settings, self.stop_event),
            "fine-tuning" if settings.init_model else "training",
            on_yield=self._update,
            on_return=self._finished,
            on_done=self._done,
            total=config.epochs * config.steps_per_epoch,
        )

    def request_stop(self) -> None:
        """End after the current step; the best checkpoint so far is kept."""
        super().request_stop()
        self.status.setText("stopping after the current step …")

    def fine_tune_on_corrections(self) -> None:
        """Train the model behind the ``… prediction`` layers on those layers, as corrected."""
        predictions = [key for key in self._all_pairs() if key[1] == labels_name(key[0], "prediction")]
        if not predictions:
            report_error(InputError("no '<image> prediction' layers to fine-tune on: predict first"), "fine-tuning")
            return
        base = ""
        for _, name in predictions:
            base = self.viewer.layers[name].metadata.get("ccdseg_model", "") or base
        base = base or self.init_model.text() or self.session.model_path
        if not base:
            report_error(InputError("no model to fine-tune: train one or choose 'Fine-tune from'"), "fine-tuning")
            return
        self.set_checked(lambda key: key in predictions)
        if self.model_path.text() in (self._auto_model_path, base):
            self._new_default_path()
        self.start(init_model=base)

    def _all_pairs(self) -> list[tuple[str, str]]:
        return [self.pairs.item(i).data(_PAIR_ROLE) for i in range(self.pairs.count())]

    def _new_default_path(self) -> None:
        path = default_model_path()
        while path == self._auto_model_path or Path(path).exists():
            path = str(Path(path).with_name(Path(path).stem + "-1.safetensors"))
        self._auto_model_path = path
        self.model_path.setText(path)

    def _update(self, update) -> None:
        if isinstance(update, StepUpdate):
            done = (update.epoch - 1) * update.steps + update.step
            self.steps_done = done
            self.progress_bar.setValue(done)
            loss = "" if update.loss is None else f", loss {update.loss:.4f}"
            if not self.stop_event.is_set():
                self.status.setText(f"epoch {update.epoch}/{update.epochs}, step {update.step}/{update.steps}{loss}")
        elif isinstance(update, EpochUpdate):
            row = update.row
            self.plot.add(row)
            self.log.appendPlainText(
                f"epoch {update.epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                f"accuracy {row.get('val_accuracy', float('nan')):.3f}, cluster F1 {row.get('val_f1_cluster', float('nan')):.3f}"
                + ("  [saved]" if update.saved else "")
            )
        elif isinstance(update, LogUpdate):
            if update.message.startswith("training on"):
                self.device_line.setText(update.message[0].upper() + update.message[1:])
            self.log.appendPlainText(update.message)

    def _finished(self, result: TrainResult | None) -> None:
        if result is None:  # stopped while the randomised frames were simulated: nothing trained
            self.status.setText("stopped before training began; no model written")
            return
        self.result = result
        self.session.set_model(result.model_path)
        best = result.history[result.best_epoch - 1] if result.best_epoch else {}
        f1 = best.get("val_f1_cluster")
        self.status.setText(
            f"model saved: {result.model_path} (best epoch {result.best_epoch}"
            + (f", val cluster F1 {f1:.3f}" if f1 is not None else "")
            + ")"
            + (f"; stopped: {result.stopped}" if result.stopped else "")
        )

    def _done(self) -> None:
        if self.result is not None:
            self.progress_bar.setValue(self.progress_bar.maximum())
        if self.result is not None and self.model_path.text() == self._auto_model_path:
            self._new_default_path()  # the next run must not overwrite this model


def _value(box):
    """A form widget's value: spin boxes' number, a combo's text, a check box's state."""
    if isinstance(box, QCheckBox):
        return box.isChecked()
    return box.currentText() if isinstance(box, QComboBox) else box.value()
