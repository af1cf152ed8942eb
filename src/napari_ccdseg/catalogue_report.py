"""The catalogue as a physicist first looks at it: the energy spectrum and a one-page summary.

``plot_spectrum`` draws dN/dE on log axes with 68 % Garwood (exact Poisson) intervals, one series
per particle type once ``particle`` is filled; ``summary_markdown`` gives the clusters per
amplifier and per megapixel beside each amplifier's calibration with its uncertainties and method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import chi2

from .report import _STYLE, _save_figure
from .report_text import plus_minus

if TYPE_CHECKING:
    from .calibrate import Calibration

BINS_PER_DECADE = 8
UNCLASSIFIED = "unclassified"
_ONE_SIGMA = 0.6826894921370859
"""Probability inside ±1σ of a Gaussian: the coverage of the Poisson error bars."""


def garwood_interval(counts: np.ndarray, coverage: float = _ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Central Poisson confidence interval (Garwood) of observed counts: exact where √N fails, at
    small N (a bin with 1 count has 0.17–3.3, not 0–2)."""
    counts = np.asarray(counts, np.float64)
    alpha = 1.0 - coverage
    low = np.where(counts > 0, chi2.ppf(alpha / 2, 2 * counts) / 2, 0.0)
    high = chi2.ppf(1 - alpha / 2, 2 * (counts + 1)) / 2
    return low, high


def energy_bin_edges(energies_kev: np.ndarray) -> np.ndarray:
    """Log-spaced edges, BINS_PER_DECADE per decade, covering the positive energies (empty if none)."""
    positive = np.asarray(energies_kev, np.float64)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if positive.size == 0:
        return np.empty(0)
    low = math.floor(math.log10(positive.min()) * BINS_PER_DECADE) / BINS_PER_DECADE
    high = math.ceil(math.log10(positive.max()) * BINS_PER_DECADE) / BINS_PER_DECADE
    high = max(high, low + 1 / BINS_PER_DECADE)
    return 10 ** np.linspace(low, high, round((high - low) * BINS_PER_DECADE) + 1)


def _groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per particle type, unclassified rows last; one group when nothing is typed."""
    particle = table["particle"].fillna("").astype(str)
    if not (particle != "").any():
        return [("all clusters", table)]
    groups = [(name, table[particle == name]) for name in sorted(set(particle) - {""})]
    if (particle == "").any():
        groups.append((UNCLASSIFIED, table[particle == ""]))
    return groups


def plot_spectrum(
    table: pd.DataFrame, path: str | Path, *, ev_per_e: float = 3.75, title: str = "Cluster energy spectrum"
) -> Path:
    """dN/dE (clusters per keV) against energy on log axes, with 68 % Poisson intervals per bin;
    the top axis gives the charge in electrons (``ev_per_e`` eV each) for few-electron work.

    Clusters with energy ≤ 0 (noise fluctuations caught in a class map) cannot sit on a log axis:
    the legend counts them. Empty bins are not drawn.
    """
    energies = table["energy_kev"].to_numpy(np.float64)
    edges = energy_bin_edges(energies)
    n_nonpositive = int(np.sum(~(energies > 0)))
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(8.5, 5.5), layout="constrained")
        axes = figure.add_subplot()
        if edges.size:
            widths = np.diff(edges)
            centres = np.sqrt(edges[:-1] * edges[1:])
            for label, rows in _groups(table):
                counts, _ = np.histogram(rows["energy_kev"].to_numpy(np.float64), edges)
                low, high = garwood_interval(counts)
                shown = counts > 0
                density = counts / widths
                axes.errorbar(
                    centres[shown], density[shown],
                    xerr=[centres[shown] - edges[:-1][shown], edges[1:][shown] - centres[shown]],
                    yerr=[(counts - low)[shown] / widths[shown], (high - counts)[shown] / widths[shown]],
                    fmt="o", markersize=4, capsize=2, label=f"{label} ({int(counts.sum())})",
                )
            axes.set_xscale("log")
            axes.set_yscale("log")
            to_electrons = 1000.0 / ev_per_e
            top = axes.secondary_xaxis("top", functions=(lambda e: e * to_electrons, lambda q: q / to_electrons))
            top.set_xlabel("charge [e⁻]")
            axes.legend(title="68 % Poisson intervals", loc="best")
        else:
            axes.text(0.5, 0.5, "no cluster with positive energy", ha="center", va="center", transform=axes.transAxes)
        if n_nonpositive:
            axes.annotate(
                f"{n_nonpositive} cluster(s) with energy ≤ 0 not shown", (0.01, 0.01),
                xycoords="axes fraction", fontsize=11, color="0.4",
            )
        axes.set_xlabel("cluster energy [keV]")
        axes.set_ylabel("dN/dE [clusters / keV]")
        axes.set_title(f"{title} ({len(table)} clusters)")
        axes.grid(True, which="both", alpha=0.3)
        return _save_figure(figure, Path(path))


def summary_markdown(
    table: pd.DataFrame,
    calibrations: Sequence[Calibration],
    pixels: Sequence[int],
    *,
    source: str,
    ev_per_e: float,
) -> str:
    """Markdown: what was catalogued and how, then one row per amplifier (``pixels``: its image size)."""
    counts = table.groupby(["frame", "hdu"]).size() if len(table) else pd.Series(dtype=np.int64)
    lines = [
        "# Cluster catalogue",
        "",
        f"- class maps: {source}; clusters: 8-connected cluster-class pixels",
        f"- energy = charge × {ev_per_e:g} eV per electron; {len(table)} clusters in {len(calibrations)} amplifier image(s)",
        "- files: clusters.csv, clusters.parquet (one row per cluster), <stem>_clusters.tif (instance maps, "
        "values = cluster_id), calibration.json, spectrum.png",
        "",
        "| frame | HDU | EXTNAME | MPix | clusters | per MPix | gain [ADU/e⁻] | noise [e⁻] | dark λ [e⁻/px] "
        "| pedestal [ADU] | method |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cal, n_pixels in zip(calibrations, pixels):
        found = int(counts.get((cal.frame, cal.hdu), 0))
        mpix = n_pixels / 1e6
        lines.append(
            f"| {cal.frame} | {cal.hdu} | {cal.extname or ''} | {mpix:.3g} | {found} | {found / mpix:.4g} "
            f"| {plus_minus(cal.gain_adu_per_e, cal.gain_err)} | {plus_minus(cal.noise_e, cal.noise_err)} "
            f"| {plus_minus(cal.dark_current_e_per_px, cal.dark_err)} "
            f"| {plus_minus(cal.pedestal_adu, cal.pedestal_err)} | {cal.method} |"
        )
    empty = [f"{cal.frame} (HDU {cal.hdu})" for cal in calibrations if (cal.frame, cal.hdu) not in counts.index]
    if empty:
        lines += ["", f"No cluster pixel in the class map of: {', '.join(empty)}."]
    if len(table):
        energy = table["energy_kev"]
        lines += [
            "",
            f"Energies: median {energy.median():.4g} keV, range {energy.min():.4g} to {energy.max():.4g} keV; "
            f"{int((energy <= 0).sum())} cluster(s) with charge ≤ 0.",
        ]
    lines += [
        "",
        "Errors are 1σ statistical errors of the calibration fit (0 or absent when the gain was given, "
        "read from a header or a file). The per-MPix rate counts the whole image as read, overscan included.",
        "",
    ]
    return "\n".join(lines)

