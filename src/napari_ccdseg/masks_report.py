"""The files of ``ccdseg mask``: mask TIFFs, rates.csv, rates.md and one comb-fit figure per frame.

Separate from :mod:`napari_ccdseg.masks` so that the mask and the rate stay free of file formats
and matplotlib; every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .atomic import atomic_path, atomic_write_text
from .masks import BITS, COUNTED_PEAKS, EXPOSURE_KEYWORDS, READOUT_KEYWORDS, MaskParams, Rates
from .report import DPI, _STYLE

RATE_COLUMNS: tuple[str, ...] = (
    "frame", "hdu", "extname", "unmasked_pixels",
    *(f"pixels_{k}e" for k in range(COUNTED_PEAKS + 1)),
    "ser_e_per_px", "ser_err", "noise_e", "misassigned_fraction",
    "exposure_s", "readout_s", "mean_time_s", "ser_e_per_px_day", "ser_day_err", "fit_valid",
)
"""Columns of rates.csv, in file order (units in docs/masks.md)."""


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """The bitfield as a uint16 TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        tifffile.imwrite(handle, np.asarray(mask, dtype=np.uint16))
    return Path(path)


def rates_csv(results: Sequence[Rates]) -> str:
    """rates.csv text: one line per frame / amplifier, empty cells where a value is unknown."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RATE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        row = result.row()
        writer.writerow({k: "" if row[k] is None or (isinstance(row[k], float) and math.isnan(row[k])) else row[k]
                         for k in RATE_COLUMNS})
    return buffer.getvalue()


def plot_comb_fit(result: Rates, path: str | Path) -> Path | None:
    """Histogram of the unmasked pixels' charge with the fitted comb, the fit's pulls, and λ by band
    of rows; None without a fit."""
    fit = result.fit
    if fit is None:
        return None
    centres = 0.5 * (fit.edges[1:] + fit.edges[:-1])
    expected = fit.expected()
    pulls = (fit.counts - expected) / np.sqrt(np.maximum(expected, 1.0))
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(9, 9), layout="constrained")
        top, middle, bottom = figure.subplots(3, 1, height_ratios=(3, 1, 1.6))
        top.sharex(middle)
        top.stairs(fit.counts, fit.edges, color="black", label="unmasked pixels")
        top.plot(centres, expected, color="tab:red", label="fitted Gauss ⊗ Poisson comb")
        top.set_yscale("log")
        top.set_ylim(bottom=0.5)
        top.set_ylabel(f"pixels per {fit.edges[1] - fit.edges[0]:.3f} e⁻")
        v, e = fit.values, fit.errors
        top.set_title(
            f"{result.frame} (HDU {result.hdu}): λ = {v['lam']:.3g} ± {e['lam']:.2g} e⁻/pixel, "
            f"σ = {v['sigma']:.4f} ± {e['sigma']:.1g} e⁻", fontsize=13,
        )
        top.legend()
        middle.plot(centres, pulls, ".", color="black")
        middle.axhline(0, color="tab:red")
        middle.set_xlabel("pixel charge q = (pixel − row pedestal) / gain [e⁻]")
        middle.set_ylabel("pull")
        rows = np.array([(b["row_start"] + b["row_stop"] - 1) / 2 for b in fit.bands])
        half = np.array([(b["row_stop"] - b["row_start"]) / 2 for b in fit.bands])
        bottom.errorbar(rows, [b["lam"] for b in fit.bands], yerr=[b["err"] for b in fit.bands], xerr=half,
                        fmt="o", color="black", capsize=2)
        bottom.axhline(v["lam"], color="tab:red", label="weighted by unmasked pixels")
        bottom.set_xlabel("row (read-out order)")
        bottom.set_ylabel("λ [e⁻/pixel]")
        bottom.legend(fontsize=10)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _number(value: float | None, err: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if err is None else f"{value:.4g} ± {err:.2g}"


def rates_markdown(
    results: Sequence[Rates], bit_pixels: Sequence[dict[str, int]], *, source: str, params: MaskParams
) -> str:
    """rates.md: what was masked, the rule, and the rate of every frame with its uncertainty."""
    lines = [
        "# Single-electron rate in the unmasked pixels",
        "",
        f"Class maps: {source}. Mask settings: "
        + ", ".join(f"{k} = {v}" for k, v in params.to_dict().items()) + ".",
        "",
        "A pixel of charge q = (pixel − zero-electron pedestal of its row) / gain holds k electrons when "
        "k − 0.5 ≤ q < k + 0.5. λ (`ser_e_per_px`) is not taken from these counts but from a binned "
        "maximum-likelihood fit of the unmasked pixels' charge histogram with the Gauss ⊗ Poisson comb "
        "(one λ per band of rows, σ, zero offset and gain scale shared and free), which also models the "
        "noise tail that the rounding rule counts as one electron: a share Φ(−0.5/σ) of empty pixels "
        "(`misassigned_fraction`). λ is the bands' λ weighted by their unmasked pixels; errors are the "
        "fit's (1σ, Poisson statistics of the pixel counts). Per day: λ · 86400 s / t̄, with "
        "t̄ = exposure + readout · (row + 0.5) / rows averaged over the unmasked pixels; exposure and "
        f"readout come from the options or the header ({' or '.join(EXPOSURE_KEYWORDS)}; "
        f"{' or '.join(READOUT_KEYWORDS)}).",
        "",
        "| frame | HDU | unmasked pixels | " + " | ".join(f"{k} e⁻" for k in range(1, COUNTED_PEAKS + 1))
        + " | λ [e⁻/pixel] | σ [e⁻] | 0→1 misassigned | λ [e⁻/pixel/day] |",
        "|---|---|---|" + "---|" * COUNTED_PEAKS + "---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.frame} | {r.hdu} | {r.unmasked_pixels} | "
            + " | ".join(str(n) for n in r.pixels_by_charge[1:])
            + f" | {_number(r.ser_e_per_px, r.ser_err)} | {r.noise_e:.3f} | {r.misassigned_fraction:.2g} | "
            f"{_number(r.ser_e_per_px_day, r.ser_day_err)} |"
        )
    lines += ["", "Pixels carrying each mask bit (a pixel may carry several):", "",
              "| frame | HDU | " + " | ".join(b.name for b in BITS) + " |",
              "|---|---|" + "---|" * len(BITS)]
    for r, counts in zip(results, bit_pixels):
        lines.append(f"| {r.frame} | {r.hdu} | " + " | ".join(str(counts[b.name]) for b in BITS) + " |")
    lines += ["", "λ by band of rows (dark current grows along the readout):", "",
              "| frame | HDU | rows | unmasked pixels | λ [e⁻/pixel] |", "|---|---|---|---|---|"]
    for r in results:
        for band in r.fit.bands if r.fit is not None else []:
            lines.append(f"| {r.frame} | {r.hdu} | {band['row_start']}–{band['row_stop'] - 1} | "
                         f"{band['unmasked_pixels']} | {_number(band['lam'], band['err'])} |")
    unresolved = [r.frame for r in results if math.isnan(r.ser_e_per_px)]
    if unresolved:
        lines += ["", f"No λ for {', '.join(unresolved)}: the calibration did not resolve single electrons "
                  "(or no pixel is left unmasked); the counts use the given gain."]
    return "\n".join(lines) + "\n"


def write_rates_folder(
    out_dir: str | Path,
    results: Sequence[Rates],
    bit_pixels: Sequence[dict[str, int]],
    *,
    source: str,
    params: MaskParams,
) -> list[Path]:
    """rates.csv and rates.md in ``out_dir``."""
    out = Path(out_dir)
    return [
        atomic_write_text(out / "rates.csv", rates_csv(results)),
        atomic_write_text(out / "rates.md", rates_markdown(results, bit_pixels, source=source, params=params)),
    ]
