"""The bundled default model: installed with the package, documented by its card, and it finds clusters
on frames from detectors it never saw, right after installing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from napari_ccdseg.bundled import DEFAULT_MODEL, bundled_models, resolve_model
from napari_ccdseg.metrics import evaluate
from napari_ccdseg.modelfile import load_model
from napari_ccdseg.predict import predict_frame
from napari_ccdseg.classes import GLOWING
from napari_ccdseg.simulate import SIM_PRESETS, AmplifierLayout, frame_seed, simulate_ccd, simulate_frame


@pytest.fixture(scope="module")
def default_model():
    return load_model(resolve_model(DEFAULT_MODEL))


def test_the_default_model_ships_with_its_card():
    models = bundled_models()
    assert DEFAULT_MODEL in models
    card = models[DEFAULT_MODEL].card
    assert "scripts/train_default_model.py" in card["trained_by"]
    assert isinstance(card["seed"], int)
    assert models[DEFAULT_MODEL].path.stat().st_size < 10e6  # "a few MB"
    figures = card["figures"]
    assert len([name for name in figures if name.startswith("held-out detector")]) == 3
    assert any(name.startswith("other detector") for name in figures)
    for result in figures.values():
        assert 0 <= result["unet"]["cluster_f1"] <= 1


def test_the_default_model_calls_no_empty_pixel_cluster_on_an_electron_counting_frame(default_model):
    """Its decision rule vetoes cluster pixels holding < 0.5 e-: on a damic-m frame none is called cluster."""
    model, meta = default_model
    config = dataclasses.replace(SIM_PRESETS["damic-m"], rows=160, cols=320)
    frame = simulate_frame(config, seed=4)
    pred = predict_frame(model, meta, frame.image).labels
    electrons = (frame.image - config.pedestal_adu) / config.gain_adu_per_e
    assert (pred == 3).sum() > 100
    assert not (pred[electrons < 0.3] == 3).any()  # 0.3: clear of the drift and the 0.16 e- noise
    plain = predict_frame(model, meta, frame.image, zero_electron_veto=False).labels
    assert (plain[electrons < 0.3] == 3).any()  # the network alone does call some


def test_the_default_model_grows_cluster_halos_under_heavy_dark_current(default_model):
    """Its rule adds the 1–2 e- edge pixels the network leaves out on a damic-m frame (~1 e-/px of dark
    current): only background pixels touching a cluster and holding electrons, and of those far more
    often the true cluster pixels than the others."""
    model, meta = default_model
    assert meta["decision"]["halo_posterior"] == pytest.approx(0.9)
    config = SIM_PRESETS["damic-m"]
    frame = simulate_frame(config, seed=4)
    with_halos = predict_frame(model, meta, frame.image).labels
    without = predict_frame(model, meta, frame.image, halo_posterior=None).labels
    added = (with_halos == 3) & (without != 3)
    assert (with_halos[without == 3] == 3).all() and (with_halos[~added] == without[~added]).all()
    assert added.sum() >= 20
    assert (without[added] == 0).all()
    touching = ndimage.binary_dilation(without == 3, np.ones((3, 3), bool))
    assert touching[added].all()
    electrons = (frame.image - config.pedestal_adu) / config.gain_adu_per_e
    assert (electrons[added] > 0.5).all()
    truth = frame.labels == 3
    candidates = touching & (without == 0) & (electrons > 0.5)
    assert truth[added].mean() > truth[candidates].mean() + 0.2
    assert truth[with_halos == 3].sum() > truth[without == 3].sum()


def test_the_default_model_reads_heavy_dark_current_as_background_not_glow(default_model):
    """One amplifier of a 4-amplifier damic-m readout (384 × 256, ~0.6 e-/px): normalised as trained,
    its dark-current electrons are 6 σ hits and half the amplifier is called glowing; the model
    file counts that dark current as noise (normalisation dark_as_noise)."""
    model, meta = default_model
    readout = dataclasses.replace(SIM_PRESETS["damic-m"], rows=384, cols=256)
    amp = simulate_ccd(readout, frame_seed(31, 0), AmplifierLayout(amplifiers=4))[0]
    assert meta["normalisation_params"]["dark_as_noise"]
    as_trained = {**meta, "normalisation_params": {**meta["normalisation_params"], "dark_as_noise": False}}
    truly = np.mean(amp.labels == GLOWING)
    assert np.mean(predict_frame(model, as_trained, amp.image).labels == GLOWING) > 0.3
    assert np.mean(predict_frame(model, meta, amp.image).labels == GLOWING) < truly + 0.1


@pytest.mark.parametrize("preset", ["damic-m", "single-sample"])
def test_the_default_model_finds_bright_clusters_on_a_real_detector_preset(default_model, preset):
    model, meta = default_model
    config = dataclasses.replace(SIM_PRESETS[preset], rows=160, cols=160, glitch_rate=100.0)
    frame = simulate_frame(config, seed=21)
    pred = predict_frame(model, meta, frame.image, source=preset).labels
    bright = [c for c in frame.metadata["clusters"] if c["electrons"] >= 100]
    assert len(bright) >= 5
    found = [pred[frame.instances == c["id"]].tolist().count(3) > 0 for c in bright]
    assert np.mean(found) >= 0.9
    evaluation = evaluate([(frame.image, frame.labels, frame.instances, pred)])
    assert evaluation.clusters.fakes_per_megapixel < 2000
    glitches = frame.image >= 1e6
    assert glitches.any() and not (pred[glitches] == 3).any()  # a glitch is never a cluster


def test_the_default_model_labels_a_long_curly_track_as_one_class(default_model):
    """Issue 15, item 3: on single-sample frames (~90 ADU noise) a track is not cut into cluster,
    hot-pixel and glowing pieces (benchmarks/bench_tracks.py measures it on many more tracks)."""
    model, meta = default_model
    config = dataclasses.replace(
        SIM_PRESETS["single-sample"], rows=192, cols=192, electron_track_rate=40.0, amp_glow_e=0.0,
        electron_energy_kev=(300.0, 1000.0), cluster_rate=0.0, muon_rate=0.0, serial_trail_rate=0.0,
    )
    marked = []
    for seed in (5, 6):
        frame = simulate_frame(config, seed=seed)
        pred = predict_frame(model, meta, frame.image, source="single-sample").labels
        tracks = [c for c in frame.metadata["clusters"] if c["kind"] == "electron" and c["pixels"] >= 30]
        assert len(tracks) >= 3
        marked += [pred[frame.instances == c["id"]] for c in tracks]
    marked = np.concatenate(marked)
    marked = marked[marked != 0]
    assert len(marked) >= 600 and (marked == 3).mean() >= 0.98
