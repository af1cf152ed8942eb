"""Regenerate the Masks screenshots of docs/masks.md from the real viewer, headless.

Run from the repository root (Linux without a display: under Xvfb, as docs/make_screenshots.py
explains):

    xvfb-run -a python docs/make_masks_screenshot.py

It drives the widgets as a user would: simulate one ``skipper`` frame (512 × 512, read noise
0.16 e⁻, dark current 0.01 e⁻/pixel: single electrons resolved) in the Simulate widget, then open
the Masks widget with the frame's truth as class map and press Run. Writes
docs/images/gui-masks.png (the window: frame, mask layer, the widget with toggles, rate table and
comb fit) and gui-masks-widget.png (the widget alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from make_screenshots import OUT, WINDOW, dock, pump, save_viewer, save_widget, wait  # noqa: E402

import napari  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

SEED = 2
DOCK_WIDTH = 520


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-ccdseg", show=True)
    viewer.window.resize(*WINDOW)
    pump(1.0)

    current = dock(viewer, "Simulate")
    sim = current[1]
    sim.preset.setCurrentText("skipper")
    sim.n_frames.setValue(1)
    sim.seed.setValue(SEED)
    sim.run_button.click()
    wait(sim, "simulate")

    current = dock(viewer, "Masks", current)
    masks = current[1]
    viewer.window._qt_window.resizeDocks([current[0]], [DOCK_WIDTH], Qt.Horizontal)
    masks.image.setCurrentText("sim 0")
    masks.class_map.setCurrentText("sim 0 truth")
    masks.run_button.click()
    wait(masks, "mask")
    if masks.shown is None:
        sys.exit("masking failed: see the notification above")
    viewer.layers["sim 0 truth"].visible = False
    save_viewer(viewer, "gui-masks.png", focus="sim 0")
    save_widget(masks, "gui-masks-widget.png")
    r = masks.shown.rates
    print(f"unmasked {r.unmasked_pixels} px, lambda {r.ser_e_per_px:.5f} +- {r.ser_err:.5f} e-/px, sigma {r.noise_e:.3f} e-")
    viewer.close()


if __name__ == "__main__":
    main()
