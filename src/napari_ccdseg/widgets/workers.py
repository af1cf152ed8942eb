"""Background work for the widgets: napari ``thread_worker`` generators over the headless core.

Each generator calls the same core function the CLI calls, with a progress callback, and yields
typed updates: the core's :mod:`~napari_ccdseg.updates` (steps, epochs, log lines) plus one
result per frame defined here. The widgets only turn those into layers, plots and text.
A stop request is a :class:`threading.Event` the widget sets; training polls it through
``should_stop`` (ends after the current step, keeping the best checkpoint), the other workers
check it between frames and, for prediction, between rows of tiles.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker

from ..errors import InputError
from ..updates import LogUpdate, StepUpdate

if TYPE_CHECKING:  # imported by the workers when they run: torch is not loaded with the widgets
    from ..autolabel import PhysicalParams
    from ..dataset import LabelledFrame
    from ..train import TrainConfig


class Stopped(Exception):
    """Raised inside a worker when the user asked it to stop between units of work."""


# ---------------------------------------------------------------- typed results


@dataclass(frozen=True)
class SimulatedUpdate:
    """One simulated frame (index of n) and the layer name it is meant for."""

    index: int
    n: int
    name: str
    frame: Any  # simulate.SimulatedFrame


@dataclass(frozen=True)
class LoadedUpdate:
    """The layers of one frame file of a dataset folder (index of n), as napari LayerData tuples."""

    index: int
    n: int
    layers: list


@dataclass(frozen=True)
class LabelledUpdate:
    """Auto-labels of one image layer."""

    name: str
    labels: np.ndarray


@dataclass(frozen=True)
class PredictJob:
    """One image to predict, with its truth (labels and cluster instances) when the user chose one,
    the truth layer's name and whether it is a simulation's exact truth (else a reference), and the
    image's calibration (``Calibration.to_dict()``) when one was made in the viewer."""

    name: str
    image: np.ndarray
    truth: np.ndarray | None = None
    instances: np.ndarray | None = None
    truth_name: str = ""
    exact: bool = False
    calibration: dict | None = None


# ---------------------------------------------------------------- settings: what a run was started with
# Each widget reads its fields into one of these when a run starts; its worker takes nothing else
# (besides the stop flag), so edits made while the run goes cannot reach it.


@dataclass(frozen=True)
class TrainSettings:
    """A training run: the core's config, where to save, and the data (layer pairs, a folder read
    in the worker, domain-randomised frames simulated there)."""

    config: TrainConfig
    model_path: str
    frames: list[LabelledFrame] = field(default_factory=list)  # from the checked layer pairs
    folder: str = ""
    randomised: int = 0
    init_model: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PredictSettings:
    """A prediction run: model file, device, the images (with truths) and whether to keep probabilities."""

    model_path: str
    device: str
    jobs: list[PredictJob]
    probabilities: bool = False


@dataclass(frozen=True)
class AutolabelSettings:
    """An auto-labelling run: preset, thresholds, the class of unmatched pixels, and (layer name, image) jobs."""

    preset: str
    params: PhysicalParams
    unmatched: int
    jobs: list[tuple[str, np.ndarray]]

    def recorded(self) -> dict:
        """The layer metadata that records these settings with each result."""
        return {"label_preset": self.preset, **({"label_params": self.params.to_dict()} if self.preset == "physical" else {})}


@dataclass(frozen=True)
class PredictedUpdate:
    """A predicted frame: class map, optional probabilities and, with a truth, its evaluation."""

    name: str
    labels: np.ndarray
    probabilities: np.ndarray | None
    evaluation: Any  # metrics.Evaluation against the chosen truth, or None
    model_path: str


# ---------------------------------------------------------------- relay

_DONE = object()


def relay(run: Callable[[Callable[[Any], None]], Any]) -> Generator[Any, None, Any]:
    """Run ``run(emit)`` (a blocking core call) and yield everything it emits, as it emits it.

    The core reports through callbacks; napari workers report by yielding. The core call runs in
    a helper thread feeding a queue that this generator drains, so every update reaches the
    viewer while the call is still running. Returns the call's result or re-raises its error.
    """
    updates: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = run(updates.put)
        except BaseException as error:  # noqa: BLE001 - handed to the worker's thread below
            outcome["error"] = error
        finally:
            updates.put(_DONE)

    thread = threading.Thread(target=target, name="ccdseg-core", daemon=True)
    thread.start()
    while (item := updates.get()) is not _DONE:
        yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# ---------------------------------------------------------------- workers


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def simulate_worker(config, names: Sequence[str], seed: int, stop: threading.Event) -> Iterator[SimulatedUpdate]:
    """Simulate one frame per name; frame i uses the same seed as ``ccdseg simulate --seed`` frame i."""
    from ..simulate import frame_seed, simulate_frame

    config.validate()
    for index, name in enumerate(names):
        if stop.is_set():
            return
        frame = simulate_frame(config, seed=frame_seed(seed, index))
        yield SimulatedUpdate(index + 1, len(names), name, frame)


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def load_dataset_worker(folder: str | Path, stop: threading.Event) -> Iterator[LoadedUpdate | LogUpdate]:
    """Every frame of a dataset folder with its ``X_labels`` map, through the plugin's reader."""
    from .. import io
    from .._napari import read_layers

    pairs = io.find_dataset(folder)
    labelled = sum(labels is not None for _, labels in pairs)
    yield LogUpdate(f"{folder}: {len(pairs)} frame file(s), {labelled} with a label map")
    for index, (frame_path, _) in enumerate(pairs):
        if stop.is_set():
            return
        yield LoadedUpdate(index + 1, len(pairs), read_layers(frame_path))


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def autolabel_worker(settings: AutolabelSettings, stop: threading.Event) -> Iterator[LabelledUpdate]:
    """Auto-label each (layer name, image) job with the settings' preset and thresholds."""
    from ..autolabel import label_frame

    for name, image in settings.jobs:
        if stop.is_set():
            return
        labels = label_frame(image, settings.preset, params=settings.params, unmatched=settings.unmatched, name=name)
        yield LabelledUpdate(name, labels)


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def train_worker(settings: TrainSettings, stop: threading.Event):
    """Run :func:`napari_ccdseg.train.train`, yielding its Step/Epoch/Log updates; returns the TrainResult
    (None when stopped before training began).

    The dataset folder is read and the domain-randomised frames (``ccdseg train --randomised``, same
    seed) are simulated here, off the GUI thread, and added to the layer pairs' frames.
    """
    from ..train import train

    def run(emit):
        frames = list(settings.frames)
        if settings.folder:
            from ..dataset import load_labelled

            emit(LogUpdate(f"reading {settings.folder} …"))
            frames += (loaded := load_labelled([settings.folder]))
            emit(LogUpdate(f"{settings.folder}: {len(loaded)} labelled frame(s)"))
        if settings.randomised and not stop.is_set():
            from ..randomise import randomised_frames

            emit(LogUpdate(f"simulating {settings.randomised} domain-randomised frame(s) …"))
            frames += randomised_frames(settings.randomised, settings.config.seed, should_stop=stop.is_set)
        if stop.is_set():
            emit(LogUpdate("stopped while reading or simulating the training frames: nothing trained"))
            return None
        if not frames:
            raise InputError(f"{settings.folder}: no frames to train on")
        Path(settings.model_path).parent.mkdir(parents=True, exist_ok=True)
        return train(
            frames,
            settings.model_path,
            settings.config,
            progress=emit,
            should_stop=stop.is_set,
            init_model=settings.init_model,
            metadata=settings.metadata,
        )

    return (yield from relay(run))


@thread_worker(ignore_errors=True)  # errors go to the widget (a notification), not re-raised
def predict_worker(settings: PredictSettings, stop: threading.Event):
    """Load the model file and predict each job tile by tile; evaluate against its truth if given.

    Yields a LogUpdate naming the device, StepUpdates (epoch = frame number, step = row of tiles)
    and one PredictedUpdate per frame.
    """
    from ..calibrate import Calibration
    from ..dataset import LabelledFrame
    from ..devices import describe_device, resolve_device
    from ..modelfile import load_model
    from ..predict import predict_frame
    from ..scoring import predict_and_evaluate

    jobs, model_path = settings.jobs, settings.model_path
    torch_device = resolve_device(settings.device)
    model, meta = load_model(model_path, torch_device)
    yield LogUpdate(f"predicting on {describe_device(torch_device)} with {Path(model_path).name}")
    for number, job in enumerate(jobs, start=1):

        def run(emit, job=job, number=number):
            def progress(update: StepUpdate) -> None:
                if stop.is_set():
                    raise Stopped()
                emit(StepUpdate(number, len(jobs), update.step, update.steps))

            predicted = []
            calibration = Calibration.from_dict(job.calibration) if job.calibration else None

            def label(frame) -> np.ndarray:
                predicted.append(predict_frame(
                    model, meta, frame.image, source=frame.name, calibration=calibration,
                    probabilities=settings.probabilities, progress=progress,
                ))
                return predicted[-1].labels

            if job.truth is None:
                label(job)
                return predicted[-1], None
            evaluation = predict_and_evaluate([LabelledFrame(job.name, job.image, job.truth, job.instances)], label)
            return predicted[-1], evaluation

        try:
            prediction, evaluation = yield from relay(run)
        except Stopped:
            yield LogUpdate("prediction stopped")
            return
        yield PredictedUpdate(job.name, prediction.labels, prediction.probabilities, evaluation, str(model_path))
        if stop.is_set():
            yield LogUpdate("prediction stopped")
            return
