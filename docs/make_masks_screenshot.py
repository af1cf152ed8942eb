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

from make_screenshots import run_on_sim, save_viewer, save_widget, simulate_one  # noqa: E402

SEED = 2
DOCK_WIDTH = 520


def main() -> None:
    viewer, current = simulate_one("skipper", SEED)
    masks = run_on_sim(viewer, "Masks", current, DOCK_WIDTH, "sim 0 truth", "mask",
                       "masking failed: see the notification above")
    viewer.layers["sim 0 truth"].visible = False
    save_viewer(viewer, "gui-masks.png", focus="sim 0")
    save_widget(masks, "gui-masks-widget.png")
    r = masks.shown.rates
    print(f"unmasked {r.unmasked_pixels} px, lambda {r.ser_e_per_px:.5f} +- {r.ser_err:.5f} e-/px, sigma {r.noise_e:.3f} e-")
    viewer.close()


if __name__ == "__main__":
    main()
