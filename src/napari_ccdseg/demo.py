"""The README's main job: simulate -> train -> predict -> report, on embedded defaults.

Small enough to finish in a few minutes on a 2-core CPU, real enough to show what the plugin
does: the U-Net is trained on simulated frames with exact truth and scored on frames it never
saw, next to the `physical` threshold labeler on the same frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .autolabel import label_frame
from .console import TrainProgressPrinter
from .dataset import load_labelled
from .io import write_label_map
from .metrics import evaluate
from .predict import predict_frame
from .report import write_report
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
    samples, baseline, examples = [], [], []
    for frame in load_labelled([out / "test"]):
        pred = predict_frame(model, meta, frame.image, source=frame.name).labels
        write_label_map(out / "predictions" / f"{frame.name}_labels.png", pred)
        samples.append((frame.image, frame.labels, frame.instances, pred))
        baseline.append((frame.image, frame.labels, frame.instances, label_frame(frame.image, "physical")))
        examples.append((frame.name, frame.image, frame.labels, pred))
    evaluation = evaluate(samples)
    for entry, (name, *_) in zip(evaluation["frames"], examples):
        entry["name"] = name
    evaluation["baseline_physical_preset"] = evaluate(baseline)
    summary = write_report(
        out / "report", evaluation, history=result.history, examples=examples[:3],
        title="napari-ccdseg demo: U-Net on simulated frames",
    )
    unet_f1 = evaluation["pixel"]["cluster"]["f1-score"]
    base_f1 = evaluation["baseline_physical_preset"]["pixel"]["cluster"]["f1-score"]
    print(
        f"cluster F1 on {len(samples)} unseen frames: U-Net {unet_f1:.3f}, physical thresholds {base_f1:.3f}; "
        f"cluster detection efficiency {evaluation['clusters']['efficiency']:.3f}"
    )
    return summary
