"""Regenerate the user guide's Clusters screenshots from the real viewer, headless.

Run from the repository root (Linux without a display: under Xvfb, as docs/make_screenshots.py
explains):

    xvfb-run -a python docs/make_clusters_screenshot.py

It drives the widgets as a user would: simulate one ``damic-m`` frame (a skipper amplifier in ADU
that resolves single electrons), predict it with the bundled default model, then catalogue it in
the Clusters widget with the prediction as class map, and select the most energetic cluster in the
table. Writes docs/images/gui-clusters.png (the window: frame, cluster rings, the widget with the
table), gui-clusters-spectrum.png and gui-clusters-calibration.png (the widget's other two tabs).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from make_screenshots import dock, run_on_sim, save_viewer, save_widget, simulate_one, wait  # noqa: E402

SEED = 1
"""Simulation seed of the frame shown (any works; this one holds a muon, electron tracks and trails)."""
DOCK_WIDTH = 560


def main() -> None:
    viewer, current = simulate_one("damic-m", SEED)

    current = dock(viewer, "Predict and correct", current)
    predict = current[1]
    predict.compare.setCurrentText("nothing")  # its report is the Predict widget's picture, not this one
    predict.predict_button.click()
    wait(predict, "predict")
    viewer.layers["sim 0 truth"].visible = False

    clusters = run_on_sim(viewer, "Clusters", current, DOCK_WIDTH, "sim 0 prediction", "catalogue",
                          "the catalogue failed: see the notification above")
    viewer.layers["sim 0 prediction"].opacity = 0.35
    energy = [name for name, _, _ in clusters.model.columns].index("energy_kev")
    clusters.table_view.sortByColumn(energy, 1)  # descending
    clusters.table_view.selectRow(0)
    save_viewer(viewer, "gui-clusters.png")
    clusters.tabs.setCurrentIndex(1)
    save_widget(clusters, "gui-clusters-spectrum.png")
    clusters.tabs.setCurrentIndex(2)
    save_widget(clusters, "gui-clusters-calibration.png")
    table = clusters.shown.table
    cal = clusters.shown.calibration
    print(f"{len(table)} clusters; types {table['particle'].value_counts().to_dict()}")
    print(f"gain {cal.gain_adu_per_e:.4f} ± {cal.gain_err:.4f} ADU/e-, noise {cal.noise_e:.3f} e-, "
          f"dark {cal.dark_current_e_per_px:.3f} e-/px ({cal.method})")
    viewer.close()


if __name__ == "__main__":
    main()
