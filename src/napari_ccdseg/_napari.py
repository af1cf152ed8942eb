"""npe2 glue: the file reader, the Labels writer and the sample data named in ``napari.yaml``.

Thin on purpose: all file logic lives in :mod:`napari_ccdseg.io`, so the CLI reads files the same way.
No Qt here; napari turns the LayerData tuples into layers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .classes import labels_layer_kwargs
from .errors import InputError
from .layout import Placement, display_name, noise_contrast, place_frames

LayerData = tuple[Any, dict, str]


def _paths(path: str | Sequence[str]) -> list[Path] | None:
    """The frame files to read, or None when any of them is not ours (napari then asks another reader)."""
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    if not paths or not all(io.is_frame_file(p) and not p.is_dir() for p in paths):
        return None
    return paths


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """Claim FITS/TIFF/PNG/NPY frames (one path or a list of them); None for anything else."""
    paths = _paths(path)
    if paths is None:
        return None
    return lambda _path: [layer for p in paths for layer in read_layers(p)]


SIMULATION_TRUTH = "simulation"
"""``metadata["ccdseg_reference"]`` of a Labels layer that is a simulation's exact truth."""
AMPLIFIER_ENV = "NAPARI_CCDSEG_AMPLIFIER"
"""Environment variable: open only these amplifiers of a multi-extension file (EXTNAMEs or HDU
indices, comma-separated, e.g. ``AMP2`` or ``1,3``); unset, every amplifier opens, laid out side by side."""


def _frame_key(frame: io.Frame, stem: str, count: int) -> str | None:
    """The amplifier part of a frame's name (EXTNAME, else HDU index); None for a file's only frame."""
    if count == 1:
        return None
    return frame.name.removeprefix(f"{stem}[").removesuffix("]")


def _selected(path: Path, frames: list[io.Frame], stem: str) -> list[io.Frame]:
    """The frames named by ``NAPARI_CCDSEG_AMPLIFIER`` (all when it is unset or empty)."""
    wanted = [w.strip() for w in os.environ.get(AMPLIFIER_ENV, "").split(",") if w.strip()]
    if not wanted or len(frames) == 1:
        return frames
    keys = {w.upper() for w in wanted}
    chosen = [f for f in frames if str(f.hdu) in keys or (f.extname or "").upper() in keys]
    if not chosen:
        available = ", ".join(_frame_key(f, stem, len(frames)) or "" for f in frames)
        raise InputError(f"{path}: {AMPLIFIER_ENV}={','.join(wanted)} names no amplifier here (it has {available})")
    return chosen


def _image_layer(frame: io.Frame, name: str, placement: Placement) -> LayerData:
    """An image layer named for the screen, the full frame name, FITS header and placement in its metadata."""
    kwargs: dict = {
        "name": name,
        "metadata": {
            "header": frame.header,
            "source": str(frame.source) if frame.source else None,
            "ccdseg_frame": frame.name,
            "ccdseg_hdu": frame.hdu,
            "ccdseg_extname": frame.extname,
            "ccdseg_placement": placement.layer_kwargs(),
        },
        **placement.layer_kwargs(),
    }
    if frame.data.ndim == 3:
        kwargs["rgb"] = True
    else:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = noise_contrast(frame.data)
    return frame.data, kwargs, "image"


def _labels_layer(labels, name: str, source: Path, placement: Placement | None = None, extra: dict | None = None) -> LayerData:
    kwargs = labels_layer_kwargs(name)
    kwargs["metadata"] = {**kwargs["metadata"], "source": str(source), **(extra or {})}
    if placement is not None:
        kwargs.update(placement.layer_kwargs())
        kwargs["metadata"]["ccdseg_placement"] = placement.layer_kwargs()
    return labels, kwargs, "labels"


def _simulation_truth(labels_path: Path) -> dict | None:
    """The simulator's record beside a label map (``X_meta.json`` for ``X_labels.png``), else None.

    A label map with it is the simulation's exact truth; any other label map is only a reference.
    """
    meta_path = labels_path.with_name(io.frame_stem(labels_path).removesuffix("_labels") + "_meta.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "clusters" in meta and "config" in meta else None


def _simulation_instances(labels_path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The simulator's cluster instance map beside its truth (``X_instances.npy``), when it fits."""
    path = labels_path.with_name(io.frame_stem(labels_path).removesuffix("_labels") + "_instances.npy")
    try:
        instances = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return instances if instances.shape == shape else None


def read_layers(path: Path) -> list[LayerData]:
    """Image layers for every frame in ``path``, each followed by its label map as a Labels layer
    when one exists (``X_labels``, or ``X_AMP2_labels`` per extension of a multi-extension file).

    Amplifiers of one file are laid out side by side (:func:`napari_ccdseg.layout.place_frames`) and
    named ``AMP2 · <stem>``; their label maps share that placement. A label map with the simulator's
    ``X_meta.json`` beside it is marked exact truth (metadata ``ccdseg_reference = "simulation"``);
    any other is only a reference (``"file"``).
    A label map opened on its own (``X_labels.png``) becomes a Labels layer ``X labels``.
    """
    stem = io.frame_stem(path)
    if stem.endswith("_labels"):
        return [_labels_layer(io.read_label_map(path), f"{stem.removesuffix('_labels')} labels", path)]
    every = io.read_frames(path)
    frames = _selected(path, every, stem)
    placements = place_frames([f.data.shape[:2] for f in frames], [f.header for f in frames])
    layers = []
    for frame, placement in zip(frames, placements):
        name = display_name(stem, _frame_key(frame, stem, len(every)))
        layers.append(_image_layer(frame, name, placement))
        labels_path = io.labels_path_for(path, io.output_stem(path, frame.name, len(every)))
        if labels_path is not None:
            labels = io.read_label_map(labels_path, frame.data.shape[:2], frame=path)
            truth = _simulation_truth(labels_path)
            extra = {"ccdseg_source": name, "ccdseg_reference": "file" if truth is None else SIMULATION_TRUTH}
            if truth is not None:
                extra["simulation"] = truth
                instances = _simulation_instances(labels_path, labels.shape)
                if instances is not None:
                    extra["ccdseg_instances"] = instances
            layers.append(_labels_layer(labels, f"{name} labels", labels_path, placement, extra))
    return layers


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save a Labels layer as a class map (uint8 PNG/TIFF/NPY), refusing values outside the class scheme."""
    return [str(io.write_label_map(path, data))]


def sample_frame() -> list[LayerData]:
    """A simulated 512 x 512 frame and its exact truth labels (seed 0, so every user sees the same one)."""
    from .simulate import SimConfig, simulate_frame  # the simulator only when the sample is asked for

    simulated = simulate_frame(SimConfig(), seed=0)
    name = "simulated frame"
    image = np.asarray(simulated.image, dtype=np.float32)
    image_kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": noise_contrast(image),
        "metadata": {"simulation": simulated.metadata},
    }
    return [(image, image_kwargs, "image"), (simulated.labels, labels_layer_kwargs(f"{name} truth"), "labels")]
