"""The Masks widget in a real viewer, on a small simulated electron-resolving ADU frame with its truth."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari starts Qt

from napari.layers import Labels  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_ccdseg.classes import CLUSTER, labels_layer_kwargs  # noqa: E402
from napari_ccdseg.masks import BITS, MASK_BITS  # noqa: E402
from napari_ccdseg.simulate import SimConfig, simulate_frame  # noqa: E402
from napari_ccdseg.widgets.masks import MasksWidget, shown_bits  # noqa: E402

TIMEOUT_MS = 60_000
DARK = 0.02
CONFIG = SimConfig(
    rows=128, cols=192, prescan_cols=4, overscan_cols=16, overscan_rows=4, units="adu", pedestal_adu=-39.0,
    gain_adu_per_e=5.0, read_noise_e=0.15, dark_current_e=DARK, cluster_rate=150.0, amp_glow_e=2.0,
    glow_band_probability=0.0, hot_columns=(1.0, 2.0),
)


@pytest.fixture
def masked(qtbot, make_napari_viewer, errors):
    viewer = make_napari_viewer()
    sim = simulate_frame(CONFIG, seed=1)
    viewer.add_image(sim.image, name="run3", colormap="gray", metadata={"simulation": sim.metadata})
    viewer.add_labels(sim.labels.copy(), **labels_layer_kwargs("run3 truth"))
    widget = MasksWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.currentText() == "run3" and widget.class_map.currentText() == "run3 truth"
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert errors == []
    return viewer, widget, sim


def test_run_shows_the_mask_the_rate_and_the_comb(masked):
    viewer, widget, sim = masked
    layer = viewer.layers["run3 mask"]
    assert isinstance(layer, Labels)
    bits = layer.metadata["ccdseg_mask_bits"]
    assert bits.dtype == np.uint16 and bits.shape == sim.image.shape
    assert ((bits[sim.labels == CLUSTER] & MASK_BITS["cluster"]) > 0).mean() > 0.9
    assert (bits[:, :4] & MASK_BITS["edge"]).all()  # prescan, from the simulation's metadata
    # every masked pixel shows a bit, the first one it carries
    assert ((layer.data > 0) == (bits > 0)).all()
    first = [b.name for b in BITS].index("cluster") + 1
    assert (layer.data[(bits & MASK_BITS["cluster"]) > 0] == first).all()
    rates = widget.shown.rates
    assert abs(rates.ser_e_per_px - DARK) < 4 * rates.ser_err
    values = {widget.table.item(r, 0).text(): widget.table.item(r, 1).text() for r in range(widget.table.rowCount())}
    assert values["unmasked pixels"] == str(int((bits == 0).sum()))
    assert "e⁻/pixel" in values["λ (single-electron rate)"]
    assert widget.plot.axes.get_yscale() == "log" and widget.plot.axes.lines  # the fitted comb
    assert widget.bit_boxes["cluster"].text().endswith(str(int(((bits & 1) > 0).sum())))


def test_unchecking_a_bit_shows_what_lies_under_it(masked, qtbot):
    viewer, widget, _ = masked
    layer = viewer.layers["run3 mask"]
    bits = layer.metadata["ccdseg_mask_bits"]
    widget.bit_boxes["edge"].setChecked(False)
    edge_only = bits == MASK_BITS["edge"]
    assert (layer.data[edge_only] == 0).all()
    assert (layer.data == shown_bits(bits, widget.checked_bits())).all()
    widget.bit_boxes["edge"].setChecked(True)
    assert (layer.data[edge_only] > 0).all()


def test_save_writes_the_mask_and_the_rates(masked, tmp_path):
    import tifffile

    _, widget, _ = masked
    widget.save_folder.setText(str(tmp_path))
    written = widget.save()
    assert {p.name for p in written} == {"run3_mask.tif", "rates.csv", "rates.md"}
    assert (tifffile.imread(tmp_path / "run3_mask.tif") == widget.shown.mask).all()


def test_save_without_a_folder_asks_for_one(masked, tmp_path, monkeypatch):
    from napari_ccdseg.widgets import _common

    _, widget, _ = masked
    answers = iter(["", str(tmp_path)])  # cancelled, then a folder picked
    monkeypatch.setattr(_common.QFileDialog, "getExistingDirectory", lambda *args: next(answers))
    widget.save_folder.setText("")
    assert widget.save() == [] and widget.save_folder.text() == ""
    assert (tmp_path / "rates.csv") in widget.save() and widget.save_folder.text() == str(tmp_path)


def test_a_calibration_stored_on_the_image_is_reused_not_fitted_again(qtbot, make_napari_viewer, errors, monkeypatch):
    from napari_ccdseg import calibrate
    from napari_ccdseg.calibrate import calibrate_frame
    from napari_ccdseg.catalogue import CALIBRATION_EXCLUDED

    viewer = make_napari_viewer()
    sim = simulate_frame(CONFIG, seed=1)
    stored = calibrate_frame(sim.image, exclude=np.isin(sim.labels, CALIBRATION_EXCLUDED))
    viewer.add_image(sim.image, name="run3", metadata={"simulation": sim.metadata, "calibration": stored.to_dict()})
    viewer.add_labels(sim.labels.copy(), **labels_layer_kwargs("run3 truth"))
    fits = []
    monkeypatch.setattr(calibrate, "calibrate_frame", lambda *a, **k: fits.append(1))
    widget = MasksWidget(viewer)
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert errors == [] and fits == []
    assert widget.shown.calibration.gain_adu_per_e == stored.gain_adu_per_e
    assert abs(widget.shown.rates.ser_e_per_px - DARK) < 4 * widget.shown.rates.ser_err
