"""Make docs/images/simulated_ccd.png: one simulated DAMIC-M-like CCD readout, amplifier by amplifier.

Run from the repository root: ``python docs/make_ccd_figure.py`` (a few seconds). The CCD is the
``damic-m`` preset read by 4 amplifiers, the fourth dead (no CCD behind it). The top panels show
each amplifier with its own grey scale: its robust pedestal −3σ…+6σ from
``napari_ccdseg.noise.pedestal_noise``. The lower panels zoom in on features picked from the truth
(a serial-register trail, a cluster with a charge-transfer-inefficiency (CTI) tail, a glitch pixel,
few-electron hits; the zooms show e⁻ above each row's pedestal) and plot the CTI tail's profile,
the pedestal drift along the rows (overscan row medians) and the quantisation comb of the pixel
histogram. The script stops with an error if the seed lacks any of these features. The PNG is
saved with a 256-colour palette to keep it small.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from napari_ccdseg.noise import pedestal_noise, row_pedestals  # noqa: E402
from napari_ccdseg.simulate import (  # noqa: E402
    SIM_PRESETS,
    AmplifierLayout,
    SimulatedFrame,
    amplifier_configs,
    frame_seed,
    simulate_ccd,
    simulate_frame,
)

OUT = Path(__file__).parent / "images" / "simulated_ccd.png"
SEED = 0
"""A readout with serial trails, a glitch, few-electron hits and bright point clusters on live amplifiers."""
PRESET = "damic-m"
LAYOUT = AmplifierLayout(amplifiers=4, dead=(3,))
GLITCH_ADU = 1e5
"""Pixels above this (far above any charge) are glitches."""
CTI_MIN_ELECTRONS = 1500
"""A cluster this bright puts enough charge one to three pixels down the CTI tail to see it."""
FEW_WINDOW = 64
COLOURS = {"trail": "tab:orange", "cti": "tab:cyan", "glitch": "tab:red", "few": "lime"}


@dataclass
class Amp:
    """One amplifier's frame, its robust pedestal and noise (ADU) and its true gain."""

    index: int
    frame: SimulatedFrame
    name: str
    dead: bool
    pedestal: float
    sigma: float
    """Robust σ of the whole frame (includes the pedestal drift): sets the grey scale."""
    row_pedestal: np.ndarray
    row_sigma: float
    """Robust σ after subtracting each row's pedestal: the read noise."""
    gain: float

    def electrons(self, window: tuple[slice, slice]) -> np.ndarray:
        """Pixels of ``window`` in e⁻ above their row's pedestal."""
        return (self.frame.image[window] - self.row_pedestal[window[0], None]) / self.gain


@dataclass
class Feature:
    """A zoom window on one amplifier, and the truth it shows."""

    amp: Amp
    window: tuple[slice, slice]
    cluster: dict | None = None
    pixel: tuple[int, int] | None = None
    hits: list[dict] | None = None


def _window(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> tuple[slice, slice]:
    """Slices for [rows) × [cols), clipped to the image."""
    return (
        slice(max(rows[0], 0), min(rows[1], shape[0])),
        slice(max(cols[0], 0), min(cols[1], shape[1])),
    )


def _extent(amp: Amp, cluster: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a cluster's instance pixels."""
    return np.nonzero(amp.frame.instances == cluster["id"])


def _clusters(amps: list[Amp], kind: str) -> list[tuple[Amp, dict]]:
    return [(a, c) for a in amps for c in a.frame.metadata["clusters"] if c["kind"] == kind and c["pixels"] > 0]


def find_trail(amps: list[Amp]) -> Feature:
    """The brightest serial-register trail (kind "trail") that fits a ~120-column window."""
    trails = [(a, c) for a, c in _clusters(amps, "trail") if 15 <= c["pixels"] <= 100]
    if not trails:
        raise SystemExit(f"seed {SEED}: no serial-register trail of 15–100 pixels; pick another SEED")
    amp, trail = max(trails, key=lambda ac: ac[1]["electrons"] / ac[1]["pixels"])
    rows, cols = _extent(amp, trail)
    row = int(np.median(rows))
    window = _window(amp.frame.image.shape, (row - 8, row + 9), (cols.min() - 10, cols.max() + 11))
    return Feature(amp, window, cluster=trail)


def find_cti_cluster(amps: list[Amp]) -> Feature:
    """The brightest point cluster alone in its window, away from the edges: its CTI tail shows."""
    best = None
    for amp, cluster in _clusters(amps, "point"):
        if cluster["electrons"] < CTI_MIN_ELECTRONS:
            continue
        row, col = round(cluster["row"]), round(cluster["col"])
        first, end = amp.frame.metadata["active_cols"]
        if not (8 <= row < amp.frame.metadata["active_rows"][1] - 8 and first + 8 <= col < end - 12):
            continue
        window = _window(amp.frame.image.shape, (row - 6, row + 7), (col - 6, col + 11))
        others = np.setdiff1d(amp.frame.instances[window], [0, cluster["id"]])
        if others.size == 0 and (best is None or cluster["electrons"] > best.cluster["electrons"]):
            best = Feature(amp, window, cluster=cluster)
    if best is None:
        raise SystemExit(f"seed {SEED}: no isolated point cluster of ≥ {CTI_MIN_ELECTRONS} e⁻; pick another SEED")
    return best


def find_glitch(amps: list[Amp]) -> Feature:
    """A glitch pixel (≥ 1e5 ADU; labelled hot pixel in the truth)."""
    for amp in amps:
        rows, cols = np.nonzero(amp.frame.image > GLITCH_ADU)
        if rows.size:
            row, col = int(rows[0]), int(cols[0])
            window = _window(amp.frame.image.shape, (row - 7, row + 8), (col - 7, col + 8))
            return Feature(amp, window, pixel=(row, col))
    raise SystemExit(f"seed {SEED}: no glitch pixel; pick another SEED")


def find_few_electron(amps: list[Amp]) -> Feature:
    """The FEW_WINDOW² window holding the most few-electron hits (kind "few-electron")."""
    best = None
    for amp in amps:
        hits = [c for _, c in _clusters([amp], "few-electron")]
        for hit in hits:
            r0, c0 = int(hit["row"]) - FEW_WINDOW // 2, int(hit["col"]) - FEW_WINDOW // 2
            inside = [
                h for h in hits
                if r0 + 2 <= h["row"] < r0 + FEW_WINDOW - 2 and c0 + 2 <= h["col"] < c0 + FEW_WINDOW - 2
            ]
            if best is None or len(inside) > len(best.hits):
                window = _window(amp.frame.image.shape, (r0, r0 + FEW_WINDOW), (c0, c0 + FEW_WINDOW))
                best = Feature(amp, window, hits=inside)
    if best is None or len(best.hits) < 3:
        raise SystemExit(f"seed {SEED}: fewer than three few-electron hits close together; pick another SEED")
    return best


def _style(ax, colour: str, pixels: bool = True) -> None:
    """Frame in the feature's colour; integer ticks on a pixel zoom."""
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)
    ax.tick_params(labelsize=7)
    if pixels:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _show_zoom(ax, feature: Feature, high_e: float, title: str, colour: str, aspect: str = "equal") -> None:
    """The window in e⁻ above the row pedestal, grey −3σ … high_e."""
    rows, cols = feature.window
    extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)
    amp = feature.amp
    low = -3 * amp.row_sigma / amp.gain
    ax.imshow(amp.electrons(feature.window), extent=extent, aspect=aspect, cmap="gray", vmin=low, vmax=high_e,
              interpolation="nearest")
    ax.set_title(f"{title}\n{amp.name}, grey −3σ … {high_e:g} e⁻ above the row pedestal", fontsize=9)
    _style(ax, colour)


def _mark(axes_by_amp: dict, feature: Feature, colour: str, letter: str) -> None:
    """A box on the amplifier's overview panel around the zoom window, with the zoom's letter."""
    rows, cols = feature.window
    ax = axes_by_amp[feature.amp.name]
    pad = 5
    ax.add_patch(Rectangle((cols.start - pad, rows.start - pad), cols.stop - cols.start + 2 * pad,
                           rows.stop - rows.start + 2 * pad, fill=False, color=colour, lw=1.5))
    ax.text(cols.stop + pad + 3, rows.start - pad, letter, color=colour, fontsize=12, fontweight="bold", va="top")


def cti_panels(zoom_ax, profile_ax, feature: Feature, config) -> None:
    """The CTI cluster on a log grey scale, and its column profile beside the same charge without CTI.

    With ``cti_trail = 0`` the same amplifier config and seed draw the same events and the same
    diffusion (CTI's draws come after them), so the cluster is identical up to CTI.
    """
    amp, cluster = feature.amp, feature.cluster
    rows, cols = feature.window
    extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)
    charge = np.clip(amp.electrons(feature.window), 0.3, None)
    zoom_ax.imshow(charge, extent=extent, cmap="gray", norm=LogNorm(0.3, 1000), interpolation="nearest")
    zoom_ax.set_title(f"(b) {cluster['electrons']} e⁻ cluster, CTI tail →\n{amp.name}, grey log 0.3 … 1000 e⁻",
                      fontsize=9)
    _style(zoom_ax, COLOURS["cti"])
    inst_rows, inst_cols = _extent(amp, cluster)
    tip = (inst_cols.max(), float(np.median(inst_rows)))
    zoom_ax.annotate("tail", xy=tip, xytext=(tip[0] + 3, tip[1] + 4), color=COLOURS["cti"], fontsize=10,
                     fontweight="bold", arrowprops={"arrowstyle": "->", "color": COLOURS["cti"], "lw": 1.5})

    no_cti = dataclasses.replace(amplifier_configs(config, LAYOUT, SEED)[amp.index], cti_trail=0.0)
    clean = simulate_frame(no_cti, frame_seed(SEED, amp.index))
    band = (slice(inst_rows.min(), inst_rows.max() + 1), cols)
    x = np.arange(cols.start, cols.stop) - cluster["col"]
    p = amp.frame.metadata["config"]["cti_trail"]
    curves = (
        (amp.frame.image, amp.row_pedestal, "o-", COLOURS["cti"], f"cti_trail = {p:g}"),
        (clean.image, row_pedestals(clean.image), "s--", "black", "same cluster, no CTI"),
    )
    for image, per_row, style, colour, label in curves:
        profile = ((image[band] - per_row[band[0], None]) / amp.gain).sum(axis=0)
        profile_ax.semilogy(x, np.clip(profile, 0.1, None), style, ms=3, lw=1, label=label, color=colour)
    profile_ax.set_ylim(0.1, 5000)
    profile_ax.set_xlabel("column − cluster centre (→ read later)", fontsize=8)
    profile_ax.set_ylabel(f"e⁻ summed over rows {band[0].start}–{band[0].stop - 1}", fontsize=8)
    profile_ax.set_title("(b) column profile: the charge trails\ntowards later-read columns", fontsize=9)
    profile_ax.legend(fontsize=7, loc="upper right")
    _style(profile_ax, COLOURS["cti"], pixels=False)


def drift_plot(ax, amps: list[Amp]) -> None:
    """Median of each row's overscan columns, minus the amplifier's pedestal, for the live amplifiers."""
    for amp in amps:
        first_overscan = amp.frame.metadata["active_cols"][1]
        ax.plot(np.median(amp.frame.image[:, first_overscan:], axis=1) - amp.pedestal, lw=1, label=amp.name)
    config = amps[0].frame.metadata["config"]
    rms = config["pedestal_drift_e"] * config["gain_adu_per_e"]
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("row (read order)", fontsize=8)
    ax.set_ylabel("overscan median − pedestal (ADU)", fontsize=8)
    ax.set_title(f"(e) pedestal drift along the rows\n(random walk, rms {rms:.1f} ADU)", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    ax.tick_params(labelsize=7)


def comb_plot(ax, amp: Amp) -> None:
    """Histogram of an amplifier's pixels near its pedestal, in bins finer than the quantisation step."""
    step = amp.frame.metadata["config"]["quantisation_step"]
    fine = step / 5
    centre = round(amp.pedestal / fine) * fine
    edges = centre + fine * (np.arange(-40, 41) - 0.5)
    ax.hist(amp.frame.image.ravel(), bins=edges, color="tab:purple", histtype="stepfilled")
    ax.xaxis.set_major_locator(plt.MultipleLocator(1.0))
    ax.set_xlabel(f"{amp.name} pixel value (ADU), bins of {fine:g} ADU", fontsize=8)
    ax.set_ylabel("pixels", fontsize=8)
    ax.set_title(f"(f) histogram near the pedestal: a comb,\nvalues on a {step:g} ADU grid (quantisation)", fontsize=9)
    ax.tick_params(labelsize=7)


def _save_small(fig) -> None:
    """PNG with a 256-colour palette: a third of the RGBA size, no visible change."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    image.save(OUT, optimize=True)


def main() -> None:
    """Simulate the CCD, pick one of each feature from the truth, draw and save the PNG."""
    config = SIM_PRESETS[PRESET]
    frames = simulate_ccd(config, seed=SEED, layout=LAYOUT)
    amps = []
    for index, frame in enumerate(frames):
        pedestal, sigma = pedestal_noise(frame.image)
        per_row = row_pedestals(frame.image)
        row_sigma = pedestal_noise(frame.image - per_row[:, None])[1]
        info, gain = frame.metadata["amplifier"], frame.metadata["config"]["gain_adu_per_e"]
        amps.append(Amp(index, frame, info["name"], info["dead"], pedestal, sigma, per_row, row_sigma, gain))
    live = [a for a in amps if not a.dead]
    trail, cti, glitch, few = find_trail(live), find_cti_cluster(live), find_glitch(live), find_few_electron(live)

    fig = plt.figure(figsize=(14, 14))
    grid = fig.add_gridspec(4, 4, height_ratios=[1.08, 1.08, 1, 1], hspace=0.4, wspace=0.3,
                            left=0.04, right=0.99, top=0.93, bottom=0.04)
    axes_by_amp = {}
    for amp in amps:
        ax = fig.add_subplot(grid[amp.index // 2, 2 * (amp.index % 2) : 2 * (amp.index % 2) + 2])
        ax.imshow(amp.frame.image, cmap="gray", vmin=amp.pedestal - 3 * amp.sigma, vmax=amp.pedestal + 6 * amp.sigma,
                  interpolation="nearest")
        if amp.dead:
            text = f"{amp.name}, dead (no CCD behind it): pedestal {amp.pedestal:.1f} ADU, σ {amp.sigma:.0f} ADU"
        else:
            text = (f"{amp.name}: pedestal {amp.pedestal:.1f} ADU, σ {amp.sigma:.2f} ADU "
                    f"({amp.row_sigma:.2f} ADU = {amp.row_sigma / amp.gain:.2f} e⁻ without the drift)")
        ax.set_title(text, fontsize=10)
        ax.tick_params(labelsize=7)
        axes_by_amp[amp.name] = ax

    ax = fig.add_subplot(grid[2, 0:2])
    cluster = trail.cluster
    _show_zoom(ax, trail, 12, f"(a) serial-register trail: {cluster['pixels']} pixels along row "
               f"{round(cluster['row'])}, {cluster['electrons']} e⁻ (truth: cluster, kind \"trail\")",
               COLOURS["trail"], aspect="auto")
    cti_panels(fig.add_subplot(grid[2, 2]), fig.add_subplot(grid[2, 3]), cti, config)

    ax = fig.add_subplot(grid[3, 0])
    _show_zoom(ax, glitch, 3, "(c) glitch pixel (truth: hot pixel)", COLOURS["glitch"])
    row, col = glitch.pixel
    ax.annotate(f"{glitch.amp.frame.image[row, col]:.2e} ADU", xy=(col, row), xytext=(col - 6.5, row + 5.5),
                color=COLOURS["glitch"], fontsize=10, fontweight="bold",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
                arrowprops={"arrowstyle": "->", "color": COLOURS["glitch"], "lw": 1.5})

    ax = fig.add_subplot(grid[3, 1])
    _show_zoom(ax, few, 4, f"(d) {len(few.hits)} few-electron hits (circled: e⁻)", COLOURS["few"])
    for hit in few.hits:
        ax.add_patch(Circle((hit["col"], hit["row"]), 3, fill=False, color=COLOURS["few"], lw=1.2))
        ax.text(hit["col"] + 3.5, hit["row"] - 2.5, str(hit["electrons"]), color=COLOURS["few"], fontsize=9,
                fontweight="bold")

    drift_plot(fig.add_subplot(grid[3, 2]), live)
    comb_plot(fig.add_subplot(grid[3, 3]), live[0])

    for feature, key, letter in ((trail, "trail", "a"), (cti, "cti", "b"), (glitch, "glitch", "c"), (few, "few", "d")):
        _mark(axes_by_amp, feature, COLOURS[key], letter)
    shape = "×".join(map(str, frames[0].image.shape))
    fig.suptitle(
        f"Simulated {PRESET} CCD (seed {SEED}) read by 4 amplifiers, AMP4 dead. Each image {shape}: columns "
        f"{config.prescan_cols} prescan | {config.cols} active | {config.overscan_cols} overscan, rows "
        f"{config.rows} active | {config.overscan_rows} overscan;\namplifier at the top left, "
        "grey scale of each: its own pedestal −3σ … +6σ (robust median / MAD)",
        fontsize=11,
    )
    _save_small(fig)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
