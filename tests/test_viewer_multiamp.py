"""A simulated 4-amplifier FITS file in a real viewer: laid out, named, predicted, shown in electrons.

Frames are 64 x 96 per amplifier and the model is an untrained 3-level U-Net, so the file stays fast.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari starts Qt; pytest-xvfb gives it a display

from napari.layers import Image, Labels  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QScrollArea  # noqa: E402

from napari_ccdseg import io  # noqa: E402
from napari_ccdseg.classes import CLUSTER  # noqa: E402
from napari_ccdseg.modelfile import save_model  # noqa: E402
from napari_ccdseg.simulate import SIM_PRESETS, AmplifierLayout, simulate_dataset  # noqa: E402
from napari_ccdseg.unet import UNetConfig, build_unet  # noqa: E402
from napari_ccdseg.widgets._common import make_scrollable  # noqa: E402
from napari_ccdseg.widgets._cursor import cursor_report  # noqa: E402
from napari_ccdseg.widgets._layers import placement_of  # noqa: E402
from napari_ccdseg.widgets.predict import PredictWidget  # noqa: E402
from napari_ccdseg.widgets.view import CONTRASTS, ViewWidget, ds9_orientation  # noqa: E402

ROWS, COLS = 64, 96
AMPS = 4
TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))


@pytest.fixture(scope="module")
def ccd_file(tmp_path_factory):
    """One simulated CCD readout: 4 amplifiers in one FITS file, each amplifier's truth beside it."""
    folder = tmp_path_factory.mktemp("ccd")
    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=ROWS, cols=COLS, cluster_rate=3000.0)
    path, = simulate_dataset(folder, 1, config, seed=5, fmt="fits", layout=AmplifierLayout(amplifiers=AMPS))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, build_unet(UNetConfig(widths=(4, 8, 16))), {"normalisation": "sigma"})


@pytest.fixture
def viewer(make_napari_viewer, ccd_file):
    viewer = make_napari_viewer()
    viewer.open(str(ccd_file), plugin="napari-ccdseg")
    return viewer


def images(viewer) -> list[Image]:
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def predict(qtbot, viewer, model) -> PredictWidget:
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.setText(str(model))
    widget.device.setCurrentText("cpu")
    widget.probabilities.setChecked(True)
    qtbot.mouseClick(widget.predict_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    return widget


def test_amplifiers_open_side_by_side_with_distinct_short_names(viewer, ccd_file):
    frames = images(viewer)
    assert [layer.name for layer in frames] == [f"AMP{k} · sim_000" for k in range(1, AMPS + 1)]
    boxes = [layer.extent.world[:, -2:] for layer in frames]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[1, 1] < b[0, 1] or b[1, 1] < a[0, 1], "two amplifiers overlap on screen"
    for layer in frames:  # each frame's truth sits on it
        truth = viewer.layers[f"{layer.name} labels"]
        assert placement_of(truth) == placement_of(layer)
        assert truth.metadata["ccdseg_reference"] == "simulation"
        assert layer.metadata["ccdseg_frame"] == f"sim_000[{layer.metadata['ccdseg_extname']}]"


def test_each_prediction_shares_its_amplifiers_placement_and_has_a_distinct_name(qtbot, viewer, tiny_model):
    widget = predict(qtbot, viewer, tiny_model)
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(set(names))
    for image in [layer for layer in images(viewer) if "probability" not in layer.name]:
        prediction = viewer.layers[f"{image.name} prediction"]
        assert isinstance(prediction, Labels) and prediction.data.shape == (ROWS, COLS)
        assert placement_of(prediction) == placement_of(image)
        for class_name in ("background", "glowing", "hot pixel", "cluster"):
            assert placement_of(viewer.layers[f"{image.name} probability {class_name}"]) == placement_of(image)
    report = widget.report.toPlainText()
    # the default comparison is the simulation's truth (the reader marked the file's labels as such)
    assert report.count("compared with the simulation truth") == AMPS and "REFERENCE" not in report
    assert widget.status.text().startswith(f"{AMPS} frame(s) predicted")


def test_labels_that_are_not_a_simulations_truth_are_compared_only_as_a_reference(qtbot, viewer, tiny_model):
    amp1 = images(viewer)[0]
    reference = viewer.layers[f"{amp1.name} labels"]
    reference.metadata["ccdseg_reference"] = "auto-label"  # as the Auto-label widget marks its labels
    reference.data = np.where(reference.data == 0, 1, reference.data).astype(np.uint8)  # glowing everywhere
    widget = PredictWidget(viewer)
    for index in range(widget.images.count()):
        item = widget.images.item(index)
        item.setCheckState(Qt.Checked if item.text() == amp1.name else Qt.Unchecked)
    widget.model.setText(str(tiny_model))
    widget.device.setCurrentText("cpu")
    qtbot.mouseClick(widget.predict_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert "compared with" not in widget.report.toPlainText()  # the default takes a simulation's truth only
    widget.compare.setCurrentText("reference: X labels")
    qtbot.mouseClick(widget.predict_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    report = widget.report.toPlainText()
    assert f"REFERENCE '{reference.name}'" in report and "not truth" in report
    assert f"warning: {reference.name}: glowing covers" in report
    assert "check:" in widget.status.text()
    assert widget.images.item(0).toolTip().startswith("sim_000[AMP1]")  # the full name in the tooltip


def test_a_failed_prediction_resets_the_status_line_and_the_progress_bar(qtbot, viewer, tmp_path, errors):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    widget = PredictWidget(viewer)
    widget.model.setText(str(broken))
    widget.device.setCurrentText("cpu")
    qtbot.mouseClick(widget.predict_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert errors, "the user was not told"
    assert "predicting" not in widget.status.text() and "failed" in widget.status.text()
    assert widget.progress_bar.value() == widget.progress_bar.minimum() - 1  # QProgressBar.reset(): no progress shown
    assert widget.predict_button.isEnabled()


def test_a_dock_scrolls_instead_of_growing(viewer):
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    scroll = make_scrollable(widget)
    assert isinstance(scroll, QScrollArea) and make_scrollable(widget) is scroll
    assert scroll.widget().isAncestorOf(widget.predict_button)
    assert scroll.minimumSizeHint().height() < scroll.widget().minimumSizeHint().height()


def test_the_status_bar_names_amplifier_adu_electrons_class_and_cluster(viewer, ccd_file):
    amp3 = images(viewer)[2]
    truth = viewer.layers[f"{amp3.name} labels"]
    row, col = (int(v[0]) for v in np.nonzero(truth.data == CLUSTER))
    gain, pedestal = 2.0, float(np.median(amp3.data))
    amp3.metadata["calibration"] = {"gain_adu_per_e": gain, "pedestal_adu": pedestal, "row_pedestal_adu": [pedestal] * ROWS}
    world = np.asarray(amp3.data_to_world((row, col)))
    text = cursor_report(viewer, world)
    adu = float(amp3.data[row, col])
    assert text.startswith(f"{amp3.name} [{row}, {col}]: {adu:.1f} ADU = {(adu - pedestal) / gain:.2f} e⁻")
    instances = np.load(ccd_file.with_name("sim_000_AMP3_instances.npy"))
    assert instances[row, col] > 0 and text.endswith(f"labels: cluster #{instances[row, col]}")  # the simulator's id
    ViewWidget(viewer)  # any of the plugin's widgets puts this report in the status bar
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(world)
    assert viewer._calc_status_from_cursor()[0] == text  # what napari's status thread shows
    viewer.cursor.position = (-50.0, -50.0)
    assert cursor_report(viewer, viewer.cursor.position) is None  # off every frame: napari's own status stays
    assert "ADU" not in str(viewer._calc_status_from_cursor()[0])


def test_view_widget_turns_the_view_only_and_isolates_one_amplifier(viewer):
    widget = ViewWidget(viewer)
    data = [np.array(layer.data) for layer in viewer.layers]
    widget.ds9.setChecked(True)
    assert ds9_orientation(viewer)
    for layer, before in zip(viewer.layers, data):
        np.testing.assert_array_equal(layer.data, before)  # the data keep row 0 first
    widget.ds9.setChecked(False)
    assert not ds9_orientation(viewer)

    amp2 = images(viewer)[1]
    widget.amplifier.setCurrentText(amp2.name)
    shown = [layer.name for layer in viewer.layers if layer.visible]
    assert shown == [amp2.name, f"{amp2.name} labels"]
    # layers added later: one made from the shown frame stays visible, one from another frame is hidden
    other = images(viewer)[0]
    viewer.add_labels(np.zeros(amp2.data.shape, np.uint8), name=f"{amp2.name} prediction")
    viewer.add_labels(np.zeros(other.data.shape, np.uint8), name=f"{other.name} prediction")
    assert viewer.layers[f"{amp2.name} prediction"].visible and not viewer.layers[f"{other.name} prediction"].visible
    widget.amplifier.setCurrentText(widget.amplifier.itemText(0))
    assert all(layer.visible for layer in viewer.layers)


def test_contrast_presets_in_noise_and_electrons(viewer):
    widget = ViewWidget(viewer)
    frames = images(viewer)
    frames[0].metadata["calibration"] = {"gain_adu_per_e": 2.0, "pedestal_adu": 0.0, "row_pedestal_adu": [0.0] * ROWS}
    widget.contrast.setCurrentText(CONTRASTS[1])
    widget.top_electrons.setValue(10)
    assert widget.apply_contrast() == 1
    assert tuple(frames[0].contrast_limits) == pytest.approx((-1.0, 20.0))
    assert "no calibration on" in widget.status.text() and frames[1].name in widget.status.text()
    widget.contrast.setCurrentText(CONTRASTS[2])
    assert widget.apply_contrast() == AMPS
    widget.contrast.setCurrentText(CONTRASTS[0])
    assert widget.apply_contrast() == AMPS
    low, high = frames[1].contrast_limits
    assert low < float(np.median(frames[1].data)) < high


def test_label_maps_saved_from_a_placed_amplifier_keep_its_own_pixels(viewer, tmp_path):
    amp4 = images(viewer)[3]
    truth = viewer.layers[f"{amp4.name} labels"]
    ViewWidget(viewer).ds9.setChecked(True)
    path = tmp_path / "amp4_labels.png"
    viewer.layers.selection = {truth}
    viewer.layers.save(str(path), selected=True, plugin="napari-ccdseg")
    np.testing.assert_array_equal(io.read_label_map(path), truth.data)


def test_fits_can_open_without_the_reader_dialog(make_napari_viewer, ccd_file, monkeypatch):
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    monkeypatch.setattr(type(get_settings()), "_maybe_save", lambda self: None)  # the user's settings file untouched
    with pytest.raises(MultipleReaderError):  # what makes File > Open ask which reader, each time
        viewer.open(str(ccd_file), plugin=None)
    widget = ViewWidget(viewer)
    widget.prefer_button.click()
    assert get_settings().plugins.extension2reader["*.fits"] == "napari-ccdseg"
    viewer.open(str(ccd_file), plugin=None)  # as File > Open: napari takes the saved preference, asks nothing
    assert [layer.name for layer in viewer.layers if isinstance(layer, Image)][0] == "AMP1 · sim_000"


def test_auto_labels_and_a_loaded_folder_sit_on_their_amplifiers(qtbot, make_napari_viewer, viewer, ccd_file):
    from napari_ccdseg.widgets.autolabel import AutolabelWidget
    from napari_ccdseg.widgets.dataset import DatasetWidget

    amp3 = images(viewer)[2]
    widget = AutolabelWidget(viewer)
    widget.live.setChecked(False)
    widget.image.setCurrentText(amp3.name)
    widget.apply()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    labels = viewer.layers[f"{amp3.name} labels"]
    assert placement_of(labels) == placement_of(amp3) != placement_of(images(viewer)[0])
    assert labels.metadata["ccdseg_reference"] == "auto-label"  # no longer the simulation's truth

    other = make_napari_viewer()
    loader = DatasetWidget(other)
    loader.folder.setText(str(ccd_file.parent))
    loader.load()
    qtbot.waitUntil(lambda: not loader.busy, timeout=TIMEOUT_MS)
    for image in images(other):
        assert placement_of(image) == placement_of(viewer.layers[image.name])
        assert placement_of(other.layers[f"{image.name} labels"]) == placement_of(image)


def test_every_widget_lists_the_short_names_with_the_full_name_as_tooltip(viewer):
    from napari_ccdseg.widgets.autolabel import AutolabelWidget
    from napari_ccdseg.widgets.train import TrainWidget

    train = TrainWidget(viewer)
    pairs = [train.pairs.item(i) for i in range(train.pairs.count())]
    assert [item.toolTip() for item in pairs] == [f"sim_000[AMP{k}]" for k in range(1, AMPS + 1)]
    assert len({item.text() for item in pairs}) == AMPS
    autolabel = AutolabelWidget(viewer)
    combo = autolabel.image
    assert [combo.itemText(i) for i in range(combo.count())] == [f"AMP{k} · sim_000" for k in range(1, AMPS + 1)]
    assert combo.itemData(1, Qt.ToolTipRole) == "sim_000[AMP2]"


def test_detsec_mirrors_an_amplifier_and_the_status_bar_gives_detector_pixels(make_napari_viewer, tmp_path):
    from astropy.io import fits

    frame = np.arange(ROWS * COLS, dtype=np.float32).reshape(ROWS, COLS)
    hdus = [fits.PrimaryHDU()]
    for name, detsec in (("AMP_L", "[1:96,1:64]"), ("AMP_R", "[192:97,1:64]")):
        hdu = fits.ImageHDU(frame, name=name)
        hdu.header["DETSEC"] = detsec
        hdus.append(hdu)
    path = tmp_path / "ccd.fits"
    fits.HDUList(hdus).writeto(path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-ccdseg")
    left, right = images(viewer)
    assert tuple(right.scale) == (1.0, -1.0)
    # pixel 0 of the right amplifier is at the far right: the two meet at their last columns
    assert right.data_to_world((0, 0))[1] > right.data_to_world((0, COLS - 1))[1] > left.data_to_world((0, COLS - 1))[1]
    text = cursor_report(viewer, right.data_to_world((5, 0)))
    assert text.startswith("AMP_R · ccd [5, 0] (detector x 192, y 6): ")
