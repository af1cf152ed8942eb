"""The benchmark script's own logic (never its timings): the GPU section's code, run on the CPU,
and the recall-by-pixel-charge table, on frames whose answer is known."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_ccdseg.classes import CLUSTER

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "run_benchmarks.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("run_benchmarks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("native", [True, False])
def test_device_section_times_bfloat16_only_where_native(bench, monkeypatch, native):
    from napari_ccdseg import devices

    monkeypatch.setattr(devices, "native_bfloat16", lambda device: native)
    rows = bench.device_rows(torch.device("cpu"), size=64, batch=2, steps=1)
    expected = ["mixed precision off", "mixed precision on"] if native else ["mixed precision off"]
    assert [row[0] for row in rows] == expected
    assert all(row[1] > 0 and row[2] > 0 for row in rows)


def test_spec_precision_names_what_each_prediction_row_ran_in(bench, monkeypatch):
    from napari_ccdseg import devices

    monkeypatch.setattr(devices, "native_bfloat16", lambda device: True)
    assert bench._spec_precision("naive") == "float32"
    assert bench._spec_precision("256:16") == "bfloat16"
    assert bench._spec_precision("256:16:1:float32") == "float32"
    monkeypatch.setattr(devices, "native_bfloat16", lambda device: False)
    assert bench._spec_precision("256:16:8") == "float32"
    assert bench._spec_precision("256:16:1:bfloat16") == "bfloat16"


def test_recall_by_charge_on_a_frame_with_known_answers(bench):
    noise = 2.0
    labels = np.zeros((1, 6), np.uint8)
    labels[0, :4] = CLUSTER  # four cluster pixels holding 1, 3, 5 and 9 e⁻ (0.5, 1.5, 2.5, 4.5 σ)
    charge = np.array([[1.0, 3.0, 5.0, 9.0, 0.0, 0.0]], np.float32)
    finds_bright = labels.copy()
    finds_bright[0, :2] = 0  # misses the two faintest
    predictions = {method: [finds_bright] for method in bench.METHODS}
    rows = bench._recall_by_charge(noise, [SimpleNamespace(labels=labels)], [charge], predictions)
    assert [row[1] for row in rows] == ["0–1σ", "1–2σ", "2–3σ", "≥ 3σ"]
    assert [row[2] for row in rows] == [0.25] * 4
    assert [row[3] for row in rows] == [0.0, 0.0, 1.0, 1.0]
    # the oracle finds the 3 pixels ≥ 1σ: recall 3/4, precision 1, F1 6/7, on the first row only
    assert rows[0][-1] == pytest.approx(6 / 7) and all(row[-1] is None for row in rows[1:])


def test_rewriting_the_page_keeps_the_sections_other_scripts_wrote(bench, tmp_path):
    page = tmp_path / "benchmarks.md"
    assert bench.kept_sections(page) == ""
    page.write_text("# Benchmarks\n\n## 1. Quality\n\nold table\n\n## 5. Masks\n\nmasks table\n\n## 6. More\n\nx\n")
    kept = bench.kept_sections(page)
    assert kept == "\n## 5. Masks\n\nmasks table\n\n## 6. More\n\nx\n"
    assert "old table" not in kept
