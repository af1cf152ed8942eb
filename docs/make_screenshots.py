"""Regenerate the user guide's screenshots from the real viewer, headless.

Run from the repository root (Linux without a display: under Xvfb):

    xvfb-run -a python docs/make_screenshots.py
    xvfb-run -a python docs/make_screenshots.py multiamp   # only gui-multiamp.png, in about a minute

Qt's ``xcb`` platform is needed, because the ``offscreen`` one renders the OpenGL canvas black; on
Debian/Ubuntu it needs ``apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0
libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0``. The script stops if the canvas is black.

It drives the plugin's widgets exactly as a user would (set values, click, wait for the worker):
simulate 512 × 512 frames, auto-label one, train the small U-Net on three frames' truth on the CPU
(at most 12 minutes, less if early stopping ends it; set CCDSEG_SCREENSHOT_MINUTES for another budget), predict the fourth, unseen frame
and compare it with its truth, then open the prediction for correction. Writes
docs/images/gui-*.png; took 4 minutes on 2 cores (training stopped early after 2.6 minutes).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# napari settings of this run only (default theme and layout), never the user's own.
os.environ["NAPARI_CONFIG"] = str(Path(tempfile.mkdtemp(prefix="ccdseg-napari-")) / "settings.yaml")
# No deprecation toast over the canvas in the pictures.
warnings.filterwarnings("ignore", message=".*PyQt5.*")

import napari  # noqa: E402
import numpy as np  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

OUT = Path(__file__).parent / "images"
PLUGIN = "napari-ccdseg"
SEED = 3
"""Simulation seed: frame 3 of it holds muon and electron tracks, a glowing band and hot pixels."""
TRAIN_MINUTES = float(os.environ.get("CCDSEG_SCREENSHOT_MINUTES", "12"))
WINDOW = (1500, 1100)


def pump(seconds: float = 0.2) -> None:
    """Let Qt draw and deliver queued worker signals."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(widget, what: str, limit_s: float = 900) -> None:
    """Block until the widget's worker is done."""
    start = time.monotonic()
    while widget.busy:
        pump(0.1)
        if time.monotonic() - start > limit_s:
            sys.exit(f"{what}: still running after {limit_s} s")
    pump(0.5)
    print(f"{what}: {time.monotonic() - start:.1f} s", flush=True)


def save_widget(widget, name: str) -> None:
    pump(0.3)
    widget.grab().save(str(OUT / name))
    print("wrote", OUT / name)


def close_toasts(viewer) -> None:
    """Notification toasts (e.g. napari's PyQt5 deprecation notice) would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.hide()


def save_viewer(viewer, name: str, focus: tuple[str, float] | str | None = None) -> None:
    """Screenshot of the whole window; ``focus``: (image layer, zoom) centres on its largest track,
    a layer name fits that layer into the canvas."""
    viewer.window.resize(*WINDOW)
    pump(0.3)
    if isinstance(focus, str):
        fit(viewer, focus)
        pump(0.3)
    elif focus is not None:
        focus_on_track(viewer, *focus)
        pump(0.3)
    close_toasts(viewer)
    pump(0.3)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    if canvas[..., :3].max() == 0:
        sys.exit("the canvas renders black: run under Xvfb with Qt's xcb platform (see the docstring)")
    viewer.screenshot(str(OUT / name), canvas_only=False, flash=False)
    print("wrote", OUT / name)


def dock(viewer, name: str, previous=None):
    """Open a plugin widget from Plugins > CCD segmentation, replacing the previous one."""
    if previous is not None:
        viewer.window.remove_dock_widget(previous[0])
    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    pump(0.3)
    return dock_widget, widget


def simulate_one(preset: str, seed: int):
    """A fresh window holding frame ``sim 0`` (and ``sim 0 truth``) of ``preset``, simulated in the
    Simulate widget as a user would; returns the viewer and the Simulate dock (for :func:`dock` to replace)."""
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-ccdseg", show=True)
    viewer.window.resize(*WINDOW)
    pump(1.0)
    current = dock(viewer, "Simulate")
    sim = current[1]
    sim.preset.setCurrentText(preset)
    sim.n_frames.setValue(1)
    sim.seed.setValue(seed)
    sim.run_button.click()
    wait(sim, "simulate")
    return viewer, current


def run_on_sim(viewer, name: str, previous, width: int, class_map: str, what: str, failed: str):
    """Open widget ``name`` (``width`` px wide) on ``sim 0`` with ``class_map`` as class map, press Run
    and wait; stop the script with ``failed`` when nothing came of it. Returns the widget."""
    current = dock(viewer, name, previous)
    widget = current[1]
    viewer.window._qt_window.resizeDocks([current[0]], [width], Qt.Horizontal)
    widget.image.setCurrentText("sim 0")
    widget.class_map.setCurrentText(class_map)
    widget.run_button.click()
    wait(widget, what)
    if widget.shown is None:
        sys.exit(failed)
    return widget


def show_only(viewer, *names: str) -> None:
    for layer in viewer.layers:
        layer.visible = layer.name in names


def camera_of(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older


def fit(viewer, name: str) -> None:
    """Centre and zoom the camera so that one layer fills the canvas."""
    rows, cols = viewer.layers[name].data.shape[:2]
    canvas = viewer.window._qt_viewer.canvas.native
    camera = camera_of(viewer)
    camera.center = (rows / 2 - 0.5, cols / 2 - 0.5)
    camera.zoom = 0.95 * min(canvas.height() / rows, canvas.width() / cols)


def focus_on_track(viewer, image_name: str, zoom: float) -> None:
    """Centre the camera on the frame's largest electron track (or its largest cluster)."""
    clusters = viewer.layers[image_name].metadata["simulation"]["clusters"]
    biggest = max(clusters, key=lambda c: (c["kind"] == "electron", c["pixels"]))
    rows, cols = viewer.layers[image_name].data.shape[:2]
    canvas = viewer.window._qt_viewer.canvas.native  # keep the view inside the frame
    half_rows, half_cols = canvas.height() / (2 * zoom), canvas.width() / (2 * zoom)
    row = float(np.clip(biggest["row"], half_rows, max(half_rows, rows - half_rows)))
    col = float(np.clip(biggest["col"], half_cols, max(half_cols, cols - half_cols)))
    camera = camera_of(viewer)
    camera.center = (row, col)
    camera.zoom = zoom


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ccdseg-screens-"))
    viewer = napari.Viewer(title="napari-ccdseg", show=True)
    viewer.window.resize(*WINDOW)
    pump(1.0)

    # 1. Simulate four conventional-CCD frames with truth.
    current = dock(viewer, "Simulate")
    sim = current[1]
    sim.n_frames.setValue(4)
    sim.seed.setValue(SEED)
    sim.run_button.click()
    wait(sim, "simulate")
    show_only(viewer, "sim 3", "sim 3 truth")
    viewer.reset_view()
    save_widget(sim, "gui-simulate-widget.png")
    save_viewer(viewer, "gui-simulate.png")

    # 2. Load a dataset folder written by the simulator (the CLI's layout).
    from napari_ccdseg.simulate import SIM_PRESETS, simulate_dataset

    folder = work / "dataset"
    simulate_dataset(folder, 2, dataclasses.replace(SIM_PRESETS["skipper"], rows=256, cols=256), seed=1)
    current = dock(viewer, "Load dataset folder", current)
    loader = current[1]
    loader.folder.setText(str(folder))
    loader.load_button.click()
    wait(loader, "load dataset")
    show_only(viewer, "sim_000", "sim_000 labels")
    save_viewer(viewer, "gui-dataset.png", focus="sim_000")
    for name in ("sim_000", "sim_000 labels", "sim_001", "sim_001 labels"):
        viewer.layers.remove(name)

    # 3. Auto-label frame 0 with the physical preset: live preview, then Apply.
    current = dock(viewer, "Auto-label", current)
    auto = current[1]
    auto.image.setCurrentText("sim 0")
    auto.sigmas["seed_sigma"].setValue(4.5)
    while auto.preview_count == 0 or auto.preview_worker is not None:
        pump(0.1)
    show_only(viewer, "sim 0", "auto-label preview")
    save_viewer(viewer, "gui-autolabel.png", focus=("sim 0", 2.2))
    auto.apply_button.click()
    wait(auto, "auto-label")
    save_widget(auto, "gui-autolabel-widget.png")

    # 4. Train on the truth of frames 0-2; frame 3 stays unseen.
    current = dock(viewer, "Train", current)
    train = current[1]
    train.set_checked(lambda pair: pair[1].endswith(" truth") and pair[0] != "sim 3")
    train.epochs.setValue(200)
    train.steps.setValue(32)
    train.batch_size.setValue(16)
    train.tile_size.setValue(64)
    train.max_minutes.setValue(TRAIN_MINUTES)
    train.device.setCurrentText("cpu")
    train.model_path.setText(str(work / "model.safetensors"))
    train.start_button.click()
    wait(train, "train")
    save_widget(train, "gui-train-widget.png")

    # 5. Predict the unseen frame and compare it with its truth.
    current = dock(viewer, "Predict and correct", current)
    predict = current[1]
    for index in range(predict.images.count()):
        item = predict.images.item(index)
        item.setCheckState(Qt.Checked if item.text() == "sim 3" else Qt.Unchecked)
    predict.predict_button.click()
    wait(predict, "predict")
    show_only(viewer, "sim 3", "sim 3 prediction")
    viewer.layers.selection.active = viewer.layers["sim 3 prediction"]
    save_widget(predict, "gui-predict-widget.png")
    save_viewer(viewer, "gui-prediction.png", focus=("sim 3", 2.2))

    # 6. Correct: the prediction is an ordinary Labels layer; paint a cluster with the brush.
    layer = viewer.layers["sim 3 prediction"]
    layer.mode = "paint"
    layer.selected_label = 3
    layer.brush_size = 4
    save_viewer(viewer, "gui-correct.png", focus=("sim 3", 5.0))

    report = predict.report.toPlainText()
    (OUT / "gui-prediction-report.txt").write_text(report)
    print(report)
    viewer.close()


def multiamp() -> None:
    """gui-multiamp.png: a 4-amplifier readout from ``ccdseg simulate --amplifiers 4``, amplifiers side by
    side, each predicted by the bundled default model, row 0 at the bottom, the View and Predict widgets."""
    from napari_ccdseg.cli import main as ccdseg

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ccdseg-screens-"))
    ccdseg(["simulate", str(work), "--preset", "damic-m", "--format", "fits", "--amplifiers", "4",
            "--n", "1", "--size", "384", "256", "--seed", str(SEED)])
    viewer = napari.Viewer(title="napari-ccdseg", show=True)
    viewer.window.resize(*WINDOW)
    pump(1.0)
    from napari_ccdseg.calibrate import calibrate_frame

    viewer.open(str(work / "sim_000.fits"), plugin=PLUGIN)
    _, view = dock(viewer, "View")
    view.ds9.setChecked(True)
    for layer in viewer.layers:  # each amplifier calibrated from its own comb of electron peaks
        if "ccdseg_hdu" in layer.metadata:
            meta = layer.metadata
            cal = calibrate_frame(layer.data, frame="sim_000.fits", hdu=meta["ccdseg_hdu"],
                                  extname=meta["ccdseg_extname"], header=meta["header"])
            meta["calibration"] = cal.to_dict()
    view.contrast.setCurrentText(view.contrast.itemText(1))  # electrons, 0 ... 5 e-
    view.top_electrons.setValue(5)
    view.apply_contrast()
    _, predict = dock(viewer, "Predict and correct")
    predict.compare.setCurrentText("simulation truth")
    predict.predict_button.click()
    wait(predict, "predict 4 amplifiers")
    for layer in viewer.layers:  # frames, and AMP1 and AMP2's predictions over them
        layer.visible = not layer.name.endswith(" labels") and not layer.name.startswith(("AMP3 · sim_000 p", "AMP4 · sim_000 p"))
        if layer.name.endswith(" prediction"):
            layer.opacity = 0.45
    viewer.layers.selection.active = viewer.layers["AMP2 · sim_000"]
    viewer.reset_view()
    pump(0.5)
    truth = viewer.layers["AMP2 · sim_000 labels"]  # the status bar over one of AMP2's clusters
    row, col = (int(v[len(v) // 2]) for v in np.nonzero(truth.data == 3))
    viewer.cursor.position = tuple(viewer.layers["AMP2 · sim_000"].data_to_world((row, col)))
    close_toasts(viewer)
    save_viewer(viewer, "gui-multiamp.png")
    print(viewer.status)
    viewer.close()


if __name__ == "__main__":
    multiamp() if sys.argv[1:] == ["multiamp"] else main()
