"""Report files: present, readable, atomic, and drawn without touching pyplot's global state."""

from __future__ import annotations

import dataclasses
import json

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from napari_ccdseg.classes import CLASS_NAMES, CLUSTER, GLOWING, HOT_PIXEL
from napari_ccdseg.metrics import evaluate
from napari_ccdseg.report import plot_history, wilson_interval, write_report


def _frame(seed: int, shape=(64, 80)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, truth and an imperfect prediction with clusters of a range of charges."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 1.0, shape)
    truth = np.zeros(shape, dtype=np.uint8)
    truth[:, 0] = GLOWING
    truth[5, 70] = HOT_PIXEL
    for k, (row, col) in enumerate([(10, 10), (30, 40), (50, 20), (20, 60), (45, 65)]):
        truth[row : row + 2, col : col + 3] = CLUSTER
        image[row : row + 2, col : col + 3] += 10.0 ** (k / 2 + 1)
    pred = truth.copy()
    pred[30:32, 40:43] = 0  # one miss
    pred[60, 5] = CLUSTER  # one fake
    return image, truth, pred


HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "val_loss": 1.2 / e + 0.01 * e,
        "val_accuracy": 0.9 + 0.01 * e,
        "val_f1_background": 0.99,
        "val_f1_glowing": 0.9,
        "val_f1_hot pixel": 0.8,
        "val_f1_cluster": 0.3 + 0.1 * e,
        "lr": 1e-3,
        "seconds": 2.0,
    }
    for e in range(1, 6)
]
FIGURES = ("confusion.png", "efficiency.png", "curves.png", "examples.png")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    frames = [_frame(0), _frame(1, shape=(600, 700))]
    evaluation = evaluate((image, truth, None, pred) for image, truth, pred in frames)
    examples = [(f"frame {i}", *frame) for i, frame in enumerate(frames)]
    out = tmp_path_factory.mktemp("report")
    summary = write_report(out, evaluation, history=HISTORY, examples=examples, title="Test report")
    return out, summary, evaluation


def test_write_report_creates_every_file(report_dir):
    out, summary, _ = report_dir
    assert summary == out / "summary.md"
    names = {path.name for path in out.iterdir()}  # no temporary files left behind either
    assert names == {"report.json", "summary.md", *FIGURES}


def test_report_json_is_valid_and_complete(report_dir):
    out, _, evaluation = report_dir
    document = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert document["title"] == "Test report"
    assert document["clusters"]["n_true"] == evaluation.clusters.n_true == 10
    assert document["pixel"]["cluster"]["f1-score"] == evaluation.pixel.cluster.f1
    assert [frame["name"] for frame in document["frames"]] == ["0", "1"]
    assert document["history"][0]["epoch"] == 1


def test_summary_has_the_per_class_table_and_links(report_dir):
    _, summary, evaluation = report_dir
    text = summary.read_text(encoding="utf-8")
    assert "| class | precision | recall | F1 | support [pixels] |" in text
    for name in CLASS_NAMES:
        assert f"| {name} |" in text
    assert f"{100 * evaluation.clusters.efficiency:.2f} %" in text
    assert "per megapixel" in text
    for figure in FIGURES:
        assert f"({figure})" in text


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_non_empty_images(report_dir, name):
    out, _, _ = report_dir
    pixels = imread(out / name)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 300
    assert pixels.std() > 0.01


def test_no_pyplot_figures_and_no_style_leak(tmp_path):
    import matplotlib.pyplot as plt

    font_size = matplotlib.rcParams["font.size"]
    plot_history(HISTORY, tmp_path / "curves.png")
    assert plt.get_fignums() == []
    assert matplotlib.rcParams["font.size"] == font_size


def test_optional_figures_are_skipped(tmp_path):
    truth = np.zeros((16, 16), dtype=np.uint8)
    summary = write_report(tmp_path, evaluate([(None, truth, None, truth)]))
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {"report.json", "summary.md", "confusion.png"}
    text = summary.read_text(encoding="utf-8")
    assert "efficiency.png" not in text and "curves.png" not in text
    assert "n/a" in text  # efficiency of zero clusters is undefined, not 0 %


def test_history_gaps_and_nan_are_written_as_null(tmp_path):
    image, truth, pred = _frame(2)
    history = [
        {"epoch": 1, "train_loss": float("nan")},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6},
    ]
    write_report(tmp_path, evaluate([(image, truth, None, pred)]), history=history)
    document = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert document["history"][0]["train_loss"] is None
    assert imread(tmp_path / "curves.png").size > 0


def test_colour_image_examples(tmp_path):
    image, truth, pred = _frame(3)
    rgba = np.zeros((*truth.shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[truth == CLUSTER] = (255, 255, 0, 255)
    evaluation = evaluate([(rgba, truth, None, pred)])
    assert evaluation.clusters.charge_unit == "pixels"  # a rendering holds no charge
    write_report(tmp_path, evaluation, examples=[("colour", rgba, truth, pred)])
    assert imread(tmp_path / "examples.png").std() > 0.01


def test_baselines_and_frame_names_appear_in_the_summary(tmp_path):
    image, truth, pred = _frame(4)
    evaluation = evaluate([(image, truth, None, pred, "run42_amp1")])
    evaluation = dataclasses.replace(evaluation, baselines={"physical preset": evaluate([(image, truth, None, truth)])})
    text = write_report(tmp_path, evaluation).read_text(encoding="utf-8")
    assert "| this evaluation | " in text
    assert "| physical preset | " in text
    assert "| run42_amp1 | " in text
    document = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert document["baselines"]["physical preset"]["pixel"]["cluster"]["f1-score"] == 1.0


def test_wilson_interval_brackets_the_efficiency():
    low, high = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert np.all(low >= 0) and np.all(high <= 1)
    assert low[0] == 0 and high[0] > 0  # no zero-width bar at 0 %
    assert low[2] < 1 and high[2] == pytest.approx(1)
    assert low[1] < 0.5 < high[1]
