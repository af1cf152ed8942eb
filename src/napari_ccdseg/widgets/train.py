"""Train widget: training pairs from the viewer (and a folder), settings, device, live progress and plot.

Start runs :func:`napari_ccdseg.train.train` in a worker; Stop ends the run after the current step
and keeps the best checkpoint. "Fine-tune on corrections" starts from the model that made the
``<image> prediction`` layers and trains on those layers, as the user corrected them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ..bundled import resolve_model
from ..classes import CLASS_WEIGHTINGS
from ..dataset import LabelledFrame
from ..devices import available_devices, describe_device, resolve_device
from ..io import validated_labels
from ..errors import InputError
from ..train import OPTIMISERS, TrainConfig, TrainResult
from ..unet import UNET_CONFIGS
from ..updates import EpochUpdate, LogUpdate, StepUpdate
from ._common import PathEdit, WorkerWidget, combo, dspin, report_error, session, spin, user_folder, wrapped_label
from ._layers import LABEL_KINDS, full_name, image_layers, labels_name, paired_labels, watch_layers
from .workers import train_worker

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
        defaults = TrainConfig()

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

        self.architecture = combo(list(UNET_CONFIGS), defaults.architecture, "small: fast on a CPU; seed: the original project's U-Net")
        self.epochs = spin(defaults.epochs, 1, 100000)
        self.steps = spin(defaults.steps_per_epoch, 1, 100000, "optimiser steps per epoch")
        self.batch_size = spin(defaults.batch_size, 1, 1024)
        self.tile_size = spin(defaults.tile_size, 16, 4096, "training tile size (px)", step=16)
        self.learning_rate = dspin(defaults.learning_rate, 1e-6, 10.0, step=1e-4, decimals=6)
        self.optimiser = combo(OPTIMISERS, defaults.optimiser)
        self.class_weighting = combo(
            CLASS_WEIGHTINGS, defaults.class_weighting,
            "loss weights from the training labels: inverse class presence, its square root, or none",
        )
        self.seed = spin(defaults.seed, 0, 2**31 - 1, "random seed of tiles, augmentation and initial weights")
        self.augment = QCheckBox("Geometric augmentation")
        self.augment.setChecked(defaults.augment)
        self.max_minutes = dspin(0.0, 0.0, 100000.0, "stop after this many minutes, keeping the best model (0: no limit)", step=1.0, decimals=1)
        self.val_split = dspin(defaults.val_split, 0.0, 0.9, "share of frames held out for validation", step=0.05)
        devices = available_devices()
        self.device = combo(devices, devices[1] if len(devices) > 1 else "cpu", "CPU or a CUDA device")
        self.device_line = wrapped_label("")
        self.model_path = PathEdit(default_model_path(), mode="save", filter="Model (*.safetensors)", tip="model file to write")
        self._auto_model_path = self.model_path.text()
        self.init_model = PathEdit(mode="open", filter="Model (*.safetensors)", tip="optional: fine-tune this model file")

        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("end after the current step, keeping the best checkpoint")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.finetune_button = QPushButton("Fine-tune on corrections")
        self.finetune_button.setToolTip(
            "train the model that made the '… prediction' layers further, on those layers as you corrected them"
        )
        self.finetune_button.clicked.connect(self.fine_tune_on_corrections)
        self.progress_bar = QProgressBar()
        self.status = wrapped_label("")
        self.plot = LossPlot()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(90)
        font = self.log.font()
        font.setPointSize(max(7, font.pointSize() - 2))
        self.log.setFont(font)

        data_box = QGroupBox("Training data")
        data = QVBoxLayout(data_box)
        data.addWidget(self.pairs)
        folder_row = QFormLayout()
        folder_row.addRow("Folder", self.folder)
        folder_row.addRow("Randomised frames", self.randomised)
        data.addLayout(folder_row)
        settings_box = QGroupBox("Settings")
        form = QFormLayout(settings_box)
        form.addRow("Architecture", self.architecture)
        form.addRow("Epochs", self.epochs)
        form.addRow("Steps / epoch", self.steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Tile size", self.tile_size)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Optimiser", self.optimiser)
        form.addRow("Validation split", self.val_split)
        form.addRow("Time limit (min)", self.max_minutes)
        form.addRow("Class weighting", self.class_weighting)
        form.addRow("Seed", self.seed)
        form.addRow(self.augment)
        form.addRow("Device", self.device)
        form.addRow(self.device_line)
        form.addRow("Save model to", self.model_path)
        form.addRow("Fine-tune from", self.init_model)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)

        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
        layout.addWidget(settings_box)
        layout.addLayout(buttons)
        layout.addWidget(self.finetune_button)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.plot.canvas)
        layout.addWidget(self.log)
        layout.addStretch(1)

        self.busy_widgets = [self.start_button, self.finetune_button, data_box, settings_box]
        self.result: TrainResult | None = None
        self.steps_done = 0
        self._checked: dict[tuple[str, str], bool] = {}
        self.device.currentTextChanged.connect(self._device_changed)
        self._device_changed(self.device.currentText())
        self.refresh_pairs()
        watch_layers(napari_viewer, self.refresh_pairs)

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
            image = self.viewer.layers[image_name]
            labels = self.viewer.layers[labels_name_]
            instances = labels.metadata.get("ccdseg_instances")
            frames.append(
                LabelledFrame(
                    image_name,
                    np.asarray(image.data),
                    validated_labels(f"layer '{labels_name_}'", labels.data),
                    instances,
                )
            )
        return frames

    # ------------------------------------------------------------ device

    def _device_changed(self, spec: str) -> None:
        try:
            self.device_line.setText(f"Training on {describe_device(resolve_device(spec))}")
        except InputError as error:
            self.device_line.setText(str(error))

    # ------------------------------------------------------------ run

    def config(self) -> TrainConfig:
        """The settings as a validated TrainConfig (field name -> box, as the CLI names its options)."""
        boxes = {
            "architecture": self.architecture, "epochs": self.epochs, "steps_per_epoch": self.steps,
            "batch_size": self.batch_size, "tile_size": self.tile_size, "learning_rate": self.learning_rate,
            "optimiser": self.optimiser, "val_split": self.val_split, "augment": self.augment,
            "class_weighting": self.class_weighting, "seed": self.seed, "device": self.device,
            "max_minutes": self.max_minutes,
        }
        return TrainConfig.from_options({name: _value(box) for name, box in boxes.items()})

    def start(self, init_model: str | None = None) -> None:
        """Train on the checked pairs (and the folder) in a worker."""
        if self.busy:
            return
        init_model = init_model if isinstance(init_model, str) and init_model else self.init_model.text() or None
        try:
            config = self.config()
            frames = self.frames()
            folder = self.folder.text()
            if folder:
                from ..dataset import load_labelled

                frames += load_labelled([folder])
            randomised = self.randomised.value()
            if not frames and not randomised:
                raise InputError(
                    "no training data: check at least one image + labels pair, choose a folder, "
                    "or add randomised frames"
                )
            init_model = init_model and str(resolve_model(init_model))  # a name, as the CLI reads it
            if init_model and not Path(init_model).is_file():
                raise InputError(f"{init_model}: model file to fine-tune not found")
            model_path = self.model_path.text()
            if not model_path:
                raise InputError("choose where to save the model")
            Path(model_path).parent.mkdir(parents=True, exist_ok=True)
        except Exception as error:  # noqa: BLE001 - InputError (or a folder error) shown to the user
            report_error(error, "training")
            return
        metadata = {
            "trained_in": "napari", "pairs": [list(p) for p in self.checked_pairs()], "randomised_frames": randomised,
        }
        presets = {
            self.viewer.layers[name].metadata.get("label_preset")
            for _, name in self.checked_pairs()
            if name in self.viewer.layers
        }
        if len(presets) == 1 and None not in presets:
            metadata["label_preset"] = presets.pop()
        self.plot.reset()
        self.log.clear()
        self.progress_bar.setRange(0, config.epochs * config.steps_per_epoch)
        self.progress_bar.setValue(0)
        self.status.setText(f"{len(frames) + randomised} frame(s); starting …")
        self.result = None
        self.steps_done = 0
        worker = train_worker(frames, model_path, config, self.stop_event, init_model, metadata, randomised)
        self.start_worker(
            worker,
            "fine-tuning" if init_model else "training",
            on_yield=self._update,
            on_return=self._finished,
            on_done=self._done,
            total=config.epochs * config.steps_per_epoch,
        )

    def stop(self) -> None:
        """End after the current step; the best checkpoint so far is kept."""
        self.request_stop()
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
            if self.pbar is not None:
                self.pbar.update(1)
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
