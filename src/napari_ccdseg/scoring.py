"""Label frames that have a truth and score the labels against it: the one loop behind
``ccdseg evaluate``, the demo, the Predict widget, the default model's card and the benchmarks.

A labeller is any function from a labelled frame to a class map: a model's prediction
(:func:`model_labeller`) or a threshold preset (:func:`preset_labeller`), so a model and its
baseline are scored by the same code on the same frames. On simulated frames the clusters of the
class map are also typed and tallied against the simulator's kinds (:class:`ParticleTally`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dataset import LabelledFrame
from .metrics import FOUND_COVERAGE, Evaluation, Sample, evaluate

Labeller = Callable[[LabelledFrame], np.ndarray]


def model_labeller(model, meta: dict, **predict_kwargs) -> Labeller:
    """Class maps predicted by a loaded model (``predict_frame``'s keyword arguments pass through)."""
    from .predict import predict_frame

    return lambda frame: predict_frame(model, meta, frame.image, source=frame.name, **predict_kwargs).labels


def preset_labeller(preset: str) -> Labeller:
    """Class maps from an auto-label preset, e.g. ``physical``: the threshold baseline."""
    from .autolabel import label_frame

    return lambda frame: label_frame(frame.image, preset, name=frame.name)


def predict_and_evaluate(
    frames: Iterable[LabelledFrame],
    labeller: Labeller,
    *,
    on_frame: Callable[[LabelledFrame, np.ndarray], None] | None = None,
    coverage: float = FOUND_COVERAGE,
) -> Evaluation:
    """Label each frame, hand (frame, labels) to ``on_frame`` (to write them, keep an example),
    and score every frame against its truth; frame names carry into the per-frame scores.

    Frames are labelled and scored one at a time: with a generator of frames, only one frame's
    maps are held at once.
    """

    def samples() -> Iterable[Sample]:
        for frame in frames:
            labels = labeller(frame)
            if on_frame is not None:
                on_frame(frame, labels)
            yield Sample(frame.image, frame.labels, frame.instances, labels, frame.name)

    return evaluate(samples(), coverage)


@dataclass
class ParticleTally:
    """Particle confusion (true kind × predicted type, ``particles.particle_confusion``) summed over
    the frames with simulator truth: instances and an ``X_meta.json`` listing the clusters."""

    confusion: pd.DataFrame | None = None
    """None until a frame with simulator truth was added."""
    frames: int = 0

    def add(self, frame: LabelledFrame, labels: np.ndarray) -> None:
        """Type the clusters of ``labels`` on ``frame`` and count them; frames without truth are skipped."""
        metadata = frame.metadata or {}
        if frame.instances is None or "clusters" not in metadata or "config" not in metadata:
            return
        from .particles import frame_particle_confusion, sum_confusions

        confusion = frame_particle_confusion(frame.image, labels, frame.instances, metadata)
        self.confusion = confusion if self.confusion is None else sum_confusions([self.confusion, confusion])
        self.frames += 1

    def to_json(self) -> dict:
        """Counts (rows ``true_kinds``, columns ``predicted``), accuracy and per-type recall/precision."""
        from .particles import accuracy, type_scores

        scores = type_scores(self.confusion)
        return {
            "frames": self.frames,
            "true_kinds": list(self.confusion.index),
            "predicted": list(self.confusion.columns),
            "counts": self.confusion.to_numpy().astype(int).tolist(),
            "accuracy": accuracy(self.confusion),
            "per_type": {
                kind: {"clusters": int(row.clusters), "recall": row.recall, "precision": row.precision}
                for kind, row in scores.iterrows()
            },
        }
