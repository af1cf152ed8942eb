"""npe2 glue: the file reader, the Labels writer and the sample data named in ``napari.yaml``.

Thin on purpose: all file logic lives in :mod:`napari_ccdseg.io`, so the CLI reads files the same way.
No Qt here; napari turns the LayerData tuples into layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .classes import labels_layer_kwargs
from .noise import display_range

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


def _image_layer(frame: io.Frame) -> LayerData:
    """An image layer keeping the FITS header and source file in its metadata."""
    kwargs: dict = {
        "name": frame.name,
        "metadata": {"header": frame.header, "source": str(frame.source) if frame.source else None},
    }
    if frame.data.ndim == 3:
        kwargs["rgb"] = True
    else:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = display_range(frame.data)
    return frame.data, kwargs, "image"


def _labels_layer(labels, name: str, source: Path) -> LayerData:
    kwargs = labels_layer_kwargs(name)
    kwargs["metadata"] = {**kwargs["metadata"], "source": str(source)}
    return labels, kwargs, "labels"


def read_layers(path: Path) -> list[LayerData]:
    """Image layers for every frame in ``path``, each followed by its label map as a Labels layer
    when one exists (``X_labels``, or ``X_AMP2_labels`` per extension of a multi-extension file).

    A label map opened on its own (``X_labels.png``) becomes a Labels layer ``X labels``.
    """
    stem = io.frame_stem(path)
    if stem.endswith("_labels"):
        return [_labels_layer(io.read_label_map(path), f"{stem.removesuffix('_labels')} labels", path)]
    frames = io.read_frames(path)
    layers = []
    for frame in frames:
        layers.append(_image_layer(frame))
        labels_path = io.labels_path_for(path, io.output_stem(path, frame.name, len(frames)))
        if labels_path is not None:
            labels = io.read_label_map(labels_path, frame.data.shape[:2], frame=path)
            layers.append(_labels_layer(labels, f"{frame.name} labels", labels_path))
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
        "contrast_limits": display_range(image),
        "metadata": {"simulation": simulated.metadata},
    }
    return [(image, image_kwargs, "image"), (simulated.labels, labels_layer_kwargs(f"{name} truth"), "labels")]
