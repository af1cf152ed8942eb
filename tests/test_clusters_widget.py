"""The Clusters widget, driven as a user would, on small simulated electron-resolving ADU frames.

Truth comes from the simulator: its class map is the widget's class map, its 8-connected cluster
count is the number of points expected, its gain the one the calibration must find.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari starts Qt

from napari.layers import Points  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from napari_ccdseg.calibrate import read_calibration  # noqa: E402
from napari_ccdseg.catalogue import read_catalogue  # noqa: E402
from napari_ccdseg.classes import BACKGROUND, CLUSTER, labels_layer_kwargs  # noqa: E402
from napari_ccdseg.metrics import cluster_instances  # noqa: E402
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame  # noqa: E402
from napari_ccdseg.widgets.clusters import ClustersWidget  # noqa: E402

TIMEOUT_MS = 60_000
IMAGE = "run7"
TRUTH = "run7 truth"
SKIPPER = dataclasses.replace(
    SIM_PRESETS["damic-m"], rows=128, cols=160, overscan_cols=16, overscan_rows=8, dark_current_e=0.05,
    glitch_rate=0.0,
)
"""A small DAMIC-M-like frame in ADU (gain 6 ADU/e⁻, 0.16 e⁻ noise): its electron peaks resolve."""


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture(scope="module")
def simulated():
    return simulate_frame(SKIPPER, seed=2)


def add_frame(viewer, sim, name: str = IMAGE):
    """The frame and its truth as the Simulate widget adds them."""
    image = viewer.add_image(sim.image, name=name, colormap="gray")
    kwargs = labels_layer_kwargs(f"{name} truth")
    viewer.add_labels(sim.labels.copy(), **kwargs)
    return image


def run(qtbot, widget) -> None:
    assert widget.run_button.isEnabled()
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


@pytest.fixture
def catalogued(qtbot, viewer, simulated, errors):
    """The widget docked and run on the simulated frame with its truth as the class map."""
    add_frame(viewer, simulated)
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.currentText() == IMAGE
    assert widget.class_map.currentText() == TRUTH  # the image's own class map is proposed
    run(qtbot, widget)
    assert errors == []
    return widget


def points(viewer) -> Points:
    layer = viewer.layers[f"{IMAGE} clusters"]
    assert isinstance(layer, Points)
    return layer


def test_run_puts_a_point_on_every_truth_cluster_with_the_catalogue_as_features(catalogued, viewer, simulated):
    layer = points(viewer)
    n_truth = int(cluster_instances(simulated.labels).max())
    assert n_truth > 10
    assert len(layer.data) == n_truth
    table = catalogued.shown.table
    # napari (row, col) = catalogue (y, x); the features are the catalogue, energy included
    np.testing.assert_allclose(layer.data, table[["y", "x"]].to_numpy())
    np.testing.assert_allclose(layer.features["energy_kev"], table["energy_kev"])
    assert (layer.features["npix"].to_numpy() >= 1).all()
    # hovering a ring: the status bar starts with its type, energy and size
    position = layer.data_to_world(layer.data[3])
    row = table.iloc[layer.get_value(position, world=True)]  # the ring on top there
    status = layer.get_status(position, world=True)["coordinates"]
    assert f"particle: {row['particle']}, energy_kev: " in status and f"npix: {row['npix']}," in status
    assert status.index("particle") < status.index("energy_kev") < status.index("npix") < status.index("sigma_x")
    # ... and so does napari's tooltip in the viewer, the clusters layer being the active one
    viewer.cursor.position = position
    viewer.mouse_over_canvas = True
    status, tooltip = viewer._calc_status_from_cursor()
    assert viewer.tooltip.visible and tooltip.startswith(f"particle: {row['particle']}\nenergy_kev: ")
    # the status bar keeps napari's text over a ring (its features), the frame's report elsewhere
    assert f"particle: {row['particle']}, energy_kev: " in status["coordinates"]
    pixels = np.argwhere(simulated.labels == BACKGROUND)[::37]
    distance = np.linalg.norm(pixels[:, None, :] - layer.data[None, :, :], axis=2).min(axis=1)
    far = pixels[distance > 20][0]  # a background pixel far from every ring
    viewer.cursor.position = tuple(viewer.layers[IMAGE].data_to_world(far))
    assert layer.get_value(viewer.cursor.position, world=True) is None
    assert viewer._calc_status_from_cursor()[0].startswith(f"{IMAGE} [{far[0]}, {far[1]}]: ")
    # the calibration is the simulator's gain, stored for other widgets
    calibration = viewer.layers[IMAGE].metadata["calibration"]
    assert calibration["method"] == "peaks"
    assert calibration["gain_adu_per_e"] == pytest.approx(SKIPPER.gain_adu_per_e, rel=0.02)
    # legend: one entry per type present, counts adding up to the clusters
    counts = {particle: int(box.text().split()[-1]) for particle, box in catalogued.legend.boxes.items()}
    assert sum(counts.values()) == n_truth
    assert counts == table["particle"].value_counts().to_dict()
    assert set(table["particle"]) <= {"point", "muon", "electron", "alpha", "trail", "few-electron"}
    # table, spectrum and fit plot are filled
    assert catalogued.model.rowCount() == n_truth
    assert catalogued.spectrum.axes.get_xscale() == "log" and catalogued.spectrum.axes.lines
    assert not catalogued.fit_image.pixmap().isNull()
    assert "ADU/e⁻" in catalogued.calibration_label.text()


def test_selecting_a_row_centres_the_view_on_that_cluster(qtbot, catalogued, viewer):
    widget = catalogued
    energy_column = [name for name, _, _ in widget.model.columns].index("energy_kev")
    widget.table_view.sortByColumn(energy_column, Qt.DescendingOrder)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom_before = camera.zoom
    widget.table_view.setCurrentIndex(widget.model.index(1, 0))  # the second most energetic cluster
    table = widget.shown.table
    cluster = table.sort_values("energy_kev", ascending=False).iloc[1]
    np.testing.assert_allclose(camera.center[-2:], (cluster["y"], cluster["x"]), atol=1e-6)
    assert camera.zoom > zoom_before
    assert points(viewer).selected_data == {int(cluster.name)}


def test_filters_reduce_the_rows_the_points_and_the_spectrum(qtbot, catalogued, viewer):
    widget = catalogued
    table = widget.shown.table
    n = len(table)
    threshold = float(table["energy_kev"].median())
    widget.energy_min.setValue(threshold)
    kept = int((table["energy_kev"] >= widget.energy_min.value()).sum())
    assert 0 < kept < n
    assert widget.model.rowCount() == kept
    assert int(points(viewer).shown.sum()) == kept
    assert f"{kept} clusters shown" in widget.spectrum.axes.get_title()
    # size: only clusters of at least 3 pixels (among those)
    widget.npix_min.setValue(3)
    kept = int(((table["energy_kev"] >= widget.energy_min.value()) & (table["npix"] >= 3)).sum())
    assert widget.model.rowCount() == kept == int(points(viewer).shown.sum())
    # type: unticking the commonest type in the legend hides its clusters
    widget.energy_min.setValue(0.0)
    widget.npix_min.setValue(0)
    commonest = table["particle"].value_counts().idxmax()
    widget.legend.boxes[commonest].setChecked(False)
    kept = int((table["particle"] != commonest).sum())
    assert widget.model.rowCount() == kept == int(points(viewer).shown.sum())
    assert kept < n


def test_export_writes_a_catalogue_that_reads_back_equal(qtbot, catalogued, tmp_path):
    widget = catalogued
    folder = tmp_path / "export"
    widget.export_folder.setText(str(folder))
    qtbot.mouseClick(widget.export_button, Qt.LeftButton)
    table = widget.shown.table
    pd.testing.assert_frame_equal(read_catalogue(folder / "clusters.parquet"), table)
    assert (table["particle"] != "").all()  # every cluster typed: CSV's empty cells are all NaN
    pd.testing.assert_frame_equal(pd.read_csv(folder / "clusters.csv"), table, check_dtype=False, rtol=1e-9)
    [calibration] = read_calibration(folder / "calibration.json")
    assert calibration.gain_adu_per_e == widget.shown.calibration.gain_adu_per_e
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
    # only the shown clusters, when asked
    widget.npix_min.setValue(int(table["npix"].median()) + 1)
    widget.export_shown.setChecked(True)
    qtbot.mouseClick(widget.export_button, Qt.LeftButton)
    assert len(read_catalogue(folder / "clusters.parquet")) == widget.model.rowCount() < len(table)


def test_a_hand_correction_of_the_class_map_changes_the_catalogue(qtbot, catalogued, viewer, simulated):
    widget = catalogued
    before = widget.shown.table.set_index("cluster_id")
    labels = viewer.layers[TRUTH]
    instances = cluster_instances(labels.data)  # the catalogue's cluster_id are these components
    # erase the most energetic cluster, as the eraser would
    erased = before["energy_kev"].idxmax()
    labels.data_setitem(np.nonzero(instances == erased), BACKGROUND)
    instances[instances == erased] = 0
    # join the two closest other clusters with a painted line of cluster pixels
    others = before.drop(index=erased)
    xy = others[["x", "y"]].to_numpy()
    distance = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distance, np.inf)
    i, j = np.unravel_index(np.argmin(distance), distance.shape)
    a, b = others.iloc[i], others.iloc[j]
    rows = np.linspace(a["qmax_y"], b["qmax_y"], 200).round().astype(int)
    cols = np.linspace(a["qmax_x"], b["qmax_x"], 200).round().astype(int)
    labels.data_setitem((rows, cols), CLUSTER)
    run(qtbot, widget)

    after = widget.shown.table.set_index("cluster_id")
    corrected = cluster_instances(labels.data)
    assert len(after) == corrected.max() == len(points(viewer).data) < len(before)
    assert not np.any(np.hypot(after["x"] - before.loc[erased, "x"], after["y"] - before.loc[erased, "y"]) < 0.5)
    # the joined clusters are one row holding their charges plus the painted pixels'
    merged = corrected[int(a["qmax_y"]), int(a["qmax_x"])]
    assert merged == corrected[int(b["qmax_y"]), int(b["qmax_x"])]
    inside = corrected == merged
    members = set(np.unique(instances[inside])) - {0}
    assert len(members) >= 2
    calibration = widget.shown.calibration  # the charge is the electrons less each row's mean dark current
    electrons = calibration.electrons(simulated.image) - calibration.row_dark_e()[:, None]
    painted = float(electrons[inside & (instances == 0)].sum())
    expected = before.loc[sorted(members), "charge_e"].sum() + painted
    assert after.loc[merged, "charge_e"] == pytest.approx(expected, rel=1e-4)
    assert after.loc[merged, "npix"] == int(inside.sum())


def test_a_class_map_of_another_size_is_a_named_error_and_adds_nothing(qtbot, viewer, simulated, errors):
    add_frame(viewer, simulated)
    viewer.add_labels(np.zeros((16, 16), np.uint8), name="small labels")
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.class_map.setCurrentText("small labels")
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert not widget.busy
    assert len(errors) == 1 and "small labels" in errors[0] and "16×16" in errors[0]
    assert f"{IMAGE} clusters" not in viewer.layers


def test_a_frame_without_resolved_peaks_uses_the_gain_given(qtbot, viewer, errors):
    config = dataclasses.replace(SIM_PRESETS["single-sample"], rows=96, cols=96, overscan_cols=16, overscan_rows=4)
    sim = simulate_frame(config, seed=1)
    add_frame(viewer, sim)
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    run(qtbot, widget)  # no gain: the frame does not resolve electrons, nothing is catalogued
    assert len(errors) == 1 and IMAGE in errors[0]
    assert f"{IMAGE} clusters" not in viewer.layers
    widget.gain.setValue(config.gain_adu_per_e)
    run(qtbot, widget)
    assert len(errors) == 1
    calibration = viewer.layers[IMAGE].metadata["calibration"]
    assert calibration["method"] == "given" and calibration["gain_adu_per_e"] == config.gain_adu_per_e
    assert len(points(viewer).data) == int(cluster_instances(sim.labels).max())


def test_the_widget_opens_from_the_plugins_menu(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-ccdseg", "Clusters")
    assert isinstance(widget, ClustersWidget)


def test_stop_ends_the_run_without_a_catalogue(qtbot, viewer, simulated, errors):
    add_frame(viewer, simulated)
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert widget.busy and widget.stop_button.isEnabled()
    qtbot.mouseClick(widget.stop_button, Qt.LeftButton)  # while it calibrates
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    assert "stopped" in widget.status.text()
    assert f"{IMAGE} clusters" not in viewer.layers and "calibration" not in viewer.layers[IMAGE].metadata
    assert errors == [] and widget.run_button.isEnabled()


def test_a_class_map_without_clusters_gives_an_empty_catalogue_and_the_calibration(qtbot, viewer, simulated, errors):
    add_frame(viewer, simulated)
    viewer.layers[TRUTH].data = np.where(simulated.labels == CLUSTER, BACKGROUND, simulated.labels).astype(np.uint8)
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    run(qtbot, widget)
    assert errors == []
    assert len(points(viewer).data) == 0 and widget.model.rowCount() == 0
    assert viewer.layers[IMAGE].metadata["calibration"]["method"] == "peaks"
    assert "0 clusters" in widget.status.text()


def test_points_and_the_view_follow_an_amplifier_placed_in_a_mosaic(qtbot, viewer, simulated, errors):
    image = add_frame(viewer, simulated)
    # an amplifier read out right to left, placed to the right of another one, as the reader does
    cols = simulated.image.shape[1]
    for layer in (image, viewer.layers[TRUTH]):
        layer.scale = (1.0, -1.0)
        layer.translate = (0.0, 2 * cols + 10.0)
    widget = ClustersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    run(qtbot, widget)
    assert errors == []
    layer = points(viewer)
    table = widget.shown.table
    expected = np.array([image.data_to_world(pos) for pos in table[["y", "x"]].to_numpy()])
    np.testing.assert_allclose([layer.data_to_world(pos) for pos in layer.data], expected)
    widget.table_view.setCurrentIndex(widget.model.index(0, 0))
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], expected[widget.model.table_row(0)], atol=1e-6)
