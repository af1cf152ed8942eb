"""Make docs/images/simulated_frame.png: a simulated frame beside its truth labels in class colours.

Run from the repository root: ``python docs/make_simulation_figure.py``. The frame is the default
("conventional") configuration with a glowing band forced on and a few prescan/overscan columns,
so every class shows; the lower row zooms in on its largest electron track.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from napari_ccdseg.classes import CLASS_COLOURS, CLASS_NAMES, colourise  # noqa: E402
from napari_ccdseg.simulate import SIM_PRESETS, simulate_frame  # noqa: E402

OUT = Path(__file__).parent / "images" / "simulated_frame.png"
SEED = 5
"""A frame with muons, electron tracks, a hot column and hot segments."""
ZOOM_SIZE = 128


def zoom_window(metadata: dict, shape: tuple[int, int]) -> tuple[slice, slice]:
    """A ZOOM_SIZE² window centred on the largest curly electron track, kept inside the frame."""
    biggest = max(metadata["clusters"], key=lambda c: (c["kind"] == "electron", c["pixels"]))
    starts = [
        int(min(max(centre - ZOOM_SIZE / 2, 0), side - ZOOM_SIZE))
        for centre, side in zip((biggest["row"], biggest["col"]), shape)
    ]
    return slice(starts[0], starts[0] + ZOOM_SIZE), slice(starts[1], starts[1] + ZOOM_SIZE)


def main() -> None:
    """Simulate, draw frame (grey −3σ…8σ) and truth, full and zoomed, and save the PNG."""
    config = dataclasses.replace(
        SIM_PRESETS["conventional"], glow_band_probability=1.0, prescan_cols=8, overscan_cols=24
    )
    frame = simulate_frame(config, seed=SEED)
    sigma = config.read_noise_e
    zoom = zoom_window(frame.metadata, frame.image.shape)
    rgb = colourise(frame.labels)
    fig, axes = plt.subplots(2, 2, figsize=(11, 11), constrained_layout=True)
    grey = {"cmap": "gray", "vmin": -3 * sigma, "vmax": 8 * sigma, "interpolation": "nearest"}
    axes[0, 0].imshow(frame.image, **grey)
    shape = f"{config.rows}×{config.total_cols}"
    axes[0, 0].set_title(f"simulated frame {shape} (σ = {sigma} e⁻), grey −3σ…8σ")
    axes[0, 1].imshow(rgb, interpolation="nearest")
    n_clusters = len(frame.metadata["clusters"])
    axes[0, 1].set_title(f"truth labels: {n_clusters} clusters, muon and electron tracks")
    axes[1, 0].imshow(frame.image[zoom], **grey)
    axes[1, 1].imshow(rgb[zoom], interpolation="nearest")
    for ax in axes[1]:
        ax.set_title(f"zoom: rows {zoom[0].start}–{zoom[0].stop}, columns {zoom[1].start}–{zoom[1].stop}")
    for ax in axes[0]:
        corner = (zoom[1].start, zoom[0].start)
        ax.add_patch(Rectangle(corner, ZOOM_SIZE, ZOOM_SIZE, fill=False, color="yellow"))
    handles = [Patch(color=CLASS_COLOURS[i], label=CLASS_NAMES[i]) for i in range(len(CLASS_NAMES))]
    axes[0, 1].legend(handles=handles, loc="lower right", fontsize=8, facecolor="white", framealpha=0.8)
    fig.suptitle("columns: 8 prescan | 512 active (amplifier at row 0, column 8) | 24 overscan")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
