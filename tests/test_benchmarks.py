"""The benchmark scripts' own logic (never their timings): the GPU section's code, run on the CPU,
the recall-by-pixel-charge table, and bench_boundary's oracle bound, on frames whose answer is known."""

import importlib.util
import sys
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


@pytest.fixture(scope="module")
def boundary():
    path = SCRIPT.parent / "bench_boundary.py"
    spec = importlib.util.spec_from_file_location("bench_boundary", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_best_recall_stops_where_precision_would_drop_below_the_bound(boundary):
    # 8 of 10 true pixels already called with 0 false; then added in order: 1, 1, 0, 0, 1
    recall, added = boundary._best_recall(np.array([1, 1, 0, 0, 1]), base_tp=8, base_calls=8, n_true=12)
    # precision after each: 9/9, 10/10, 10/11 = 0.909 < 0.95 → stop after two
    assert (recall, added) == (pytest.approx(10 / 12), 2)


def test_the_oracle_posterior_finds_every_event_pixel_without_dark_current_and_ranks_them_first_with_it(boundary):
    from napari_ccdseg.simulate import SimConfig, simulate_frame

    quiet = SimConfig(rows=48, cols=48, units="adu", pedestal_adu=100.0, gain_adu_per_e=5.0, read_noise_e=0.15,
                      dark_current_e=0.0, hot_pixels=(0.0, 0.0), hot_segments=(0.0, 0.0), hot_columns=(0.0, 0.0),
                      amp_glow_e=0.0, glow_band_probability=0.0, cluster_rate=1000.0)
    posterior, truth = boundary.event_posteriors(simulate_frame(quiet, seed=2), samples=50)
    assert truth.sum() > 20
    assert (posterior[truth] > 0.99).mean() > 0.95 and (posterior[~truth] == 0).all()
    dark = simulate_frame(SimConfig(rows=48, cols=48, units="adu", pedestal_adu=100.0, gain_adu_per_e=5.0,
                                    read_noise_e=0.15, dark_current_e=1.0, cluster_rate=1000.0), seed=2)
    posterior, truth = boundary.event_posteriors(dark, samples=50)
    assert posterior[truth].mean() > 0.5 > posterior[~truth].mean()
