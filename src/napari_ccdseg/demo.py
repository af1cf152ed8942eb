"""The README's main job: simulate -> train -> predict -> report, on embedded defaults.

Small enough to finish in a few minutes on a 2-core CPU, real enough to show what the plugin
does: the U-Net is trained on simulated frames with exact truth and scored on frames it never
saw, next to the `physical` threshold labeler on the same frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .console import TrainProgressPrinter
from .dataset import LabelledFrame, load_labelled
from .io import write_label_map
from .report import write_report
from .report_text import percent
from .scoring import model_labeller, predict_and_evaluate, preset_labeller
from .simulate import SIM_PRESETS, simulate_dataset
from .train import TrainConfig, train

DEMO_TRAIN_FRAMES = 16
DEMO_TEST_FRAMES = 4
DEMO_FRAME_SIZE = 256


def run_demo(out: Path, minutes: float = 3.0, seed: int = 0, device: str = "auto") -> Path:
    """Run the whole pipeline into ``out`` and return the report's summary.md."""
    config = dataclasses.replace(SIM_PRESETS["conventional"], rows=DEMO_FRAME_SIZE, cols=DEMO_FRAME_SIZE)
    simulate_dataset(out / "train", DEMO_TRAIN_FRAMES, config, seed=seed)
    simulate_dataset(out / "test", DEMO_TEST_FRAMES, config, seed=seed + 10_000)

    result = train(
        load_labelled([out / "train"]),
        out / "model.safetensors",
        TrainConfig(epochs=200, max_minutes=minutes, device=device, seed=seed),
        progress=TrainProgressPrinter(),
        metadata={"label_preset": "simulation truth"},
    )
    from .modelfile import load_model

    model, meta = load_model(result.model_path, result.device)
    test = load_labelled([out / "test"])
    examples = []

    def write_and_keep(frame: LabelledFrame, labels: np.ndarray) -> None:
        write_label_map(out / "predictions" / f"{frame.name}_labels.png", labels)
        examples.append((frame.name, frame.image, frame.labels, labels))

    evaluation = predict_and_evaluate(test, model_labeller(model, meta), on_frame=write_and_keep)
    baseline = predict_and_evaluate(test, preset_labeller("physical"))
    evaluation = dataclasses.replace(evaluation, baselines={"physical preset": baseline})
    summary = write_report(
        out / "report", evaluation, history=result.history, examples=examples[:3],
        title="napari-ccdseg demo: U-Net on simulated frames",
    )
    print(
        f"cluster F1 on {len(test)} unseen frames: U-Net {evaluation.pixel.cluster.f1:.3f}, physical thresholds "
        f"{baseline.pixel.cluster.f1:.3f}; cluster detection efficiency {percent(evaluation.clusters.efficiency)}"
    )
    return summary
