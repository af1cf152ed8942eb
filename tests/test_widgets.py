"""The napari widgets, driven as a user would: set values, click, wait for the worker, check layers and files.

Frames are 64 x 64 and training runs a few steps on tiles of 32, so the whole file stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari starts Qt; pytest-xvfb gives it a display

from napari.layers import Image, Labels  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_ccdseg import bundled, io  # noqa: E402
from napari_ccdseg.autolabel import PhysicalParams, label_frame  # noqa: E402
from napari_ccdseg.classes import CLUSTER, GLOWING, napari_color_dict  # noqa: E402
from napari_ccdseg.modelfile import read_metadata, save_model  # noqa: E402
from napari_ccdseg.simulate import SIM_PRESETS, frame_seed, simulate_dataset, simulate_frame  # noqa: E402
from napari_ccdseg.unet import UNetConfig, build_unet  # noqa: E402
from napari_ccdseg.updates import StepUpdate  # noqa: E402
from napari_ccdseg.widgets import AutolabelWidget, DatasetWidget, PredictWidget, SimulateWidget, TrainWidget  # noqa: E402
from napari_ccdseg.widgets.autolabel import PREVIEW_LAYER  # noqa: E402

SIDE = 64
TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def user_data(tmp_path, monkeypatch):
    """Default model and training-set folders go under tmp_path, not the real user folder."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    return tmp_path / "user-data" / "napari-ccdseg"


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def dock(viewer, widget):
    viewer.window.add_dock_widget(widget)
    return widget


def wait(qtbot, widget, timeout: int = TIMEOUT_MS) -> None:
    """Wait until the widget's worker has finished (its buttons are back)."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def click(qtbot, button) -> None:
    assert button.isEnabled(), f"{button.text()} is disabled"
    qtbot.mouseClick(button, Qt.LeftButton)


def simulate(qtbot, viewer, n: int = 2, preset: str = "conventional") -> SimulateWidget:
    widget = dock(viewer, SimulateWidget(viewer))
    widget.preset.setCurrentText(preset)
    widget.ints["rows"].setValue(SIDE)
    widget.ints["cols"].setValue(SIDE)
    widget.n_frames.setValue(n)
    click(qtbot, widget.run_button)
    wait(qtbot, widget)
    return widget


# ---------------------------------------------------------------- menu


def test_every_widget_opens_from_the_plugins_menu(viewer):
    expected = {
        "Simulate": SimulateWidget,
        "Load dataset folder": DatasetWidget,
        "Auto-label": AutolabelWidget,
        "Train": TrainWidget,
        "Predict and correct": PredictWidget,
    }
    for name, cls in expected.items():
        _, widget = viewer.window.add_plugin_dock_widget("napari-ccdseg", name)
        assert isinstance(widget, cls)


# ---------------------------------------------------------------- simulate and load


def test_simulate_adds_frames_and_truth_as_the_cli_would(qtbot, viewer):
    widget = simulate(qtbot, viewer, n=2, preset="skipper")
    assert [layer.name for layer in viewer.layers] == ["sim 0", "sim 0 truth", "sim 1", "sim 1 truth"]
    config = dataclasses.replace(SIM_PRESETS["skipper"], rows=SIDE, cols=SIDE)
    for index in range(2):
        expected = simulate_frame(config, seed=frame_seed(0, index))
        image, truth = viewer.layers[f"sim {index}"], viewer.layers[f"sim {index} truth"]
        assert isinstance(image, Image) and isinstance(truth, Labels)
        np.testing.assert_array_equal(image.data, expected.image)
        np.testing.assert_array_equal(truth.data, expected.labels)
        np.testing.assert_array_equal(truth.metadata["ccdseg_instances"], expected.instances)
        low, high = image.contrast_limits
        assert np.percentile(expected.image, 0.1) <= low < high <= expected.image.max()
        # class colours, background transparent
        assert truth.colormap.map(np.array([0]))[0][3] == 0
        np.testing.assert_allclose(truth.colormap.map(np.array([CLUSTER]))[0], napari_color_dict()[CLUSTER])
    # a second run never overwrites: new names
    click(qtbot, widget.run_button)
    wait(qtbot, widget)
    assert "sim 2" in viewer.layers and "sim 3 truth" in viewer.layers


def test_load_dataset_folder_pairs_frames_with_their_label_maps(qtbot, viewer, tmp_path):
    folder = tmp_path / "data"
    simulate_dataset(folder, 2, dataclasses.replace(SIM_PRESETS["conventional"], rows=SIDE, cols=SIDE))
    widget = dock(viewer, DatasetWidget(viewer))
    widget.folder.setText(str(folder))
    click(qtbot, widget.load_button)
    wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["sim_000", "sim_000 labels", "sim_001", "sim_001 labels"]
    np.testing.assert_array_equal(viewer.layers["sim_001 labels"].data, io.read_label_map(folder / "sim_001_labels.png"))
    assert "2 frame file(s), 2 with a label map" in widget.status.text()


# ---------------------------------------------------------------- auto-label


def test_autolabel_previews_while_typing_and_apply_writes_labels(qtbot, viewer):
    simulate(qtbot, viewer, n=1)
    widget = dock(viewer, AutolabelWidget(viewer))
    widget.image.setCurrentText("sim 0")
    qtbot.waitUntil(lambda: PREVIEW_LAYER in viewer.layers, timeout=TIMEOUT_MS)
    first = widget.preview_count
    for value in (5.0, 5.5, 6.0):  # typed quickly: one debounced preview, not three
        widget.sigmas["seed_sigma"].setValue(value)
    def settled() -> bool:  # nothing running, queued or scheduled: no further preview can come
        return widget.preview_worker is None and not widget.preview_pending and not widget.timer.isActive()

    qtbot.waitUntil(lambda: widget.preview_count > first and settled(), timeout=TIMEOUT_MS)
    assert widget.preview_count == first + 1
    params = dataclasses.replace(PhysicalParams(), seed_sigma=6.0)
    expected = label_frame(viewer.layers["sim 0"].data, "physical", params=params)
    np.testing.assert_array_equal(viewer.layers[PREVIEW_LAYER].data, expected)

    click(qtbot, widget.apply_button)
    wait(qtbot, widget)
    assert PREVIEW_LAYER not in viewer.layers
    labels = viewer.layers["sim 0 labels"]
    np.testing.assert_array_equal(labels.data, expected)
    assert labels.metadata["label_preset"] == "physical"
    percentages = [float(widget.table.item(row, 1).text()) for row in range(4)]
    assert sum(percentages) == pytest.approx(100, abs=0.01)
    assert "Class weights over all 1" in widget.dataset_line.text()

    # a bad combination is explained in the widget, nothing crashes
    widget.sigmas["grow_sigma"].setValue(20.0)
    qtbot.waitUntil(lambda: "grow_sigma" in widget.status.text(), timeout=5_000)


def test_autolabel_seed_v1_on_colour_images_and_apply_to_all(qtbot, viewer):
    rgb = np.zeros((SIDE, SIDE, 3), np.uint8)
    rgb[:, :10] = 100  # glowing band in the original colour rules
    viewer.add_image(rgb, name="png", rgb=True)
    viewer.add_image(rgb.copy(), name="png2", rgb=True)
    widget = dock(viewer, AutolabelWidget(viewer))
    widget.live.setChecked(False)
    widget.preset.setCurrentText("seed-v1")
    widget.unmatched_background.setChecked(True)
    click(qtbot, widget.apply_all_button)
    wait(qtbot, widget)
    for name in ("png labels", "png2 labels"):
        data = viewer.layers[name].data
        assert (data[:, :10] == GLOWING).all() and (data[:, 10:] == 0).all()


def test_apply_to_all_records_the_settings_it_was_started_with(qtbot, viewer, errors):
    simulate(qtbot, viewer, n=2)
    widget = dock(viewer, AutolabelWidget(viewer))
    widget.live.setChecked(False)
    started = widget.params()
    click(qtbot, widget.apply_all_button)
    # Edited before any result reaches the GUI thread (no event is processed in between):
    # grow above seed is invalid, and seed-v1 records no thresholds.
    widget.sigmas["grow_sigma"].setValue(started.seed_sigma + 5)
    widget.preset.setCurrentText("seed-v1")
    wait(qtbot, widget)
    assert not errors
    for name in ("sim 0", "sim 1"):
        labels = viewer.layers[f"{name} labels"]
        assert labels.metadata["label_preset"] == "physical"
        assert labels.metadata["label_params"] == started.to_dict()
        np.testing.assert_array_equal(labels.data, label_frame(viewer.layers[name].data, "physical", params=started))


def test_deleting_the_chosen_layer_leaves_widgets_working(qtbot, viewer, errors):
    simulate(qtbot, viewer, n=1)
    auto = dock(viewer, AutolabelWidget(viewer))
    auto.live.setChecked(False)
    train = dock(viewer, TrainWidget(viewer))
    predict = dock(viewer, PredictWidget(viewer))
    assert auto.image.currentText() == "sim 0"
    assert train.checked_pairs() == [("sim 0", "sim 0 truth")]
    viewer.layers["sim 0"].name = "renamed"
    assert auto.image.currentText() == "renamed" and predict.checked_images() == ["renamed"]
    viewer.layers.remove("renamed")
    viewer.layers.remove("sim 0 truth")
    assert auto.image.layer() is None and train.checked_pairs() == [] and predict.checked_images() == []
    click(qtbot, auto.apply_button)
    click(qtbot, train.start_button)
    assert len(errors) == 2 and "choose an image layer" in errors[0] and "no training data" in errors[1]
    assert auto.apply_button.isEnabled() and train.start_button.isEnabled()


# ---------------------------------------------------------------- errors


def test_a_worker_error_reaches_the_user_and_re_enables_the_button(qtbot, viewer, tmp_path, errors):
    simulate(qtbot, viewer, n=1)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x80\x04 this is a pickle, not a model")
    widget = dock(viewer, PredictWidget(viewer))
    widget.model.setText(str(bad))
    click(qtbot, widget.predict_button)
    assert not widget.predict_button.isEnabled()  # busy while the worker runs
    wait(qtbot, widget)
    assert widget.predict_button.isEnabled() and not widget.stop_button.isEnabled()
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "sim 0 prediction" not in viewer.layers


# ---------------------------------------------------------------- training


def tiny_training(widget: TrainWidget, epochs: int = 1, steps: int = 2) -> None:
    widget.epochs.setValue(epochs)
    widget.steps.setValue(steps)
    widget.batch_size.setValue(2)
    widget.tile_size.setValue(32)
    widget.device.setCurrentText("cpu")


@pytest.fixture
def gated_training(monkeypatch):
    """The core's train() pausing after each step until the test opens ``gate``, so a Stop or a
    close lands after exactly the first step, however fast steps are; ``results`` gets what it returned."""
    from napari_ccdseg import train as core

    gated = SimpleNamespace(gate=threading.Event(), results=[])
    real_train = core.train

    def paused_train(*args, progress, **kwargs):
        def relay(update) -> None:
            progress(update)
            if isinstance(update, StepUpdate):
                gated.gate.wait(TIMEOUT_MS / 1000)

        gated.results.append(real_train(*args, progress=relay, **kwargs))
        return gated.results[-1]

    monkeypatch.setattr(core, "train", paused_train)
    return gated


def start_long_training(qtbot, viewer, model_path) -> TrainWidget:
    """Two simulated frames, a 500-epoch run started and past its first step."""
    simulate(qtbot, viewer, n=2)
    widget = dock(viewer, TrainWidget(viewer))
    tiny_training(widget, epochs=500, steps=5)
    widget.model_path.setText(str(model_path))
    click(qtbot, widget.start_button)
    qtbot.waitUntil(lambda: widget.progress_bar.value() >= 1, timeout=TIMEOUT_MS)
    return widget


def start_on_randomised_frames(qtbot, viewer, model_path, n: int) -> TrainWidget:
    """A Train widget with no pairs and no folder, started on n randomised frames."""
    widget = dock(viewer, TrainWidget(viewer))
    tiny_training(widget)
    widget.model_path.setText(str(model_path))
    widget.randomised.setValue(n)
    click(qtbot, widget.start_button)
    return widget


def test_training_on_randomised_frames_alone(qtbot, viewer, tmp_path, errors):
    """No layers and no folder: the randomised frames are the whole training set."""
    from napari_ccdseg.modelfile import read_metadata

    widget = start_on_randomised_frames(qtbot, viewer, tmp_path / "randomised.safetensors", 3)
    assert widget.status.text() == "3 frame(s); starting …"
    wait(qtbot, widget)
    assert not errors and widget.result is not None
    assert "simulating 3 domain-randomised frame(s)" in widget.log.toPlainText()
    metadata = read_metadata(tmp_path / "randomised.safetensors")
    assert metadata["randomised_frames"] == 3 and metadata["pairs"] == []


def test_stop_while_simulating_randomised_frames_trains_nothing(qtbot, viewer, tmp_path, errors):
    widget = start_on_randomised_frames(qtbot, viewer, tmp_path / "never.safetensors", 500)
    click(qtbot, widget.stop_button)
    wait(qtbot, widget)
    assert not errors and widget.result is None
    assert widget.status.text() == "stopped before training began; no model written"
    assert "nothing trained" in widget.log.toPlainText()
    assert not (tmp_path / "never.safetensors").exists() and widget.start_button.isEnabled()


def test_stop_ends_training_after_the_current_step_and_keeps_the_best_model(qtbot, viewer, tmp_path, gated_training):
    widget = start_long_training(qtbot, viewer, tmp_path / "stopped.safetensors")
    click(qtbot, widget.stop_button)
    gated_training.gate.set()
    wait(qtbot, widget)
    assert widget.result is not None and widget.result.stopped == "cancelled"
    assert len(widget.result.history) == 1 and widget.steps_done == 1  # the step that was running
    assert (tmp_path / "stopped.safetensors").is_file()
    assert widget.device_line.text() == "Training on cpu ({} threads)".format(__import__("torch").get_num_threads())
    assert widget.start_button.isEnabled()


def test_training_reads_its_dataset_folder_in_the_worker(qtbot, viewer, tmp_path, errors, monkeypatch):
    from napari_ccdseg import dataset

    folder, empty = tmp_path / "data", tmp_path / "empty"
    simulate_dataset(folder, 2, dataclasses.replace(SIM_PRESETS["conventional"], rows=SIDE, cols=SIDE))
    empty.mkdir()
    readers, real = [], dataset.load_labelled
    monkeypatch.setattr(dataset, "load_labelled", lambda *a, **k: readers.append(threading.current_thread()) or real(*a, **k))
    widget = dock(viewer, TrainWidget(viewer))
    tiny_training(widget)
    widget.model_path.setText(str(tmp_path / "folder.safetensors"))
    widget.folder.setText(str(folder))
    click(qtbot, widget.start_button)
    wait(qtbot, widget)
    assert not errors and widget.result is not None
    assert len(readers) == 1 and readers[0] is not threading.main_thread()
    assert f"{folder}: 2 labelled frame(s)" in widget.log.toPlainText()
    widget.folder.setText(str(empty))  # nothing to train on: said once, by the worker
    click(qtbot, widget.start_button)
    wait(qtbot, widget)
    assert len(errors) == 1 and str(empty) in errors[0] and widget.start_button.isEnabled()


def enabled_inputs(widget, keep=()) -> list:
    """The widget's enabled buttons, boxes, lists and fields, other than Stop and those inside ``keep``."""
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget

    return [
        child
        for kind in (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget)
        for child in widget.findChildren(kind)
        if child.isEnabled() and child is not widget.stop_button and not any(k.isAncestorOf(child) for k in keep)
    ]


def test_inputs_are_disabled_while_a_run_goes_and_back_when_it_ends_fails_or_stops(
    qtbot, viewer, tmp_path, errors, gated_training
):
    sim = dock(viewer, SimulateWidget(viewer))
    sim.ints["rows"].setValue(SIDE)
    sim.ints["cols"].setValue(SIDE)
    sim.n_frames.setValue(2)
    inputs = enabled_inputs(sim)
    assert {sim.preset, sim.n_frames, sim.seed, sim.prefix, sim.floats["read_noise_e"]} <= set(inputs)
    click(qtbot, sim.run_button)
    assert enabled_inputs(sim) == [] and sim.stop_button.isEnabled()
    wait(qtbot, sim)  # done
    assert enabled_inputs(sim) == inputs and not sim.stop_button.isEnabled()

    auto = dock(viewer, AutolabelWidget(viewer))
    auto.live.setChecked(False)
    inputs = enabled_inputs(auto, keep=[auto.table])  # the statistics table's corner button is no input
    assert {auto.image, auto.preset, auto.sigmas["seed_sigma"], auto.live} <= set(inputs)
    click(qtbot, auto.apply_all_button)
    assert enabled_inputs(auto, keep=[auto.table]) == []
    click(qtbot, auto.stop_button)
    wait(qtbot, auto)  # stopped
    assert enabled_inputs(auto, keep=[auto.table]) == inputs

    predict = dock(viewer, PredictWidget(viewer))
    (tmp_path / "broken.safetensors").write_bytes(b"not a model")
    predict.model.setText(str(tmp_path / "broken.safetensors"))
    corrections = predict.correct_layer.parentWidget()  # usable while a prediction runs
    inputs = enabled_inputs(predict, keep=[corrections])
    assert {predict.model.edit, predict.device, predict.images, predict.compare, predict.probabilities} <= set(inputs)
    click(qtbot, predict.predict_button)
    assert enabled_inputs(predict, keep=[corrections]) == [] and predict.add_button.isEnabled()
    wait(qtbot, predict)  # failed
    assert len(errors) == 1 and enabled_inputs(predict, keep=[corrections]) == inputs

    train = dock(viewer, TrainWidget(viewer))
    tiny_training(train, epochs=500, steps=5)
    train.model_path.setText(str(tmp_path / "stopped.safetensors"))
    inputs = enabled_inputs(train)
    assert {train.pairs, train.folder.edit, train.epochs, train.device, train.model_path.edit} <= set(inputs)
    click(qtbot, train.start_button)
    qtbot.waitUntil(lambda: train.progress_bar.value() >= 1, timeout=TIMEOUT_MS)  # paused after its first step
    assert enabled_inputs(train) == []
    click(qtbot, train.stop_button)
    gated_training.gate.set()
    wait(qtbot, train)  # stopped
    assert enabled_inputs(train) == inputs


def test_training_on_seed_v1_labels_turns_tiles_and_on_ccd_labels_keeps_the_axes(viewer):
    """Labels from the seed-v1 preset (the original project's PNGs, alike rows and columns) train with
    turned tiles; labels from the physical preset, of CCD frames, keep rows and columns apart."""
    frame = simulate_frame(dataclasses.replace(SIM_PRESETS["conventional"], rows=SIDE, cols=SIDE), seed=1)
    viewer.add_image(frame.image, name="img")
    labels = viewer.add_labels(frame.labels, name="img labels", metadata={"label_preset": "seed-v1"})
    train = dock(viewer, TrainWidget(viewer))
    assert train.checked_pairs() == [("img", "img labels")]
    settings = train.settings()
    assert settings.config.keep_readout_axes is False and settings.metadata["label_preset"] == "seed-v1"
    labels.metadata["label_preset"] = "physical"
    assert train.settings().config.keep_readout_axes is True


def test_the_whole_loop_simulate_label_train_predict_correct_fine_tune(qtbot, viewer, tmp_path, user_data):
    # simulate three frames with truth
    simulate(qtbot, viewer, n=3)
    # auto-label every frame
    auto = dock(viewer, AutolabelWidget(viewer))
    auto.live.setChecked(False)
    click(qtbot, auto.apply_all_button)
    wait(qtbot, auto)
    assert all(f"sim {i} labels" in viewer.layers for i in range(3))

    # train one short epoch on the auto-labels (preferred over the truth by default)
    train = dock(viewer, TrainWidget(viewer))
    assert train.checked_pairs() == [(f"sim {i}", f"sim {i} labels") for i in range(3)]
    tiny_training(train)
    click(qtbot, train.start_button)
    wait(qtbot, train)
    model = train.result.model_path
    assert model.is_file() and model.parent == user_data / "models"
    assert len(train.plot.rows) == 1 and "val_f1_cluster" in train.plot.rows[0]
    meta = read_metadata(model)
    assert meta["label_preset"] == "physical" and meta["training"]["tile_size"] == 32
    assert train.model_path.text() != str(model)  # the next run will not overwrite it

    # predict with the model just trained, compared with the truth
    predict = dock(viewer, PredictWidget(viewer))
    assert predict.model.text() == str(model)
    predict.probabilities.setChecked(True)
    click(qtbot, predict.predict_button)
    wait(qtbot, predict)
    for i in range(3):
        layer = viewer.layers[f"sim {i} prediction"]
        assert isinstance(layer, Labels) and layer.data.shape == (SIDE, SIDE)
        assert layer.metadata["ccdseg_model"] == str(model)
    probability = viewer.layers["sim 0 probability cluster"].data
    assert probability.shape == (SIDE, SIDE) and 0 <= probability.min() and probability.max() <= 1
    report = predict.report.toPlainText()
    assert "== sim 0 ==" in report and "f1-score" in report and "efficiency" in report and "confusion" in report

    # correct the prediction: paint a cluster with the brush, erase a square
    corrected = viewer.layers["sim 0 prediction"]
    corrected.selected_label = CLUSTER
    corrected.paint((10, 10), CLUSTER)
    corrected.data[40:44, 40:44] = 0
    corrected.refresh()
    assert corrected.data[10, 10] == CLUSTER

    # save through the plugin's writer and add to the training set
    predict.correct_layer.setCurrentText("sim 0 prediction")
    written = predict.save_labels(tmp_path / "sim0_labels.png")
    np.testing.assert_array_equal(io.read_label_map(written[0]), corrected.data)
    predict.add_button.click()
    folder = user_data / "training-set"
    np.testing.assert_array_equal(io.read_label_map(folder / "sim_0_labels.png"), corrected.data)
    np.testing.assert_array_equal(np.load(folder / "sim_0.npy"), viewer.layers["sim 0"].data)
    assert train.folder.text() == str(folder)

    # fine-tune on the corrections, starting from the model that made them
    click(qtbot, train.finetune_button)
    wait(qtbot, train)
    assert train.checked_pairs() == [(f"sim {i}", f"sim {i} prediction") for i in range(3)]
    tuned = train.result.model_path
    assert tuned != model and tuned.is_file() and model.is_file()
    assert any("fine-tuning" in line for line in train.log.toPlainText().splitlines())
    assert read_metadata(tuned)["pairs"][0] == ["sim 0", "sim 0 prediction"]
    assert predict.model.text() == str(tuned)


def test_closing_the_viewer_during_training_stops_it_and_keeps_the_model(qtbot, viewer, tmp_path, gated_training):
    widget = start_long_training(qtbot, viewer, tmp_path / "closed.safetensors")
    stop = widget.stop_event
    viewer.close()
    qtbot.waitUntil(stop.is_set, timeout=TIMEOUT_MS)
    gated_training.gate.set()
    qtbot.waitUntil(lambda: len(gated_training.results) == 1, timeout=TIMEOUT_MS)
    result = gated_training.results[0]
    assert result.stopped == "cancelled" and len(result.history) == 1
    assert (tmp_path / "closed.safetensors").is_file()


# ---------------------------------------------------------------- bundled default model


def test_an_empty_model_field_predicts_with_the_bundled_default_model(qtbot, viewer, tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    tiny = build_unet(UNetConfig(widths=(4, 8, 16)))
    default = save_model(folder / "default.safetensors", tiny, {"normalisation": "sigma"})
    monkeypatch.setattr(bundled, "BUNDLED_DIR", folder)
    simulate(qtbot, viewer, n=1)
    widget = dock(viewer, PredictWidget(viewer))
    assert widget.model.text() == "" and widget.model.edit.placeholderText() == "bundled default model"
    widget.device.setCurrentText("cpu")
    click(qtbot, widget.predict_button)
    wait(qtbot, widget)
    layer = viewer.layers["sim 0 prediction"]
    assert isinstance(layer, Labels) and layer.data.shape == (SIDE, SIDE)
    assert layer.metadata["ccdseg_model"] == str(default)


def test_predict_uses_the_calibration_made_in_the_viewer(qtbot, viewer, tmp_path):
    """The image layer's calibration (Clusters or View widget) sets the electron scale of the
    decision rule's zero-electron veto: one saying 3× the gain vetoes the one-electron pixels."""
    from napari_ccdseg.calibrate import calibrate_frame

    config = dataclasses.replace(SIM_PRESETS["skipper"], rows=160, cols=160)
    sim = simulate_frame(config, seed=6)
    torch.manual_seed(0)
    tiny = build_unet(UNetConfig(widths=(4, 8, 16)))
    rule = {"logit_offsets": [0.0, 0.0, 0.0, 60.0], "zero_electron_veto": True}  # every pixel cluster, bar the veto
    model = save_model(tmp_path / "m.safetensors", tiny, {"normalisation": "sigma", "decision": rule})
    own = calibrate_frame(sim.image, frame="skipper")
    assert own.resolves_electrons
    tripled = dataclasses.replace(own, gain_adu_per_e=3 * own.gain_adu_per_e)
    viewer.add_image(sim.image, name="skipper", metadata={"calibration": tripled.to_dict()})
    widget = dock(viewer, PredictWidget(viewer))
    widget.model.setText(str(model))
    widget.device.setCurrentText("cpu")
    click(qtbot, widget.predict_button)
    wait(qtbot, widget)
    electrons = (sim.image - own.row_pedestal_adu[:, None]) / own.gain_adu_per_e
    one_electron = np.abs(electrons - 1) < 0.3
    labels = viewer.layers["skipper prediction"].data
    assert one_electron.sum() > 100 and not (labels[one_electron] == CLUSTER).any()
    bright = electrons > 3.5  # > 3 × 1 e⁻ plus noise: not vetoed
    assert np.mean(labels[bright] == CLUSTER) > 0.9


def test_predict_grows_the_default_models_halos_on_an_electron_counting_frame(qtbot, viewer):
    """The bundled model's rule grows cluster halos on a damic-m frame: the widget's labels are the
    core's with them, not without them."""
    from napari_ccdseg.modelfile import load_model
    from napari_ccdseg.predict import predict_frame

    sim = simulate_frame(SIM_PRESETS["damic-m"], seed=4)
    viewer.add_image(sim.image, name="damic")
    widget = dock(viewer, PredictWidget(viewer))
    widget.device.setCurrentText("cpu")
    click(qtbot, widget.predict_button)
    wait(qtbot, widget)
    labels = viewer.layers["damic prediction"].data
    model, meta = load_model(bundled.resolve_model(bundled.DEFAULT_MODEL))
    np.testing.assert_array_equal(labels, predict_frame(model, meta, sim.image).labels)
    without = predict_frame(model, meta, sim.image, halo_posterior=None).labels
    assert (labels == CLUSTER).sum() > (without == CLUSTER).sum()


def test_without_a_bundled_model_an_empty_model_field_says_to_choose_or_train_one(
    qtbot, viewer, tmp_path, monkeypatch, errors
):
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)  # no model file in it
    simulate(qtbot, viewer, n=1)
    widget = dock(viewer, PredictWidget(viewer))
    assert "choose a file or train one" in widget.model.edit.placeholderText()
    click(qtbot, widget.predict_button)
    assert len(errors) == 1 and "choose a model file (or train one first)" in errors[0]
    assert not widget.busy and widget.predict_button.isEnabled()
    assert "sim 0 prediction" not in viewer.layers


def test_worker_updates_are_handled_in_order_when_handling_one_delivers_the_next(viewer):
    from napari_ccdseg.widgets._common import WorkerWidget

    widget, seen = WorkerWidget(viewer), []

    def handle(update) -> None:
        seen.append(("start", update))
        if update == 1:
            widget._handle_in_order(2)  # as when adding update 1's layer processes the queued update 2
        seen.append(("end", update))

    widget._on_yield = handle
    widget._handle_in_order(1)
    assert seen == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
