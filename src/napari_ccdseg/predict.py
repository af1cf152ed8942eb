"""Tiled prediction of frames of any size in bounded memory.

The frame is cut into overlapping tiles, processed one row of tiles at a time (batched), and
the logits are blended with weights that fall off towards tile edges, so no seam shows.
Only a strip one tile high is kept in memory (plus the output), which bounds memory on
6144 x 6144 frames; per-class probabilities are returned only on request.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .atomic import atomic_path
from .calibrate import Calibration
from .decision import (
    DecisionRule, decide, decide_with_fallback, drop_small_clusters, empty_pixels, grow_frame_halos, veto_empty,
)
from .devices import resolve_precision
from .errors import InputError
from .framescale import frame_scale
from .io import monochrome, write_label_map
from .noise import check_finite
from .normalise import normalise
from .unet import UNet
from .updates import StepUpdate

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 16
DEFAULT_BATCH = {"cpu": 1, "cuda": 8}
"""Tiles per forward pass. On a CPU one 256² tile at a time stays in cache and beats batches of 8
(docs/benchmarks.md, "Prediction", from benchmarks/bench_predict.py); GPUs need
batches to fill their cores."""


@dataclass
class Prediction:
    """Class map (uint8) and, on request, per-class probabilities (classes, rows, cols)."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length`` with at least ``overlap`` shared pixels; the last ends flush."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """Weights rising linearly over ``overlap`` pixels from each tile edge, never zero."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


class _TileRunner:
    """Runs tiles through the model in batches. On a CUDA out-of-memory error it halves the
    batch, says so (a warning), and carries on with the smaller batch for the rest of the frame."""

    def __init__(self, model: UNet, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
        # Weights in the tiles' channels_last layout: mixing layouts made CPU prediction about
        # 1.5x slower when it was measured (benchmarks/bench_predict.py). In place, once.
        self.model = model.to(memory_format=torch.channels_last)
        self.batch_size = max(1, batch_size)
        self.device = device
        self.dtype = dtype

    def _forward(self, tiles: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(np.stack(tiles))[:, None]
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model(batch).float().cpu().numpy()

    def logits(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Logits of each tile, in order."""
        out: list[np.ndarray] = []
        while len(out) < len(tiles):
            chunk = tiles[len(out) : len(out) + self.batch_size]
            try:
                out.extend(self._forward(chunk))
            except torch.OutOfMemoryError as error:
                if self.batch_size == 1:
                    raise InputError(
                        f"{self.device}: out of memory even for one tile; use smaller tiles or the CPU"
                    ) from error
                self.batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(
                    f"{self.device} ran out of memory: retrying with batches of {self.batch_size} tile(s)",
                    stacklevel=2,
                )
        return out


@torch.inference_mode()
def predict_normalised(
    model: UNet,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int | None = None,
    precision: str = "auto",
    probabilities: bool = False,
    progress: Callable[[StepUpdate], None] | None = None,
    offsets: np.ndarray | None = None,
    min_cluster_pixels: int = 1,
    empty: np.ndarray | None = None,
) -> Prediction:
    """Predict a frame that is already normalised (2-D float32); ``batch_size`` None: per device;
    ``precision``: one of ``devices.PRECISIONS`` (logits are blended in float32 either way);
    ``offsets``: per-class logit offsets added before the argmax and the softmax (None: plain argmax);
    ``empty``: (rows, cols) bool, pixels that hold no electron: never cluster (probabilities unchanged);
    then cluster components smaller than ``min_cluster_pixels`` get their best other class."""
    model.eval()
    device = next(model.parameters()).device
    dtype = resolve_precision(precision, device)
    runner = _TileRunner(model, batch_size or DEFAULT_BATCH.get(device.type, 1), device, dtype)
    rows, cols = image.shape
    tile_h, tile_w = min(tile, rows), min(tile, cols)
    overlap = min(overlap, tile_h // 2, tile_w // 2)
    window = blend_window(max(tile_h, tile_w), overlap)[:tile_h, :tile_w]
    ys, xs = tile_starts(rows, tile_h, overlap), tile_starts(cols, tile_w, overlap)
    n_classes = model.config.n_classes

    labels = np.empty((rows, cols), np.uint8)
    if empty is not None and empty.shape != image.shape:
        raise InputError(f"the map of empty pixels has shape {empty.shape}, the frame {image.shape}")
    fallback = np.empty((rows, cols), np.uint8) if min_cluster_pixels > 1 or empty is not None else None
    probs = np.empty((n_classes, rows, cols), np.float32) if probabilities else None
    strip = np.zeros((n_classes, tile_h, cols), np.float32)
    weight = np.zeros((tile_h, cols), np.float32)
    strip_top = 0

    def flush(n_rows: int) -> None:
        """Finish the first ``n_rows`` rows of the strip and move the strip down."""
        logits = strip[:, :n_rows] / weight[:n_rows]
        if offsets is not None:
            logits = logits + np.asarray(offsets, np.float32)[:, None, None]
        if fallback is None:
            labels[strip_top : strip_top + n_rows] = decide(logits)
        else:
            labels[strip_top : strip_top + n_rows], fallback[strip_top : strip_top + n_rows] = decide_with_fallback(logits)
        if empty is not None:
            done = slice(strip_top, strip_top + n_rows)
            veto_empty(labels[done], fallback[done], empty[done])
        if probs is not None:
            shifted = np.exp(logits - logits.max(0, keepdims=True))
            probs[:, strip_top : strip_top + n_rows] = shifted / shifted.sum(0, keepdims=True)
        strip[:, : tile_h - n_rows] = strip[:, n_rows:]
        strip[:, tile_h - n_rows :] = 0
        weight[: tile_h - n_rows] = weight[n_rows:]
        weight[tile_h - n_rows :] = 0

    for row_index, y in enumerate(ys):
        if y > strip_top:
            shift = y - strip_top
            flush(shift)
            strip_top = y
        tiles = [image[y : y + tile_h, x : x + tile_w] for x in xs]
        for x, logits in zip(xs, runner.logits(tiles)):
            strip[:, :, x : x + tile_w] += logits * window
            weight[:, x : x + tile_w] += window
        if progress is not None:
            progress(StepUpdate(1, 1, row_index + 1, len(ys)))
    flush(tile_h)
    if fallback is not None:
        drop_small_clusters(labels, fallback, min_cluster_pixels)
    return Prediction(labels, probs)


def predict_frame(
    model: UNet,
    meta: dict,
    image: np.ndarray,
    *,
    source: str = "image",
    calibration: Calibration | None = None,
    **kwargs,
) -> Prediction:
    """Normalise a whole raw frame as the model was trained (``meta``: the model file's
    metadata), then predict it tile by tile with the decision rule the metadata records
    (:class:`~napari_ccdseg.decision.DecisionRule`; pass ``offsets=None, min_cluster_pixels=1,
    zero_electron_veto=False, halo_posterior=None`` for the plain argmax); ``source`` names the frame in errors.
    ``calibration``: the frame's own, if made (it then gives pedestals, noise and gain, as
    :func:`~napari_ccdseg.framescale.frame_scale` says), else the frame's comb is looked for."""
    rule = DecisionRule.from_metadata(meta)
    veto = kwargs.pop("zero_electron_veto", rule.zero_electron_veto)
    halo = kwargs.pop("halo_posterior", rule.halo_posterior)
    params = meta["normalisation_params"]
    found = None  # the frame's scale, measured once for the normalisation, the veto and the halos
    if meta["normalisation"] == "sigma" and (veto or halo or calibration is not None or params.get("dark_as_noise")):
        plane = monochrome(np.asarray(image), source)
        check_finite(plane, source)
        found = frame_scale(plane, calibration=calibration)
    normalised = normalise(image, meta["normalisation"], **params, source=source, known=found)
    kwargs.setdefault("offsets", rule.offsets)
    kwargs.setdefault("min_cluster_pixels", rule.min_cluster_pixels)
    counting = found is not None and found.resolves_electrons
    if veto and counting:
        kwargs.setdefault("empty", empty_pixels(found, plane))
    prediction = predict_normalised(model, normalised, **kwargs)
    if halo and counting:
        grow_frame_halos(prediction.labels, found, plane, halo)
    return prediction


def prediction_paths(out_dir: str | Path, stem: str, probabilities: bool) -> list[Path]:
    """Files written for one frame: ``X_labels.png`` (a label map) and maybe ``X_probabilities.npy``."""
    out = Path(out_dir)
    return [out / f"{stem}_labels.png"] + ([out / f"{stem}_probabilities.npy"] if probabilities else [])


def write_prediction(prediction: Prediction, out_dir: str | Path, stem: str) -> list[Path]:
    """Write a prediction atomically, so an interrupted batch never leaves a half file."""
    paths = prediction_paths(out_dir, stem, prediction.probabilities is not None)
    write_label_map(paths[0], prediction.labels)
    if prediction.probabilities is not None:
        with atomic_path(paths[1]) as tmp, open(tmp, "wb") as handle:
            np.save(handle, prediction.probabilities)
    return paths
