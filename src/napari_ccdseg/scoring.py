"""Label frames that have a truth and score the labels against it: the one loop behind
``ccdseg evaluate``, the demo, the Predict widget, the default model's card and the benchmarks.

A labeller is any function from a labelled frame to a class map: a model's prediction
(:func:`model_labeller`) or a threshold preset (:func:`preset_labeller`), so a model and its
baseline are scored by the same code on the same frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

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
