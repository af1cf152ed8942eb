"""Every text rendering of scores: the console's pixel table, the Predict widget's block per frame,
the report's markdown summary and the agreement table.

One module, so a figure is worded, rounded and laid out the same wherever a user reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .classes import CLASS_NAMES

if TYPE_CHECKING:  # annotations only: calibrate imports this module without metrics' scikit-learn
    from .metrics import ClassScores, ClusterScores, Evaluation, FrameScores, PixelScores
    from .scoring import ParticleTally

MAX_FRAME_ROWS = 50
"""Frames listed in a summary; report.json holds them all."""


def percent(value: float | None) -> str:
    """A share as a percentage, or n/a when undefined (no clusters, no labelled pixels)."""
    return "n/a" if value is None else f"{100 * value:.2f} %"


def plus_minus(value: float, error: float, unit: str = "") -> str:
    """``value ± error unit`` rounded to the error's second significant digit; the value alone
    (4 significant digits) when the error is 0 or unknown, ``n/a`` when the value is."""
    suffix = f" {unit}" if unit else ""
    if not math.isfinite(value):
        return "n/a"
    if not (math.isfinite(error) and error > 0):
        return f"{value:.4g}{suffix}"
    digits = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{digits}f} ± {error:.{digits}f}{suffix}"


def _score(value: float | None) -> str:
    """A score in [0, 1] to three decimals, or n/a when undefined."""
    return "n/a" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- console and widget


def pixel_table(pixel: PixelScores, digits: int = 2) -> str:
    """The pixel report laid out exactly as scikit-learn prints it (support as integers)."""
    rows: dict[str, ClassScores] = {**pixel.classes, "macro avg": pixel.macro, "weighted avg": pixel.weighted}
    width = max(len(name) for name in rows)
    columns = ("precision", "recall", "f1-score", "support")
    lines = [" " * width + " " + "".join(f" {column:>9}" for column in columns), ""]
    for name, row in rows.items():
        if name == "macro avg":
            accuracy = f" {pixel.accuracy:>9.{digits}f} {pixel.weighted.support:>9}"
            lines += ["", f"{'accuracy':>{width}} " + " " * 20 + accuracy]
        scores = "".join(f" {value:>9.{digits}f}" for value in (row.precision, row.recall, row.f1))
        lines.append(f"{name:>{width}} {scores} {row.support:>9}")
    return "\n".join(lines) + "\n"


def frame_block(name: str, evaluation: Evaluation) -> str:
    """Monospace text of one frame's scores: pixel table, confusion matrix and cluster counts."""
    clusters = evaluation.clusters
    width = max(len(n) for n in CLASS_NAMES)
    lines = [f"== {name} ==", pixel_table(evaluation.pixel).rstrip(), "", "confusion (rows truth, columns prediction):"]
    lines.append(" " * (width + 1) + "".join(f"{n[:9]:>10}" for n in CLASS_NAMES))
    for class_name, row in zip(CLASS_NAMES, evaluation.pixel.confusion):
        lines.append(f"{class_name:>{width}} " + "".join(f"{v:>10}" for v in row))
    efficiency = "" if clusters.efficiency is None else f", efficiency {clusters.efficiency:.3f}"
    lines += [
        "",
        f"clusters: {clusters.n_found} of {clusters.n_true} found{efficiency}",
        f"          {clusters.n_fake} fake, {clusters.fakes_per_megapixel:.1f} per megapixel",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- markdown


def _pixel_markdown(pixel: PixelScores) -> list[str]:
    lines = ["| class | precision | recall | F1 | support [pixels] |", "|---|---:|---:|---:|---:|"]
    for name, row in {**pixel.classes, "macro avg": pixel.macro, "weighted avg": pixel.weighted}.items():
        lines.append(f"| {name} | {row.precision:.3f} | {row.recall:.3f} | {row.f1:.3f} | {row.support:,} |")
    return lines


def _cluster_markdown(clusters: ClusterScores) -> list[str]:
    return [
        f"- True clusters: {clusters.n_true:,}; found: {clusters.n_found:,}; "
        f"**detection efficiency {percent(clusters.efficiency)}** "
        f"(found = predicted cluster pixels cover ≥ {100 * clusters.coverage:.0f} % of its pixels)",
        f"- Predicted clusters: {clusters.n_predicted:,}; fakes (touching no true cluster): "
        f"{clusters.n_fake:,} = **{clusters.fakes_per_megapixel:.2f} per megapixel** "
        f"over {clusters.megapixels:.2f} MPx",
    ]


def _frames_markdown(frames: list[FrameScores]) -> list[str]:
    lines = ["| frame | accuracy | cluster F1 | true clusters | found | fakes |", "|---|---:|---:|---:|---:|---:|"]
    for frame in frames[:MAX_FRAME_ROWS]:
        lines.append(
            f"| {frame.name} | {percent(frame.accuracy)} | {_score(frame.cluster_f1)} | "
            f"{frame.n_true} | {frame.n_found} | {frame.n_fake} |"
        )
    if len(frames) > MAX_FRAME_ROWS:
        lines.append(f"\n{len(frames) - MAX_FRAME_ROWS} more frames in report.json.")
    return lines


def _comparison_markdown(evaluation: Evaluation) -> list[str]:
    """Headline figures beside those of the baselines (other labels of the same frames), if any."""
    if not evaluation.baselines:
        return []
    lines = [
        "## Comparison",
        "",
        "| labels | pixel accuracy | cluster F1 | detection efficiency | fakes per MPx |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in {"this evaluation": evaluation, **evaluation.baselines}.items():
        lines.append(
            f"| {name} | {percent(result.pixel.accuracy)} | {result.pixel.cluster.f1:.3f} | "
            f"{percent(result.clusters.efficiency)} | {result.clusters.fakes_per_megapixel:.2f} |"
        )
    return [*lines, ""]


def _particles_markdown(particles: ParticleTally) -> list[str]:
    from .particles import format_confusion

    return [
        "## Particle types",
        "",
        f"The clusters of the class maps of {particles.frames} simulated frame(s), typed by the bundled particle "
        "classifier, against the kind of the simulated event holding most of each one's charge (*fragment*: "
        "a minor piece of an event another cluster holds most of; *none*: no event, e.g. noise or a defect).",
        "",
        format_confusion(particles.confusion),
        "",
    ]


def summary_markdown(
    title: str, evaluation: Evaluation, figures: Mapping[str, Path], particles: ParticleTally | None = None
) -> str:
    """The report's summary.md: headline numbers, tables and links to the figures beside it (and the
    particle-type confusion when ``particles`` counted simulated frames)."""
    pixel, clusters, frames = evaluation.pixel, evaluation.clusters, evaluation.frames
    lines = [
        f"# {title}",
        "",
        f"{len(frames)} frame{'s' if len(frames) != 1 else ''}, {pixel.weighted.support:,} labelled pixels. "
        f"Pixel accuracy **{percent(pixel.accuracy)}**, cluster F1 **{pixel.cluster.f1:.3f}**, "
        f"cluster detection efficiency **{percent(clusters.efficiency)}**, "
        f"**{clusters.fakes_per_megapixel:.2f}** fake clusters per megapixel.",
        "",
        *_comparison_markdown(evaluation),
        "## Pixels",
        "",
        *_pixel_markdown(pixel),
        "",
        f"Pixel accuracy: {percent(pixel.accuracy)} (unlabelled truth pixels ignored).",
        "",
        "## Clusters",
        "",
        *_cluster_markdown(clusters),
        "",
        "## Frames",
        "",
        *_frames_markdown(frames),
    ]
    if particles is not None:
        lines += ["", *_particles_markdown(particles)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{caption}]({path.name})\n" for caption, path in figures.items()]
    return "\n".join(lines) + "\n"


def agreement_table(summary: dict) -> str:
    """Markdown table of a ``metrics.agreement_summary``, one row per frame and a total row."""
    lines = [
        "| frame | model | physical | both | only model | only physical | agreement |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in [*summary["frames"], {**summary["total"], "frame": "**total**"}]:
        counts = " | ".join(
            str(row[key]) for key in ("model", "physical", "both", "only_model", "only_physical")
        )
        lines.append(f"| {row['frame']} | {counts} | {100 * row['agreement']:.1f} % |")
    return "\n".join(lines) + "\n"
