"""Labelled frames for training and evaluation: from dataset folders, files or napari layers.

A dataset folder holds frames ``X.<ext>`` with optional label maps ``X_labels.<png|tif|npy>``
and, for simulated data, exact cluster instances ``X_instances.npy`` and the simulator's record
``X_meta.json`` (gain, noise, every cluster's kind and charge). Frames without a label map are
auto-labelled when a preset is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import io
from .autolabel import PhysicalParams, label_frame
from .classes import UNLABELLED
from .errors import InputError
from .noise import check_finite


@dataclass
class LabelledFrame:
    """One frame and its class map (and truth cluster instances when known)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray | None = None
    metadata: dict | None = None
    """The simulator's ``X_meta.json`` beside a simulated frame (its "clusters" give true kinds)."""

    def __post_init__(self) -> None:
        check_pair(self.name, self.image, self.labels)


def check_pair(name: str, image: np.ndarray, labels: np.ndarray) -> None:
    """Refuse a label map that does not fit its frame, or pixels that are not finite."""
    if image.ndim not in (2, 3):
        raise InputError(f"{name}: expected a 2-D frame (or a colour image), got shape {image.shape}")
    if labels.shape != image.shape[:2]:
        raise InputError(
            f"{name}: label map is {labels.shape[0]}x{labels.shape[1]} but the frame is "
            f"{image.shape[0]}x{image.shape[1]}"
        )
    check_finite(image, name)


def _instances_for(frame_path: Path, stem: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Exact cluster instances ``X_instances.npy`` written by the simulator, when present."""
    path = frame_path.with_name(f"{stem}_instances.npy")
    if not path.exists():
        return None
    try:
        instances = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the instance map ({error})") from error
    if instances.shape != shape:
        raise InputError(f"{path}: instance map is {instances.shape}, the frame is {shape}")
    return instances


def _metadata_for(frame_path: Path, stem: str) -> dict | None:
    """The simulator's record ``X_meta.json`` beside a frame, when present."""
    path = frame_path.with_name(f"{stem}_meta.json")
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the simulation record ({error})") from error


def frame_files(inputs: Iterable[str | Path]) -> list[tuple[Path, Path | None]]:
    """(frame, label map or None) for each input: a frame file or a dataset folder."""
    pairs: list[tuple[Path, Path | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pairs.extend(io.find_dataset(path))
        elif path.exists():
            pairs.append((path, io.labels_path_for(path)))
        else:
            raise InputError(f"{path}: no such file or folder")
    return pairs


def load_labelled(
    inputs: Sequence[str | Path],
    preset: str | None = None,
    params: PhysicalParams | None = None,
    *,
    require_labels: bool = True,
) -> list[LabelledFrame]:
    """Read frames with their label maps; auto-label those without one when ``preset`` is set."""
    frames: list[LabelledFrame] = []
    for frame_path, _ in frame_files(inputs):
        in_file = io.read_frames(frame_path)
        for frame in in_file:
            stem = io.output_stem(frame_path, frame.name, len(in_file))
            labels_path = io.labels_path_for(frame_path, stem)
            shape = frame.data.shape[:2]
            instances = metadata = None
            if labels_path is not None:
                labels = io.read_label_map(labels_path, expected_shape=shape, frame=frame_path)
                instances = _instances_for(frame_path, stem, shape)
                metadata = _metadata_for(frame_path, stem) if instances is not None else None
            elif preset is not None:
                labels = label_frame(frame.data, preset, params=params, name=frame.name, header=frame.header)
            elif require_labels:
                raise InputError(
                    f"{frame_path}: no label map {stem}_labels.png beside it; "
                    "give a preset to auto-label frames without labels"
                )
            else:
                labels = np.full(shape, UNLABELLED, np.uint8)
            frames.append(LabelledFrame(frame.name, frame.data, labels, instances, metadata))
    if not frames:
        raise InputError(f"no frames found in {', '.join(map(str, inputs))}")
    return frames
