"""An evaluation as files a physicist can read, share and put in a talk.

``write_report`` turns a ``metrics.Evaluation`` into report.json, a markdown summary (worded by
:mod:`report_text`) and PNG figures. Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot), so a
headless run or a napari session never gains stray windows or global figures; every file is
written to a temporary name and renamed, so a run killed midway leaves no half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .atomic import atomic_path, atomic_write_json, atomic_write_text
from .classes import BACKGROUND, CLASS_COLOURS, CLASS_NAMES, CLUSTER, N_CLASSES, colourise
from .metrics import ClusterScores, Evaluation
from .noise import display_range
from .report_text import percent, summary_markdown

if TYPE_CHECKING:
    from .scoring import ParticleTally

DPI = 150
_STYLE = {
    "font.size": 13,
    "axes.titlesize": 15,
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.titlesize": 16,
}
_EXAMPLE_SIZE = 512
"""Largest side shown per example panel: small clusters stay visible rather than averaged away."""
_CHARGE_AXIS = {
    "image units": "cluster charge [e⁻ or ADU, image units]",
    "pixels": "cluster size [pixels]",
}


def _save_figure(figure: Figure, path: Path) -> Path:
    """Save a figure as a PNG at talk resolution, atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return Path(path)


def wilson_interval(
    found: np.ndarray, counts: np.ndarray, z: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper 1σ (z = 1) Wilson score bounds of a binomial efficiency per bin.

    Wilson rather than sqrt(ε(1−ε)/n) because the latter collapses to zero width at ε = 0 or 1,
    exactly where a good model's bins sit.
    """
    n = np.maximum(np.asarray(counts, np.float64), 1)
    share = np.asarray(found, np.float64) / n
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2))
    # The interval always contains the measured share; clamp away float rounding at 0 and 1.
    return np.minimum(centre - half, share), np.maximum(centre + half, share)


def _compact(count: int) -> str:
    """Pixel counts as 950, 12.3k, 4.5M: legible inside a confusion-matrix cell."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return str(count)


def _share_text(share: float) -> str:
    """A row share as a percentage that never rounds a few errors to 0 % or 100 %."""
    if 0 < share < 0.001:
        return "<0.1 %"
    if 0.999 < share < 1:
        return ">99.9 %"
    return f"{100 * share:.1f} %"


def plot_confusion(confusion: Sequence[Sequence[int]], path: Path) -> Path:
    """Confusion matrix coloured by share of each truth row; cells give share and pixel count."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(7.5, 6.5), layout="constrained")
        axes = figure.add_subplot()
        image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for row in range(N_CLASSES):
            for col in range(N_CLASSES):
                text = f"{_share_text(shares[row, col])}\n({_compact(int(counts[row, col]))})"
                if totals[row, 0] == 0:
                    text = "no pixels"
                colour = "white" if shares[row, col] > 0.6 else "black"
                axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=12)
        ticks = range(N_CLASSES)
        axes.set_xticks(ticks, CLASS_NAMES)
        axes.set_yticks(ticks, CLASS_NAMES)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title("Pixel confusion matrix (share of each true class)")
        figure.colorbar(image, ax=axes, label="share of true-class pixels")
        return _save_figure(figure, path)


def plot_efficiency(clusters: ClusterScores, path: Path) -> Path | None:
    """Detection efficiency per log charge bin with 1σ Wilson bars, and cluster counts behind it.

    Returns None (no file) when no cluster has a positive charge to place on the axis.
    """
    binned = clusters.efficiency_vs_charge
    edges = np.asarray(binned.bin_edges, np.float64)
    if edges.size < 2:
        return None
    counts = np.asarray(binned.counts)
    found = np.asarray(binned.found)
    filled = counts > 0
    centres = np.sqrt(edges[:-1] * edges[1:])
    low, high = wilson_interval(found, counts)
    efficiency = found / np.maximum(counts, 1)
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8.5, 5.5), layout="constrained")
        axes = figure.add_subplot()
        behind = axes.twinx()
        behind.stairs(
            counts, edges, color="0.6", fill=True, alpha=0.35, label="true clusters per bin"
        )
        behind.set_ylabel("true clusters per bin", color="0.4")
        behind.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_zorder(behind.get_zorder() + 1)
        axes.patch.set_visible(False)
        axes.errorbar(
            centres[filled],
            efficiency[filled],
            xerr=[centres[filled] - edges[:-1][filled], edges[1:][filled] - centres[filled]],
            yerr=[efficiency[filled] - low[filled], high[filled] - efficiency[filled]],
            fmt="o",
            color="tab:red",
            markersize=6,
            capsize=3,
            label="efficiency (1σ Wilson interval)",
        )
        if clusters.efficiency is not None:
            overall = f"all clusters: {percent(clusters.efficiency)}"
            axes.axhline(clusters.efficiency, color="tab:red", linestyle="--", label=overall)
        axes.set_xscale("log")
        axes.set_ylim(-0.04, 1.06)  # markers at 0 % and 100 % stay whole
        axes.set_xlabel(_CHARGE_AXIS[clusters.charge_unit])
        axes.set_ylabel("detection efficiency")
        rule = f"found: ≥ {100 * clusters.coverage:.0f} % of pixels predicted cluster"
        axes.set_title(f"Cluster detection efficiency ({rule})", fontsize=14)
        axes.grid(True, which="both", alpha=0.3)
        handles = axes.get_legend_handles_labels()[0] + behind.get_legend_handles_labels()[0]
        axes.legend(handles=handles, loc="lower right")
        return _save_figure(figure, path)


def _series(history: list[dict], key: str) -> np.ndarray:
    """One history column as floats, NaN where a row lacks it (matplotlib leaves a gap)."""
    values = [row.get(key) for row in history]
    return np.array([np.nan if value is None else float(value) for value in values])


def plot_history(history: list[dict], path: Path) -> Path:
    """Training curves: losses, validation pixel accuracy and validation F1 per class by epoch."""
    epochs = _series(history, "epoch")
    marker = "o" if len(history) <= 40 else None
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(16, 5), layout="constrained")
        loss, accuracy, f1 = figure.subplots(1, 3)
        for key, name in (("train_loss", "training"), ("val_loss", "validation")):
            loss.plot(epochs, _series(history, key), marker=marker, label=name)
        val_loss = _series(history, "val_loss")
        if np.isfinite(val_loss).any():
            best = np.nanargmin(val_loss)
            best_label = f"best (epoch {epochs[best]:g})"
            loss.axvline(epochs[best], color="0.5", linestyle=":", label=best_label)
        loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
        accuracy.plot(
            epochs, 100 * _series(history, "val_accuracy"), marker=marker, color="tab:green"
        )
        accuracy.set(
            xlabel="epoch", ylabel="validation pixel accuracy [%]", title="Pixel accuracy"
        )
        for index, name in enumerate(CLASS_NAMES):
            style = {"linewidth": 3.0} if index == CLUSTER else {"linewidth": 1.5, "alpha": 0.8}
            colour = "0.3" if index == BACKGROUND else CLASS_COLOURS[index]  # black is too heavy
            series = _series(history, f"val_f1_{name}")
            f1.plot(epochs, series, marker=marker, color=colour, label=name, **style)
        f1.set(xlabel="epoch", ylabel="validation F1", title="F1 per class (cluster bold)")
        f1.set_ylim(0, 1.02)
        for axes in (loss, accuracy, f1):
            axes.grid(True, alpha=0.3)
        loss.legend()
        f1.legend(loc="lower right")
        figure.suptitle("Training history")
        return _save_figure(figure, path)


def _focus_window(mask: np.ndarray, size: int) -> tuple[slice, slice]:
    """Rows and columns of the size × size window holding the most cluster pixels.

    Large frames shrunk into a panel would average few-pixel clusters away; a window at full
    resolution where clusters are densest shows what the model does.
    """
    rows, cols = mask.shape
    if rows <= size and cols <= size:
        return slice(0, rows), slice(0, cols)
    height, width = min(rows, size), min(cols, size)
    block = max(1, size // 8)
    padded = np.pad(mask, ((0, -rows % block), (0, -cols % block)))
    blocks = padded.reshape(padded.shape[0] // block, block, -1, block).sum(axis=(1, 3))
    span_r, span_c = max(1, height // block), max(1, width // block)
    integral = np.pad(blocks.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        integral[span_r:, span_c:]
        - integral[:-span_r, span_c:]
        - integral[span_r:, :-span_c]
        + integral[:-span_r, :-span_c]
    )
    best_r, best_c = np.unravel_index(np.argmax(sums), sums.shape)
    top = min(best_r * block, rows - height)
    left = min(best_c * block, cols - width)
    return slice(top, top + height), slice(left, left + width)


def _show_image(axes, image: np.ndarray, extent: tuple, figure: Figure) -> None:
    """A frame with robust contrast (0.5–99.5 percentiles), or a colour rendering as it is."""
    if image.ndim == 3:
        shown = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        axes.imshow(np.clip(shown, 0, 1), interpolation="nearest", extent=extent)
        return
    low, high = display_range(image)
    shown = axes.imshow(
        image, cmap="gray", vmin=low, vmax=high, interpolation="nearest", extent=extent
    )
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02, label="image units")


def _example_row(
    row_axes, name: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray, figure: Figure
) -> None:
    """Image, truth and prediction of one frame, cropped to where its clusters are densest."""
    image, truth, pred = np.asarray(image), np.asarray(truth), np.asarray(pred)
    rows, cols = _focus_window((truth == CLUSTER) | (pred == CLUSTER), _EXAMPLE_SIZE)
    # Frame coordinates on the axes, so a cropped window can be found again in napari.
    extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)
    cropped = (rows.stop - rows.start, cols.stop - cols.start) != truth.shape
    where = f"\nrows {rows.start}–{rows.stop}, columns {cols.start}–{cols.stop}"
    if not cropped:
        where = ""
    left, middle, right = row_axes
    _show_image(left, image[rows, cols], extent, figure)
    left.set_title(f"{name}: image{where}")
    middle.imshow(colourise(truth[rows, cols]), interpolation="nearest", extent=extent)
    middle.set_title("truth")
    right.imshow(colourise(pred[rows, cols]), interpolation="nearest", extent=extent)
    right.set_title("prediction")
    for axes in row_axes:
        axes.set_xlabel("column [pixels]")
        axes.set_ylabel("row [pixels]")


Example = tuple[str, np.ndarray, np.ndarray, np.ndarray]
"""(name, image, truth labels, predicted labels) of one frame shown in the examples figure."""


def plot_examples(examples: Sequence[Example], path: Path) -> Path:
    """One row per (name, image, truth, prediction): the frame and both label maps side by side."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(15, 4.6 * len(examples) + 0.8), layout="constrained")
        grid = figure.subplots(len(examples), 3, squeeze=False)
        for example, row_axes in zip(examples, grid):
            _example_row(row_axes, *example, figure=figure)
        colours = [*(CLASS_COLOURS[i] for i in range(N_CLASSES)), "white"]
        names = [*CLASS_NAMES, "unlabelled"]
        legend = [Patch(facecolor=c, edgecolor="0.5", label=n) for c, n in zip(colours, names)]
        figure.legend(handles=legend, loc="outside lower center", ncols=len(legend))
        return _save_figure(figure, path)


def write_report(
    out_dir: str | os.PathLike,
    evaluation: Evaluation,
    *,
    history: list[dict] | None = None,
    examples: Sequence[Example] = (),
    title: str = "napari-ccdseg report",
    particles: ParticleTally | None = None,
) -> Path:
    """Write report.json, the figures and summary.md (last, so it only links existing files).

    report.json holds ``evaluation.to_json()`` plus "title" and "history". The efficiency figure
    is left out when no cluster has a positive charge, the curves without history, the examples
    without examples. The evaluation's baselines (e.g. a threshold preset) are tabulated beside
    it. ``particles``, tallied on frames with simulator truth, adds the particle-type confusion
    (report.json's "particles", a table in summary.md). Returns the summary's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if particles is not None and particles.confusion is None:
        particles = None  # no frame had simulator truth
    document = {"title": title, **evaluation.to_json(), "history": history or []}
    if particles is not None:
        document["particles"] = particles.to_json()
    atomic_write_json(out / "report.json", document)
    confusion = plot_confusion(evaluation.pixel.confusion, out / "confusion.png")
    figures = {"Confusion matrix": confusion}
    efficiency = plot_efficiency(evaluation.clusters, out / "efficiency.png")
    if efficiency is not None:
        figures["Detection efficiency vs cluster charge"] = efficiency
    if history:
        figures["Training curves"] = plot_history(history, out / "curves.png")
    if examples:
        figures["Image, truth and prediction"] = plot_examples(examples, out / "examples.png")
    return atomic_write_text(out / "summary.md", summary_markdown(title, evaluation, figures, particles))


# ---------------------------------------------------------------- checking without truth


def write_agreement(out: Path, summary: dict, table: str, model: str) -> None:
    """agreement.json (counts and positions) and agreement.md (the table, with its meaning)."""
    document = {"model": model, "against": "physical", **summary}
    atomic_write_json(Path(out) / "agreement.json", document)
    legend = (
        f"# Cluster agreement of {model} with the physical preset\n\n"
        "Counts are 8-connected clusters. *both*: groups of overlapping clusters (a blob over "
        "three clusters of the other map counts once); agreement = both / (both + only model "
        "+ only physical). Per frame, X_agreement.png marks the clusters only one method found.\n\n"
    )
    atomic_write_text(Path(out) / "agreement.md", legend + table)


def plot_disagreement(path: Path, image: np.ndarray, comparison: dict, name: str) -> Path:
    """The frame with circles on clusters only the model found and squares on physical-only ones."""
    from .io import monochrome

    frame = monochrome(image, name)
    rows, cols = frame.shape
    width = 8.0  # inches; the height follows the frame, so wide amplifier images fill the page
    figure = Figure(figsize=(width, min(max(width * rows / cols, 2.5), 12.0) + 1.4), layout="constrained")
    axes = figure.add_subplot()
    low, high = display_range(frame)
    axes.imshow(frame, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    marks = (
        ("only_a_positions", "o", "tab:orange", "only the model"),
        ("only_b_positions", "s", "tab:cyan", "only physical"),
    )
    for key, marker, colour, label in marks:
        rows_cols = np.reshape(comparison[key], (-1, 2))
        axes.scatter(rows_cols[:, 1], rows_cols[:, 0], s=80, marker=marker, facecolors="none",
                     edgecolors=colour, linewidths=1.5, label=f"{label} ({len(rows_cols)})")
    axes.set_title(f"{name}: {comparison['both']} clusters found by both")
    axes.set_xlabel("column [pixels]")
    axes.set_ylabel("row [pixels]")
    figure.legend(loc="outside lower center", ncols=2)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return Path(path)
